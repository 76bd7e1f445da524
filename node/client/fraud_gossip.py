"""Fraud records on the overlay (`gpunode/fraud/1`): this client's own go out, others' come in.

A record is relayed and acted on only once it proves itself (`check_fraud_record`): its receipts'
signatures, one input, three providers none of which is the reporter, and a disagreement beyond
the model's tolerance. Acting on it means re-checking the accused more often
(`node.scheduler.spot.fraud_reported`), never excluding it: only this client's own checks do that.
Each accused result counts once, however many records (or reporters) name it, and the witnesses
must be active providers in the registry (keys made for the occasion hold no stake).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

from node.chain.eip712 import Eip712Domain
from node.client.fraud_record import (
    FRAUD_TOPIC,
    FraudRecord,
    FraudRejected,
    FraudRejectReason,
    check_fraud_record,
)
from node.client.model_specs import ModelSpecs
from node.client.reputation import ReputationBook
from node.discovery.registry_view import RegistryView
from node.errors import ChainError, P2PError
from node.executor.manifest import Tolerance, tolerance_for
from node.logging import get_logger
from node.p2p.host import P2PHost
from node.p2p.identity import peer_id_to_address
from node.p2p.subscription import Subscription
from node.scheduler.spot import fraud_reported
from node.types import Address, Hash32, sha256

log = get_logger(__name__)

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
        registry: RegistryView | None = None,
    ) -> None:
        self.host = host
        # Witnesses must hold stake: a record signed by keys made for it proves nothing.
        self.registry = registry
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

    async def admit(self, sender: Address, data: bytes) -> FraudRecord | FraudRejected:
        """Everything this node checks of a record from `sender` before it relays or acts on it."""
        result = self.check(data, sender)
        if isinstance(result, FraudRejected):
            return result
        unstaked = await self._unstaked(result)
        if unstaked is not None:
            return FraudRejected(FraudRejectReason.NOT_REGISTERED, f"{unstaked} is not an active provider")
        return result

    async def _gossip_check(self, source: str, data: bytes) -> bool:
        try:
            sender = peer_id_to_address(source)
        except P2PError:
            return self._rejected("peer_mismatch", "the sender's peer id embeds no Ethereum key")
        result = await self.admit(sender, data)
        if isinstance(result, FraudRejected):
            return self._rejected(result.reason.value, result.detail)
        if result.key in self._counted:
            return False  # known already: nothing new to relay
        self._valid[sha256(data)] = result
        while len(self._valid) > _SEEN:
            self._valid.popitem(last=False)
        return True

    async def _unstaked(self, record: FraudRecord) -> Address | None:
        if self.registry is None:
            return None
        for witness in record.witnesses:
            provider = witness.receipt.provider
            try:
                if not await self.registry.is_active(provider):
                    return provider
            except ChainError:
                return provider  # unknown counts as unstaked: the record waits for a relay later
        return None

    def _rejected(self, reason: str, detail: str = "") -> bool:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        log.info("fraud_record_rejected", reason=reason, detail=detail)
        return False

    def _tolerance_of(self, model_id: Hash32) -> Tolerance | None:
        manifest = self.specs.known(model_id)
        return None if manifest is None else tolerance_for(manifest)
