"""Fixtures for the provider's job side: a provider over fakes, a client key, a stranger's key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from provider_support import ProviderSide, new_provider

from node.chain.keys import NodeKey


@pytest.fixture
async def provider(tmp_path: Path) -> AsyncIterator[ProviderSide]:
    side = new_provider(tmp_path)
    try:
        yield side
    finally:
        await side.settled()
        side.db.close()


@pytest.fixture
def client() -> NodeKey:
    return NodeKey.generate()


@pytest.fixture
def stranger() -> NodeKey:
    return NodeKey.generate()
