"""`NodeInfo` and `ProviderInfo`: what the node and its provider side report about themselves."""

from __future__ import annotations

from node.chain.client import ChainClient
from node.chain.market import JobMarket
from node.chain.registry import ProviderRegistry
from node.discovery.directory import Directory
from node.jobs.provider import ProviderJobs
from node.jobs.service import (
    EarningsView,
    NodeStatusView,
    PeerView,
    ProviderStatusView,
    SettlementReport,
)
from node.jobs.state import JobState, PaymentPath, Role
from node.p2p.host import P2PHost
from node.p2p.identity import peer_id_to_address
from node.settlement.service import SettlementService
from node.storage import Database
from node.types import Address


class NodeInfo:
    def __init__(
        self,
        host: P2PHost,
        chain: ChainClient,
        registry: ProviderRegistry,
        market: JobMarket,
        directory: Directory,
        db: Database,
        *,
        provider: bool,
    ) -> None:
        self.host = host
        self.chain = chain
        self.registry = registry
        self.market = market
        self.directory = directory
        self.db = db
        self.provider = provider

    async def status(self) -> NodeStatusView:
        return NodeStatusView(
            address=self.host.address,
            peer_id=self.host.peer_id,
            listen_addrs=tuple(self.host.addrs),
            chain_id=self.chain.chain_id,
            rpc_url=self.chain.settings.rpc_url,
            registry_address=Address(self.registry.address),
            market_address=Address(self.market.address),
            block_number=await self.chain.block_number(),
            provider=self.provider,
            database=self.db.backend,
        )

    async def peers(self) -> tuple[PeerView, ...]:
        connected = set(self.host.connected_peers())
        adverts = {a.peer_id: a for a in self.directory.live()}
        views = []
        for peer in sorted(connected | set(adverts)):
            advert = adverts.get(peer)
            views.append(
                PeerView(
                    peer_id=peer,
                    address=advert.address if advert else peer_id_to_address(peer),
                    connected=peer in connected,
                    provider=advert is not None,
                    listen_addrs=advert.listen_addrs if advert else (),
                )
            )
        return tuple(views)


class ProviderInfo:
    def __init__(
        self,
        jobs: ProviderJobs,
        registry: ProviderRegistry,
        settlement: SettlementService,
        *,
        price_per_job_wei: int,
    ) -> None:
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
            if j.status.payment is PaymentPath.ESCROW and j.state is JobState.DELIVERED
        )
        return EarningsView(
            unredeemed_voucher_wei=unredeemed,
            redeemed_voucher_wei=redeemed,
            pending_onchain_wei=pending,
            withdrawable_wei=await self.jobs.market.withdrawable(me),
            paid_jobs=sum(1 for j in jobs if j.state is JobState.PAID),
        )

    async def settle(self) -> SettlementReport:
        return await self.settlement.settle()
