"""Discovery fixtures: a real embedded chain with deployed contracts, and factories of real nodes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from discovery_support import Chain, NodesFactory, deployed_chain, running_nodes


@pytest_asyncio.fixture
async def chain() -> AsyncIterator[Chain]:
    async with deployed_chain() as deployed:
        yield deployed


@pytest.fixture
def nodes() -> NodesFactory:
    """`async with nodes(keys, registry, settings, providers=n) as running:` starts a connected overlay."""
    return running_nodes
