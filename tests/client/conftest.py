"""Fixtures for the client's job side: a client node over fakes, not yet running."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from client_support import ClientSide, new_client


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[ClientSide]:
    side = new_client(tmp_path)
    side.fund()
    try:
        yield side
    finally:
        await side.stop()
        side.db.close()
