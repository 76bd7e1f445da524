"""A devnet for end-to-end tests: one embedded chain with the contracts, N providers and a client
as real nodes (libp2p on 127.0.0.1, the sandboxed executor, SQLite), all in this process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import save

from node.app import Node
from node.chain.client import ChainClient
from node.chain.deploy import Deployment
from node.chain.keys import NodeKey
from node.config import P2PSettings, Settings
from node.devnet.marketplace import (
    CHALLENGE_WINDOW_S,
    PRICE_WEI,
    REDEEM_ON_REQUEST,
    Marketplace,
    deploy_devnet_contracts,
    make_builtin_model,
)
from node.discovery.advert import Device, DeviceKind, ModelPrice, Offer
from node.discovery.dht_records import dht_validators
from node.discovery.registry_view import CachedRegistryView
from node.discovery.service import DiscoveryService
from node.p2p.host import P2PHost
from node.p2p.job_protocol import JobHandler, serve_jobs
from node.types import Hash32

__all__ = [
    "CHALLENGE_WINDOW_S",
    "PRICE_WEI",
    "Devnet",
    "deploy",
    "deployed",
    "make_builtin_model",
    "mlp_input",
]


def mlp_input(seed: int = 0, rows: int = 2) -> bytes:
    rng = np.random.default_rng(seed)
    return bytes(save({"input": rng.standard_normal((rows, 64), dtype=np.float32)}))


@dataclass
class Devnet:
    """A `Marketplace` with the tests' conventions: provider i has dev key 1 + i, the client 8."""

    place: Marketplace
    keys: list[NodeKey]
    providers: list[Node] = field(default_factory=list)
    client: Node | None = None

    @property
    def chain(self) -> ChainClient:
        return self.place.chain

    @property
    def deployment(self) -> Deployment:
        return self.place.deployment

    @property
    def market(self):  # type: ignore[no-untyped-def]
        return self.place.deployment.market

    # Settable: a test may serve another model than the marketplace's own.
    @property
    def model_dir(self) -> Path:
        return self.place.model_source

    @model_dir.setter
    def model_dir(self, path: Path) -> None:
        self.place.model_source = path

    @property
    def model_id(self) -> str:
        return self.place.model_id

    @model_id.setter
    def model_id(self, model_id: str) -> None:
        self.place.model_id = model_id

    @property
    def root(self) -> Path:
        return self.place.root

    @property
    def shared(self) -> ChainClient | None:
        """Nodes in this process share the embedded chain; on an RPC URL each connects itself."""
        return self.chain if self.place.rpc_url == "embedded" else None

    def settings(self, name: str, *, provider: bool, bootstrap: list[str] | None = None) -> Settings:
        return self.place.settings(name, provider=provider, bootstrap=bootstrap or [])

    def provider_settings(
        self, index: int, *, bootstrap: list[str], model_dir: Path | None = None
    ) -> Settings:
        settings = self.settings(f"provider{index}", provider=False, bootstrap=bootstrap)
        settings.provider.enabled = True
        self.place.install_model(settings, model_dir)
        return settings

    def provider_node(self, index: int, *, bootstrap: list[str], settings: Settings | None = None) -> Node:
        settings = settings or self.provider_settings(index, bootstrap=bootstrap)
        return Node(
            settings,
            key=self.keys[1 + index],
            shared_chain=self.shared,
            serve_api=False,
            redemption=REDEEM_ON_REQUEST,
        )

    def client_node(self, name: str = "client", *, key_index: int = 8) -> Node:
        return Node(
            self.settings(name, provider=False),
            key=self.keys[key_index],
            shared_chain=self.chain,
            serve_api=False,
        )


async def register(devnet: Devnet, key: NodeKey) -> None:
    await devnet.place.register(key)


async def deploy(chain: ChainClient) -> Deployment:
    return await deploy_devnet_contracts(chain)


@asynccontextmanager
async def deployed(root: Path, *, rpc_url: str = "embedded") -> AsyncIterator[Devnet]:
    async with Marketplace.open(root, chain=rpc_url, price_wei=PRICE_WEI) as place:
        yield Devnet(place, place.dev_keys())


@asynccontextmanager
async def running_devnet(
    root: Path,
    *,
    providers: int = 3,
    rpc_url: str = "embedded",
    model: tuple[Path, str] | None = None,
) -> AsyncIterator[Devnet]:
    """The chain, `providers` registered providers and a client with a voucher deposit, all ready,
    every provider's advert in the client's directory. `model` (its directory and id) is served
    instead of the marketplace's built-in one."""
    async with deployed(root, rpc_url=rpc_url) as devnet, AsyncExitStack() as stack:
        if model is not None:
            devnet.model_dir, devnet.model_id = model
        client = await stack.enter_async_context(devnet.client_node().running())
        devnet.client = client
        bootstrap = [client.host.addrs[0]]
        for i in range(providers):
            await register(devnet, devnet.keys[1 + i])
        started = await asyncio.gather(
            *(
                stack.enter_async_context(devnet.provider_node(i, bootstrap=bootstrap).running())
                for i in range(providers)
            )
        )
        devnet.providers = list(started)
        await client.discovery.directory.wait_for(lambda d: len(d) >= providers, timeout_s=60.0)
        await client.client_jobs.deposit(10**17)
        yield devnet


async def serve_cheaply(
    devnet: Devnet,
    stack: AsyncExitStack,
    key: NodeKey,
    handler: JobHandler,
    *,
    price: ModelPrice | None = None,
    offer: Offer | None = None,
) -> P2PHost:
    """A registered provider that is not a node: `handler` answers its jobs, and it advertises the
    devnet's model (or `price`'s) at a quarter of the price, so a client tries it before the honest
    providers; or it advertises `offer`."""
    assert devnet.client is not None
    await register(devnet, key)
    model = Hash32(bytes.fromhex(devnet.model_id))
    price = price or ModelPrice(model, PRICE_WEI // 4)
    cheap = offer or Offer(
        devices=(Device(DeviceKind.CPU, "cpu", 2**33),),
        warm_models=(price.model_id,),
        prices=(price,),
        free_slots=8,
    )
    settings = P2PSettings(bootstrap=[devnet.client.host.addrs[0]], advert_refresh_s=2.0)
    host = await stack.enter_async_context(P2PHost.start(key, settings, dht_validators=dht_validators()))
    serve_jobs(host, handler)
    registry = CachedRegistryView(devnet.deployment.registry)
    await stack.enter_async_context(DiscoveryService.start(host, registry, settings, key=key, offer=cheap))
    return host
