"""Fixtures of the HTTP tests: one marketplace of real nodes for the whole directory (see
http_devnet), stopped before the rest of the suite runs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from http_devnet import HttpDevnet, child_marketplace


@pytest.fixture(scope="package")
def http_devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpDevnet]:
    marketplace = child_marketplace(tmp_path_factory.mktemp("http-devnet"))
    try:
        yield marketplace.start()
    finally:
        marketplace.stop()
