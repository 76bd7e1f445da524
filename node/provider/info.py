"""`ProviderInfo`: what the provider side reports about itself (status, earnings, settlement)."""

from __future__ import annotations

from node.chain.registry import ProviderRegistry
from node.domain.service import (
    EarningsView,
    ProviderStatusView,
    SettlementReport,
)
from node.domain.state import PaymentPath, ProviderState, Role
from node.provider.jobs import ProviderJobs
from node.provider.jury import JuryDuty
from node.settlement.service import SettlementService
from node.storage import Database


class ProviderInfo:
    def __init__(
        self,
        jobs: ProviderJobs,
        registry: ProviderRegistry,
        settlement: SettlementService,
        *,
        price_per_job_wei: int,
        jury: JuryDuty | None = None,
    ) -> None:
        self.jury = jury
        self.jobs = jobs
        self.registry = registry
        self.settlement = settlement
        self.price_per_job_wei = price_per_job_wei

    @property
    def db(self) -> Database:
        return self.jobs.runner.db

    async def status(self) -> ProviderStatusView:
        me = self.jobs.me
        record = await self.registry.provider(me)
        runner = self.jobs.runner
        warm = tuple(sorted(runner.pool.lanes()))
        holds = self.jobs.holds
        return ProviderStatusView(
            address=me,
            enabled=True,
            registered=record.registered,
            active=await self.registry.is_active(me),
            stake_wei=record.stake,
            price_per_job_wei=self.price_per_job_wei,
            models=tuple(sorted(m.hex() for m in self.jobs.policy.price_floor_wei)),
            warm_models=warm,
            running=runner.load.running,
            queued=runner.load.queued,
            jobs_served=runner.served,
            open_disputes=await self.registry.open_disputes(me),
            jury_duties_served=0 if self.jury is None else len(self.jury.served),
            holds_waiting=0 if holds is None else holds.book.waiting,
            holds_granted=0 if holds is None else holds.book.granted,
        )

    async def earnings(self) -> EarningsView:
        me = self.jobs.me
        jobs = await self.db.run(self.db.jobs.list, role=Role.PROVIDER, limit=2**31 - 1)
        clients = {j.client for j in jobs if j.client and j.status.payment is PaymentPath.VOUCHER}
        unredeemed = redeemed = 0
        for client in clients:
            stored = await self.db.run(self.db.vouchers.get, client, me)
            if stored is not None:
                unredeemed += stored.unredeemed_wei
                redeemed += stored.redeemed_wei
        pending = sum(
            j.price_wei
            for j in jobs
            if j.status.payment is PaymentPath.ESCROW and j.state is ProviderState.DELIVERED
        )
        return EarningsView(
            unredeemed_voucher_wei=unredeemed,
            redeemed_voucher_wei=redeemed,
            pending_onchain_wei=pending,
            withdrawable_wei=await self.jobs.market.withdrawable(me),
            paid_jobs=sum(1 for j in jobs if j.state is ProviderState.PAID),
        )

    async def settle(self) -> SettlementReport:
        return await self.settlement.settle()
