"""Fraud records on the overlay (`gpunode/fraud/1`): this client's own go out, others' come in.

A record is relayed and acted on only once it proves itself (`check_fraud_record`): its receipts'
signatures, one input, three providers none of which is the reporter, and a disagreement beyond
the model's tolerance. Acting on it means re-checking the accused more often
(`node.scheduler.spot.fraud_reported`), never excluding it: only this client's own checks do that.
Each accused result counts once, however many records (or reporters) name it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable

from node.chain.eip712 import Eip712Domain
from node.client.fraud_record import (
    FRAUD_TOPIC,
    FraudRecord,
    FraudRejected,
    check_fraud_record,
    open_fraud_record,
)
from node.client.model_specs import ModelSpecs
from node.client.reputation import ReputationBook
from node.errors import P2PError
from node.executor.manifest import Tolerance, tolerance_for
from node.logging import get_logger
from node.p2p.host import P2PHost
from node.p2p.identity import peer_id_to_address
from node.p2p.subscription import Subscription
from node.scheduler.spot import fraud_reported
from node.types import Address, Hash32, sha256

log = get_logger(__name__)

# Gossip validation gives up after 2 s; learning a model's tolerance must fit well within it.
MANIFEST_WAIT_S = 1.5
# Accused results remembered, so a record repeated (or re-signed by another reporter) counts once.
_SEEN = 16_384


class FraudRecords:
    """A component: open with `FraudRecords.subscribed(...)`, run `run()`; `publish()` sends ours."""

    def __init__(
        self,
        host: P2PHost,
        book: ReputationBook,
        specs: ModelSpecs,
        domain: Eip712Domain,
        me: Address,
        *,
        serving: Callable[[Hash32], list[tuple[Address, str]]] = lambda _: [],
    ) -> None:
        self.host = host
        # A peer serving a model, to learn its tolerance from (a manifest is the same from anyone:
        # its id is its hash).
        self.serving = serving
        self.book = book
        self.specs = specs
        self.domain = domain
        self.me = me
        self.ready = asyncio.Event()
        self.rejected: dict[str, int] = {}
        self._subscription: Subscription | None = None
        self._valid: OrderedDict[Hash32, FraudRecord] = OrderedDict()
        self._counted: OrderedDict[tuple[Address, Hash32], None] = OrderedDict()
        self._taken = asyncio.Condition()

    async def publish(self, record: FraudRecord) -> None:
        await self.host.publish(FRAUD_TOPIC, record.signed)
        log.info("fraud_record_published", accused=record.accused.receipt.provider)

    async def run(self) -> None:
        subscription = self._subscription or await self.host.subscribe(
            FRAUD_TOPIC, self._gossip_check, queue_size=1024
        )
        self._subscription = subscription
        self.ready.set()
        async for message in subscription:
            record = self._valid.pop(sha256(message.data), None)
            if record is not None:
                await self.take(record)

    def check(self, data: bytes, source: Address | None = None) -> FraudRecord | FraudRejected:
        return check_fraud_record(
            data,
            domain=self.domain,
            now_ms=int(time.time() * 1000),
            tolerance_of=self._tolerance_of,
            source=source,
        )

    async def take(self, record: FraudRecord) -> bool:
        """Act on a valid record: the accused is re-checked more. False when it was counted before
        (or names this node's own finding)."""
        if record.reporter == self.me or record.key in self._counted:
            return False
        self._counted[record.key] = None
        while len(self._counted) > _SEEN:
            self._counted.popitem(last=False)
        accused = record.accused.receipt.provider
        await self.book.update(accused, fraud_reported, durable=False)
        log.warning("fraud_record_accepted", accused=accused, reporter=record.reporter)
        async with self._taken:
            self._taken.notify_all()
        return True

    async def wait_for(self, accused: Address, *, timeout_s: float) -> None:
        """Until a valid record against `accused` was acted on; `TimeoutError` after `timeout_s`."""
        async with asyncio.timeout(timeout_s), self._taken:
            await self._taken.wait_for(lambda: self.book.get(accused).fraud_records_seen > 0)

    async def _gossip_check(self, source: str, data: bytes) -> bool:
        try:
            sender = peer_id_to_address(source)
        except P2PError:
            return self._rejected("peer_mismatch", "the sender's peer id embeds no Ethereum key")
        opened = open_fraud_record(data)
        if isinstance(opened, FraudRecord):
            await self._learn_tolerance(opened)
        result = self.check(data, sender)
        if isinstance(result, FraudRejected):
            return self._rejected(result.reason.value, result.detail)
        if result.key in self._counted:
            return False  # known already: nothing new to relay
        self._valid[sha256(data)] = result
        while len(self._valid) > _SEEN:
            self._valid.popitem(last=False)
        return True

    def _rejected(self, reason: str, detail: str = "") -> bool:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        log.info("fraud_record_rejected", reason=reason, detail=detail)
        return False

    async def _learn_tolerance(self, record: FraudRecord) -> None:
        """Fetch the model's manifest, if not known, from a provider other than the accused,
        within what gossip validation allows."""
        if self.specs.known(record.model_id) is not None:
            return
        accused = record.accused.receipt.provider
        peers = [peer for address, peer in self.serving(record.model_id) if address != accused]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(MANIFEST_WAIT_S):
                for peer in peers[:3]:
                    if await self.specs.manifest(record.model_id, peer) is not None:
                        return

    def _tolerance_of(self, model_id: Hash32) -> Tolerance | None:
        manifest = self.specs.known(model_id)
        return None if manifest is None else tolerance_for(manifest)
