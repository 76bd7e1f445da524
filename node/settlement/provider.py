"""A provider's settlement: redeem vouchers in batches, finalize delivered on-chain jobs after the
challenge window, withdraw earnings; on start-up, take the chain's word over the database."""

from __future__ import annotations

from dataclasses import dataclass, field

from node.chain.job_logs import ChainOutcome, chain_outcome, find_terms
from node.chain.keys import NodeKey
from node.chain.market import JobMarket
from node.chain.market import JobStatus as ChainJobStatus
from node.domain.service import SettlementReport
from node.domain.state import Failed, JobEvent, PaymentPath, PaymentReceived, ProviderState, Role
from node.errors import ChainError, SettlementError
from node.jobstore.blobs import JobBlobs
from node.jobstore.store import JobStore
from node.logging import get_logger
from node.settlement.policy import RedemptionPolicy, due_vouchers
from node.storage import JobRecord
from node.types import Address

log = get_logger(__name__)

_INTERRUPTED = frozenset({ProviderState.ACCEPTED, ProviderState.RUNNING, ProviderState.SIGNED})


@dataclass
class _Tally:
    vouchers: int = 0
    redeemed_wei: int = 0
    finalized: int = 0
    finalized_wei: int = 0
    withdrawn_wei: int = 0
    transactions: list[str] = field(default_factory=list)

    def report(self) -> SettlementReport:
        return SettlementReport(
            vouchers_redeemed=self.vouchers,
            redeemed_wei=self.redeemed_wei,
            jobs_finalized=self.finalized,
            finalized_wei=self.finalized_wei,
            withdrawn_wei=self.withdrawn_wei,
            transactions=tuple(self.transactions),
        )


