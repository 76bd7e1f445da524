"""Fixtures for settlement: both services over one fake chain and one database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from settlement_support import Settlements, new_settlements


@pytest.fixture
def settle(tmp_path: Path) -> Iterator[Settlements]:
    side = new_settlements(tmp_path)
    try:
        yield side
    finally:
        side.db.close()
