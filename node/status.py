"""`NodeInfo`: what the node reports about itself (address, chain, peers)."""

from __future__ import annotations

from collections.abc import Callable

from node.chain.client import ChainClient
from node.chain.market import JobMarket
from node.chain.registry import ProviderRegistry
from node.discovery.advert import ProviderAdvert
from node.discovery.directory import Directory
from node.domain.records import ProviderReputation
from node.domain.service import NodeStatusView, OfferedModelView, PeerView, ReputationView
from node.p2p.host import P2PHost
from node.p2p.identity import peer_id_to_address
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
        reputation: Callable[[Address], ProviderReputation | None] = lambda _: None,
    ) -> None:
        self.host = host
        self.chain = chain
        self.registry = registry
        self.market = market
        self.directory = directory
        self.db = db
        self.provider = provider
        # What this node learnt of each provider's results, if it ever used it.
        self.reputation = reputation

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
            address = advert.address if advert else peer_id_to_address(peer)
            views.append(
                PeerView(
                    peer_id=peer,
                    address=address,
                    connected=peer in connected,
                    provider=advert is not None,
                    listen_addrs=advert.listen_addrs if advert else (),
                    models=_offered(advert) if advert else (),
                    devices=_devices(advert) if advert else (),
                    reputation=_reputation(self.reputation(address)),
                    fetch=advert.offer.fetch if advert else None,
                )
            )
        return tuple(views)


def _reputation(known: ProviderReputation | None) -> ReputationView | None:
    if known is None:
        return None
    return ReputationView(
        jobs_seen=known.jobs_seen,
        checks_passed=known.checks_passed,
        checks_failed=known.checks_failed,
        fraud_records_seen=known.fraud_records_seen,
        excluded=known.excluded,
        excluded_reason=known.excluded_reason,
    )


def _offered(advert: ProviderAdvert) -> tuple[OfferedModelView, ...]:
    warm = set(advert.offer.warm_models)
    return tuple(
        OfferedModelView(p.model_id.hex(), p.price_per_job_wei, p.model_id in warm, p.task, p.precision)
        for p in advert.offer.prices
    )


def _devices(advert: ProviderAdvert) -> tuple[str, ...]:
    return tuple(f"{d.kind.value}: {d.model}" for d in advert.offer.devices)