class ProviderSettlement:
    def __init__(
        self,
        store: JobStore,
        market: JobMarket,
        key: NodeKey,
        policy: RedemptionPolicy,
        *,
        blobs: JobBlobs | None = None,
    ) -> None:
        self.store = store
        self.db = store.db
        self.market = market
        self.key = key
        self.policy = policy
        # Outputs of escrowed jobs, kept by `ProviderJobs`: a result put on chain again may need it.
        self.blobs = blobs

    @property
    def me(self) -> Address:
        return self.key.address

    async def _apply(self, record: JobRecord, event: JobEvent) -> None:
        await self.store.apply(record.job_id, event)

    async def _provider_jobs(
        self, *states: ProviderState, payment: PaymentPath | None = None
    ) -> tuple[JobRecord, ...]:
        return await self.db.run(
            self.db.jobs.list, role=Role.PROVIDER, states=states, payment=payment, limit=2**31 - 1
        )

    # start-up ---------------------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Voucher jobs cut off by a restart failed (escrowed ones are resumed by
        `ProviderJobs.resume`); redemptions the chain made are recorded here."""
        for record in await self._provider_jobs(*_INTERRUPTED, payment=PaymentPath.VOUCHER):
            await self._apply(record, Failed("the provider stopped before the result was delivered"))
        for stored in await self.db.run(self.db.vouchers.unredeemed, self.me):
            paid = await self.market.paid(stored.voucher.client, self.me)
            if paid > stored.redeemed_wei:
                await self.db.run(
                    self.db.vouchers.mark_redeemed,
                    stored.voucher.client,
                    self.me,
                    min(paid, stored.voucher.cumulative_amount),
                )
        await self._mark_paid_clients()

    # periodic work ----------------------------------------------------------------------------

    async def tick(self, *, force: bool = False) -> SettlementReport:
        tally = _Tally()
        await self._redeem(tally, force=force)
        await self._finalize(tally)
        if force:
            await self._withdraw(tally)
        return tally.report()

    async def _redeem(self, tally: _Tally, *, force: bool) -> None:
        unredeemed = await self.db.run(self.db.vouchers.unredeemed, self.me)
        withdrawals = {}
        for stored in unredeemed:
            # A release of the client's reserve for this provider is what could leave it unpaid.
            held = await self.market.reserve_of(stored.voucher.client, self.me)
            withdrawals[stored.voucher.client] = held.releasable_at
        due = due_vouchers(unredeemed, withdrawals=withdrawals, policy=self.policy, force=force)
        if not due:
            return
        redemption = await self.market.redeem_vouchers(
            [(v.voucher, v.signature) for v in due], sender=self.key.account
        )
        tally.transactions.append(redemption.tx.tx_hash)
        for redeemed in redemption.redeemed:
            await self.db.run(self.db.vouchers.mark_redeemed, redeemed.client, self.me, redeemed.total_paid)
            tally.vouchers += 1
            tally.redeemed_wei += redeemed.amount
        for skipped in redemption.skipped:
            log.warning("voucher_skipped", client=skipped.client, reason=skipped.reason.name)
        await self._mark_paid_clients()
        log.info("vouchers_redeemed", count=tally.vouchers, wei=tally.redeemed_wei)

    async def _mark_paid_clients(self) -> None:
        """Delivered voucher jobs of clients whose latest voucher is fully redeemed are paid."""
        for record in await self._provider_jobs(ProviderState.DELIVERED, payment=PaymentPath.VOUCHER):
            if record.client is None:
                continue
            stored = await self.db.run(self.db.vouchers.get, record.client, self.me)
            if stored is not None and stored.unredeemed_wei == 0:
                await self._apply(record, PaymentReceived())

    async def _finalize(self, tally: _Tally) -> None:
        now = await self.market.client.chain_time()
        # Delivered voucher jobs wait for redemption, not the chain: a busy provider holds many.
        for record in await self._provider_jobs(ProviderState.DELIVERED, payment=PaymentPath.ESCROW):
            onchain = await self.market.job(record.job_id)
            if onchain.status is ChainJobStatus.SUBMITTED and onchain.time <= now:
                try:
                    done = await self.market.finalize(record.job_id, sender=self.key.account)
                except ChainError as exc:
                    log.warning("finalize_failed", job_id=record.job_id.hex(), error=str(exc))
                    continue
                tally.transactions.append(done.tx.tx_hash)
                tally.finalized += 1
                tally.finalized_wei += done.price
                await self._apply(record, PaymentReceived())
            elif onchain.status is ChainJobStatus.NONE:
                await self._settled_elsewhere(record)
            elif onchain.status is ChainJobStatus.CLAIMED and onchain.time > now:
                held = onchain.provider is not None and onchain.provider.lower() == self.me.lower()
                if held:
                    await self._submit_again(record, onchain.output_on_chain)

    async def _submit_again(self, record: JobRecord, output_on_chain: bool) -> None:
        """A result recorded as delivered that the chain does not hold (its transaction was
        dropped: a reorg, or a node that lost it) goes on chain again before the deadline; left
        alone, the claim would run out and cost stake."""
        job_id = record.job_id.hex()
        terms = await find_terms(self.market, record.job_id)
        stored = await self.db.run(self.db.receipts.get, record.job_id, self.me)
        if terms is None or stored is None:
            log.error("result_not_resubmitted", job_id=job_id, reason="its terms or receipt are missing")
            return
        output = b""
        if output_on_chain or terms.has_callback:
            kept = None if self.blobs is None else await self.blobs.get(stored.receipt.output_hash)
            if kept is None:
                log.error("result_not_resubmitted", job_id=job_id, reason="its output was not kept")
                return
            output = kept
        try:
            await self.market.submit_result(
                terms, stored.receipt, stored.signature, output=output, sender=self.key.account
            )
        except ChainError as exc:
            log.warning("result_resubmit_failed", job_id=job_id, error=str(exc))
            return
        log.warning("result_resubmitted", job_id=job_id)

    async def _settled_elsewhere(self, record: JobRecord) -> None:
        # Someone else finalized it (anyone may), or it was refunded: the chain says which.
        outcome = await chain_outcome(self.market, record.job_id)
        if outcome is ChainOutcome.FINALIZED:
            await self._apply(record, PaymentReceived())
        elif outcome is ChainOutcome.REFUNDED:
            await self._apply(record, Failed("the on-chain job was refunded to its requester"))

    async def _withdraw(self, tally: _Tally) -> None:
        if await self.market.withdrawable(self.me) == 0:
            return
        withdrawn = await self.market.withdraw_earnings(sender=self.key.account)
        tally.withdrawn_wei += withdrawn.amount
        tally.transactions.append(withdrawn.tx.tx_hash)

    async def settle(self) -> SettlementReport:
        """Everything now: redeem every voucher, finalize what the window allows, withdraw."""
        try:
            return await self.tick(force=True)
        except ChainError as exc:
            raise SettlementError(
                f"settling failed on-chain: {exc}", hint="retry once the chain answers"
            ) from exc
