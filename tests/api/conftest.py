"""Fixtures of the API and CLI tests: a marketplace of real nodes per test module (see api_devnet);
module scope, so its nodes stop before the rest of the suite runs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_devnet import ApiDevnet, child_marketplace


@pytest.fixture(scope="module")
def api_devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiDevnet]:
    marketplace = child_marketplace(tmp_path_factory.mktemp("api-devnet"))
    try:
        yield marketplace.start()
    finally:
        marketplace.stop()
