"""Factories for real libp2p hosts on 127.0.0.1."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

import pytest

from node.config import P2PSettings
from node.p2p.host import P2PHost


def fast_settings(**overrides: object) -> P2PSettings:
    """Loopback settings with short timeouts so failures show within seconds."""
    values: dict[str, object] = {"read_timeout_s": 2.0, "job_timeout_s": 10.0, **overrides}
    return P2PSettings.model_validate(values)


HostsFactory = Callable[..., AbstractAsyncContextManager[list[P2PHost]]]


@asynccontextmanager
async def _running_hosts(count: int, settings: P2PSettings | None = None) -> AsyncIterator[list[P2PHost]]:
    async with AsyncExitStack() as stack:
        hosts = [
            await stack.enter_async_context(P2PHost.start(os.urandom(32), settings or fast_settings()))
            for _ in range(count)
        ]
        yield hosts


@pytest.fixture
def running_hosts() -> HostsFactory:
    """`async with running_hosts(n) as hosts:` starts n hosts and stops them all afterwards."""
    return _running_hosts
