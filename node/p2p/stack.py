"""The trio side of the host: building the py-libp2p stack and the tasks that keep it healthy.

Everything here runs in the p2p thread; `node.p2p.host.P2PHost` is the asyncio face.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from typing import Protocol

import multiaddr
import trio
from libp2p import create_yamux_muxer_option, new_host
from libp2p.abc import IHost
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.records.validator import NamespacedValidator, Validator
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

from node.config import P2PSettings
from node.errors import P2PError
from node.logging import get_logger
from node.p2p.addresses import advertised_addrs
from node.p2p.gossip import new_gossipsub, new_pubsub
from node.p2p.identity import PrivateKeyHolder, key_pair_from
from node.p2p.subscription import GossipMessage, Subscription
from node.p2p.tuning import apply as apply_tuning

log = get_logger(__name__)

# How long a dial or a protocol negotiation may take on a live network before we give up.
DIAL_TIMEOUT_S = 10.0
# Bootstrap peers are redialled this often while they are not connected.
BOOTSTRAP_RETRY_S = 2.0


class RecordValidator(Protocol):
    """A DHT record validator; runs synchronously in the p2p thread, so it must be pure."""

    def validate(self, key: str, value: bytes) -> None:
        """Raise (any exception) when `value` is not acceptable under `key`."""

    def select(self, key: str, values: list[bytes]) -> int:
        """Index of the best of several valid values."""


class _ValidatorAdapter(Validator):
    def __init__(self, inner: RecordValidator) -> None:
        self._inner = inner

    def validate(self, key: str, value: bytes) -> None:
        self._inner.validate(key, value)

    def select(self, key: str, values: list[bytes]) -> int:
        return self._inner.select(key, values)


class Stack:
    """The trio-side objects; only touched from the trio thread."""

    def __init__(self, host: IHost, pubsub: Pubsub, gossipsub: GossipSub, dht: KadDHT) -> None:
        self.host = host
        self.pubsub = pubsub
        self.gossipsub = gossipsub
        self.dht = dht
        self.nursery: trio.Nursery | None = None
        self.mdns = False


def unblock(stack: Stack, peer: ID) -> None:
    """Forget earlier failed dials to `peer`: we are about to dial an address we were just given,
    and py-libp2p would otherwise refuse for a while a peer that went away and came back."""
    unblock_peer = getattr(stack.host.get_network(), "unblock_peer", None)
    if unblock_peer is not None:
        unblock_peer(peer)


def still_valid(dht: KadDHT, key: str, value: bytes) -> bool:
    if dht.validator is None:
        return True
    try:
        dht.validator.validate(key, value)
    except Exception:
        return False
    return True


def check_port_free(addr: str, setting: str = "p2p.listen") -> None:
    """py-libp2p binds with SO_REUSEPORT, so a second node on a taken port starts "fine" and
    silently shares its incoming connections with the first; refuse that up front."""
    maddr = parse_multiaddr(addr)
    protocols = {p.name for p in maddr.protocols()}
    if "tcp" not in protocols or not ({"ip4", "ip6"} & protocols):
        return
    port = int(maddr.value_for_protocol("tcp"))
    if port == 0:
        return
    family, ip = (
        (socket.AF_INET6, maddr.value_for_protocol("ip6"))
        if "ip6" in protocols
        else (socket.AF_INET, maddr.value_for_protocol("ip4"))
    )
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR tolerates TIME_WAIT leftovers of our own last run, not a live listener.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((ip, port))
        except OSError as exc:
            raise P2PError(
                f"cannot listen on {addr}: {exc.strerror}",
                hint=f"another program (another gpunode home?) uses port {port}: "
                f"choose a free one in {setting} of the config, or `gpunode init --p2p-port`",
            ) from exc


def parse_multiaddr(addr: str) -> multiaddr.Multiaddr:
    try:
        return multiaddr.Multiaddr(addr)
    except Exception as exc:
        raise P2PError(
            f"malformed multiaddr {addr!r}: {exc}", hint="e.g. /ip4/127.0.0.1/tcp/4001/p2p/16Uiu2…"
        ) from exc


def build_stack(
    key: PrivateKeyHolder | bytes, settings: P2PSettings, validators: Mapping[str, RecordValidator]
) -> Stack:
    apply_tuning()
    key_pair = key_pair_from(key)
    host = new_host(
        key_pair=key_pair,
        # Noise only: the default security list also offers plaintext, which a peer could pick.
        sec_opt={
            NOISE_PROTOCOL_ID: NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
        },
        muxer_opt=create_yamux_muxer_option(),
        listen_addrs=[parse_multiaddr(a) for a in settings.listen],
        # Our own mDNS (node.p2p.mdns) announces dialable addresses, not the wildcard we bind.
        enable_mDNS=False,
        addrs_factory=lambda candidates: advertised_addrs(candidates, settings.announce),
        # One connection per peer: with more, every dial waits 250 ms for a second one.
        connection_config=ConnectionConfig(max_connections_per_peer=1),
    )
    namespaced = NamespacedValidator(
        {ns: _ValidatorAdapter(v) for ns, v in validators.items()}, strict_validation=True
    )
    # Strict: a key outside a namespace we validate is refused, so the DHT cannot be used to
    # park arbitrary data on our nodes.
    dht = KadDHT(host, DHTMode.SERVER, validator=namespaced, validator_changed=True, strict_validation=True)
    gossipsub = new_gossipsub()
    pubsub = new_pubsub(host, gossipsub)
    return Stack(host, pubsub, gossipsub, dht)


async def keep_bootstrap_connected(stack: Stack, bootstrap: list[str]) -> None:
    infos = []
    for addr in bootstrap:
        try:
            infos.append(info_from_p2p_addr(parse_multiaddr(addr)))
        except Exception as exc:
            # Settings are checked at load; a bad address that got here costs only itself.
            log.warning("bootstrap_address_unusable", addr=addr, error=str(exc))
    while infos:
        for info in infos:
            if info.peer_id in stack.host.get_connected_peers():
                continue
            with trio.move_on_after(DIAL_TIMEOUT_S):
                try:
                    unblock(stack, info.peer_id)
                    await stack.host.connect(info)
                    await stack.dht.add_peer(info.peer_id, skip_server_mode_check=True)
                    log.info("bootstrap_connected", peer=str(info.peer_id))
                except Exception as exc:
                    log.debug("bootstrap_dial_failed", peer=str(info.peer_id), error=str(exc))
        await trio.sleep(BOOTSTRAP_RETRY_S)


async def feed_routing_table(stack: Stack) -> None:
    # Peers that dialled us (not only those we dialled) belong in the routing table too, so a
    # lookup started anywhere can walk the whole overlay.
    while True:
        for peer in stack.host.get_connected_peers():
            if stack.dht.routing_table.peer_in_table(peer):
                continue
            try:
                await stack.dht.add_peer(peer, skip_server_mode_check=True)
            except Exception as exc:
                log.debug("routing_table_add_failed", peer=str(peer), error=str(exc))
        await trio.sleep(1.0)


async def drain_subscription(
    sub: object, subscription: Subscription, loop: asyncio.AbstractEventLoop
) -> None:
    # Empties py-libp2p's 32-slot subscription channel as fast as messages arrive: that channel
    # drops silently when full, while the asyncio-side queue counts what it drops.
    get = sub.get  # type: ignore[attr-defined]
    while True:
        msg = await get()
        try:
            source = str(ID(msg.from_id))
        except Exception as exc:
            log.debug("gossip_message_without_source", error=str(exc))
            continue
        loop.call_soon_threadsafe(
            subscription.deliver, GossipMessage(subscription.topic, source, bytes(msg.data))
        )
