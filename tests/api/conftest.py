"""Fixtures of the API and CLI tests: one marketplace of real nodes per session (see api_devnet)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_devnet import ApiDevnet, Background


@pytest.fixture(scope="session")
def api_devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiDevnet]:
    background = Background(tmp_path_factory.mktemp("api-devnet"))
    try:
        yield background.start()
    finally:
        background.stop()
