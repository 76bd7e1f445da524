"""The settlement service: reconcile with the chain at start, then settle every few blocks."""

from __future__ import annotations

import asyncio
import contextlib

from node.domain.service import SettlementReport
from node.errors import ChainError, SettlementError
from node.logging import get_logger
from node.settlement.client import ClientSettlement
from node.settlement.provider import ProviderSettlement

log = get_logger(__name__)


class SettlementService:
    """Runs the client's and (on a provider) the provider's settlement on one schedule.

    The chain offers nothing to wait on over HTTP, so this wakes every `interval_s`, or at once
    when `poke()` is called (after a batch of jobs, or by the API's `settle`).
    """

    def __init__(
        self, client: ClientSettlement, provider: ProviderSettlement | None, *, interval_s: float
    ) -> None:
        self.client = client
        self.provider = provider
        self.interval_s = interval_s
        self.ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def poke(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        if self.provider is not None:
            await self.provider.reconcile()
        self.ready.set()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()
            try:
                await self.tick()
            except ChainError as exc:
                # The RPC may be away for a while; the next round tries again.
                log.warning("settlement_round_failed", error=str(exc))

    async def tick(self) -> None:
        async with self._lock:
            await self.client.tick()
            if self.provider is not None:
                await self.provider.tick()

    async def settle(self) -> SettlementReport:
        if self.provider is None:
            raise SettlementError("this node is not a provider; it has nothing to settle")
        async with self._lock:
            await self.client.tick()
            return await self.provider.settle()
