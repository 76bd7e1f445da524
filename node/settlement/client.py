"""A client's settlement of escrow-paid jobs: verified jobs settle once the chain finalizes them;
escrow of attempts that failed is taken back at once if nobody claimed it, else refunded after its
deadline, and withdrawn."""

from __future__ import annotations

from node.chain.job_logs import ChainOutcome, chain_outcome
from node.chain.keys import NodeKey
from node.chain.market import JobMarket
from node.chain.market import JobStatus as ChainJobStatus
from node.domain.state import AttemptOutcome, ClientState, JobEvent, PaymentPath, Refunded, Role, Settled
from node.errors import ChainError
from node.jobstore.store import JobStore
from node.logging import get_logger
from node.settlement.terms import escrow_terms, receipt_job_id
from node.storage import JobRecord
from node.types import Address, Hash32

log = get_logger(__name__)

_LOST = frozenset(
    {
        AttemptOutcome.REJECTED,
        AttemptOutcome.TIMED_OUT,
        AttemptOutcome.DIED,
        AttemptOutcome.BAD_RESULT,
        AttemptOutcome.ABANDONED,
    }
)


class ClientSettlement:
    def __init__(self, store: JobStore, market: JobMarket, key: NodeKey) -> None:
        self.store = store
        self.db = store.db
        self.market = market
        self.key = key
        # On-chain jobs known to be over (refunded or finalized): never asked about again.
        self._closed: set[Hash32] = set()

    @property
    def me(self) -> Address:
        return self.key.address

    async def tick(self) -> int:
        """Settle what the chain allows now; returns the wei refunded and withdrawn."""
        # Voucher jobs settle with their result; only escrowed ones wait on the chain.
        escrowed = await self.db.run(
            self.db.jobs.list, role=Role.CLIENT, payment=PaymentPath.ESCROW, limit=2**31 - 1
        )
        refunded = 0
        now = await self.market.client.chain_time() if escrowed else 0.0
        for record in escrowed:
            if record.state is ClientState.VERIFIED:
                await self._settle_verified(record, now)
            refunded += await self._refund_lost_attempts(record, now)
        if refunded or await self.market.withdrawable(self.me):
            try:
                await self.market.withdraw_earnings(sender=self.key.account)
            except ChainError as exc:
                log.warning("refund_withdrawal_failed", error=str(exc))
        return refunded

    async def _settle_verified(self, record: JobRecord, now: float) -> None:
        onchain_id = receipt_job_id(self.me, record, len(record.status.attempts) - 1)
        outcome = await chain_outcome(self.market, onchain_id)
        if outcome is ChainOutcome.FINALIZED:
            await self._apply(record, Settled())
        elif outcome is ChainOutcome.REFUNDED:
            await self._apply(record, Refunded())
        else:
            await self._refund_if_abandoned(record, len(record.status.attempts) - 1, now)

    async def _refund_if_abandoned(self, record: JobRecord, attempt: int, now: float) -> None:
        # The provider delivered to us but never put the result on-chain by the deadline.
        terms = escrow_terms(self.me, record, attempt)
        onchain = await self.market.job(terms.job_id)
        live = onchain.status in (ChainJobStatus.REQUESTED, ChainJobStatus.CLAIMED)
        if live and onchain.time < now:
            try:
                await self.market.refund(terms, sender=self.key.account)
            except ChainError as exc:
                # One job's refund failing must not hold back the rest of the round.
                log.warning("refund_failed", job_id=terms.job_id.hex(), error=str(exc))
                return
            await self._apply(record, Refunded())

    async def _refund_lost_attempts(self, record: JobRecord, now: float) -> int:
        total = 0
        for number, attempt in enumerate(record.status.attempts):
            # Unpaid attempts count too: a cancel can land between `requestJob` and recording it.
            if attempt.outcome not in _LOST:
                continue
            terms = escrow_terms(self.me, record, number)
            if terms.job_id in self._closed:
                continue
            onchain = await self.market.job(terms.job_id)
            if onchain.status is ChainJobStatus.NONE:
                self._closed.add(terms.job_id)
                continue
            due = onchain.time < now or onchain.status is ChainJobStatus.DISPUTED  # proven: at once
            # Nobody claimed it: taken back at once (a lost attempt's escrow must pay nobody).
            unclaimed = onchain.status is ChainJobStatus.REQUESTED and not due
            refundable = (ChainJobStatus.REQUESTED, ChainJobStatus.CLAIMED, ChainJobStatus.DISPUTED)
            if unclaimed or (onchain.status in refundable and due):
                try:
                    if unclaimed:
                        done = await self.market.cancel_job(terms, sender=self.key.account)
                    else:
                        done = await self.market.refund(terms, sender=self.key.account)
                except ChainError as exc:
                    log.warning("refund_failed", job_id=terms.job_id.hex(), error=str(exc))
                    continue
                self._closed.add(terms.job_id)
                total += done.price
        return total

    async def _apply(self, record: JobRecord, event: JobEvent) -> None:
        await self.store.apply(record.job_id, event)
