"""Helpers for discovery tests: a real embedded chain with the deployed contracts, real hosts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from node.chain.client import ChainClient
from node.chain.deploy import deploy_contracts
from node.chain.keys import NodeKey
from node.chain.registry import ProviderRegistry
from node.config import ChainSettings, P2PSettings
from node.discovery.advert import Device, DeviceKind, ModelPrice, Offer
from node.discovery.dht_records import dht_validators
from node.discovery.registry_view import RegistryView
from node.discovery.service import DiscoveryService
from node.discovery.validation import AdvertValidator
from node.p2p.gossip import ADVERT_TOPIC
from node.p2p.host import P2PHost
from node.p2p.identity import peer_id_from, peer_id_to_bytes
from node.types import sha256

MIN_STAKE = 10**18
MODEL = sha256(b"resnet18")


@dataclass
class Chain:
    client: ChainClient
    registry: ProviderRegistry
    keys: list[NodeKey]  # funded dev accounts, usable as node keys


@asynccontextmanager
async def deployed_chain() -> AsyncIterator[Chain]:
    client = await ChainClient.connect(ChainSettings(rpc_url="embedded", receipt_timeout_s=20.0))
    try:
        accounts = client.dev_accounts()
        deployment = await deploy_contracts(
            client,
            accounts[0],
            min_stake=MIN_STAKE,
            unstake_cooldown_s=3600,
            challenge_window_s=600,
            withdrawal_delay_s=600,
        )
        keys = [NodeKey.from_private_key(bytes(a.key)) for a in accounts]
        yield Chain(client, deployment.registry, keys)
    finally:
        await client.close()


async def register(chain: Chain, key: NodeKey) -> None:
    peer_id = peer_id_to_bytes(str(peer_id_from(key)))
    await chain.registry.register(peer_id, sha256(b"metadata"), stake=MIN_STAKE, sender=key.account)


def settings(**overrides: object) -> P2PSettings:
    values: dict[str, object] = {
        "read_timeout_s": 2.0,
        "advert_refresh_s": 30.0,
        "advert_ttl_s": 60.0,
        **overrides,
    }
    return P2PSettings.model_validate(values)


def offer(price: int = 10**15, slots: int = 4) -> Offer:
    return Offer(
        devices=(Device(DeviceKind.CPU, "test cpu", 8 * 2**30),),
        warm_models=(MODEL,),
        prices=(ModelPrice(MODEL, price),),
        free_slots=slots,
    )


@dataclass
class Node:
    key: NodeKey
    host: P2PHost
    discovery: DiscoveryService


@asynccontextmanager
async def start_node(
    key: NodeKey,
    registry: RegistryView,
    p2p: P2PSettings,
    *,
    provider_offer: Offer | None = None,
    validator: AdvertValidator | None = None,
) -> AsyncIterator[Node]:
    async with (
        P2PHost.start(key, p2p, dht_validators=dht_validators()) as host,
        DiscoveryService.start(
            host,
            registry,
            p2p,
            key=key,
            offer=provider_offer,
            validator=validator or AdvertValidator(registry, rate_per_s=2.0),
        ) as discovery,
    ):
        yield Node(key, host, discovery)


async def wait_for_topic_peers(hosts: Sequence[P2PHost], minimum: int = 1, timeout_s: float = 20.0) -> None:
    """Until every host knows `minimum` peers subscribed to the advert topic."""
    async with asyncio.timeout(timeout_s):
        for host in hosts:
            # The host exposes no subscription events, so this polls the gossip state.
            while len(await host.topic_peers(ADVERT_TOPIC)) < minimum:  # noqa: ASYNC110
                await asyncio.sleep(0.05)


NodesFactory = Callable[..., AbstractAsyncContextManager[list[Node]]]


@asynccontextmanager
async def running_nodes(
    keys: Sequence[NodeKey], registry: RegistryView, p2p: P2PSettings, *, providers: int, links: int = 2
) -> AsyncIterator[list[Node]]:
    """`len(keys)` nodes; the first `providers` announce an offer. Node i dials node 0 and its
    `links - 1` predecessors, so the overlay is connected but not a full mesh."""
    async with AsyncExitStack() as stack:
        nodes: list[Node] = []
        for i, key in enumerate(keys):
            node = await stack.enter_async_context(start_node(key, registry, p2p))
            nodes.append(node)
            targets = {0, *range(max(0, i - links + 1), i)} - {i}
            for t in sorted(targets):
                await node.host.connect(nodes[t].host.addrs[0])
        await wait_for_topic_peers([n.host for n in nodes])
        for node in nodes[:providers]:
            await node.discovery.announce(offer())
        yield nodes
