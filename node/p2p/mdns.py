"""Peers on the local network, found by multicast DNS and dialled (the trio side).

py-libp2p's mDNS (zeroconf) announces a host's transport addresses, which for a wildcard listener
is 0.0.0.0: it is started here with our dialable addresses instead, once the ports are known.
Found peers come from zeroconf's own thread through one process-wide event; they are handed to
the trio thread and dialled there, each at most once per `REDIAL_AFTER_S`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.discovery.events.peerDiscovery import peerDiscovery
from libp2p.discovery.mdns.mdns import MDNSDiscovery
from libp2p.peer.peerinfo import (
    PeerInfo,
    info_from_p2p_addr,
)

from node.logging import get_logger
from node.p2p.addresses import dial_candidates

log = get_logger(__name__)

# A peer found again within this time is not dialled again.
REDIAL_AFTER_S = 30.0
# Found peers waiting to be dialled; more are dropped (a flood of fake services on the LAN).
FOUND_QUEUE = 64
DIAL_TIMEOUT_S = 5.0
# Found peers are dialled this long after they were found, unless connected by then.
DIAL_DELAY_S = 3.0


@asynccontextmanager
async def local_peer_discovery(host: IHost, nursery: trio.Nursery) -> AsyncIterator[bool]:
    """Announce `host` on the local network and dial the peers found there, until exit.

    Yields whether mDNS runs: it does not where the network has no multicast, which is logged."""
    send, receive = trio.open_memory_channel[PeerInfo](FOUND_QUEUE)
    token = trio.lowlevel.current_trio_token()
    me = host.get_id()

    def found(info: PeerInfo) -> None:  # called in zeroconf's thread
        if info.peer_id != me:
            with suppress(trio.RunFinishedError):
                token.run_sync_soon(_offer, send, info)

    try:
        mdns = MDNSDiscovery(host.get_network(), listen_addrs=[str(a) for a in host.get_addrs()], host=None)
        mdns.start()
    except Exception as exc:
        log.warning("mdns_unavailable", error=str(exc))
        yield False
        return
    peerDiscovery.register_peer_discovered_handler(found)
    nursery.start_soon(_dial_found, host, receive)
    log.info("mdns_started")
    try:
        yield True
    finally:
        peerDiscovery.unregister_peer_discovered_handler(found)
        try:
            mdns.stop()
        except Exception as exc:
            log.debug("mdns_stop_failed", error=str(exc))


def _offer(send: trio.MemorySendChannel[PeerInfo], info: PeerInfo) -> None:
    with suppress(trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
        send.send_nowait(info)


async def _dial_found(host: IHost, found: trio.MemoryReceiveChannel[PeerInfo]) -> None:
    dialled: dict[str, float] = {}
    me = str(host.get_id())
    async for info in found:
        peer = str(info.peer_id)
        # Of two nodes that find each other, one dials: two connections crossing between the same
        # peers make py-libp2p close one while its handler starts, which can end the host. The
        # other waits a little too, in case a bootstrap dial of either side is on its way.
        if peer < me or time.monotonic() < dialled.get(peer, 0.0):
            continue
        await trio.sleep(DIAL_DELAY_S)
        if info.peer_id in host.get_connected_peers():
            continue
        dialled[peer] = time.monotonic() + REDIAL_AFTER_S
        for addr in dial_candidates([str(a) for a in info.addrs], peer):
            with trio.move_on_after(DIAL_TIMEOUT_S):
                try:
                    await host.connect(info_from_p2p_addr(multiaddr.Multiaddr(addr)))
                    log.info("mdns_peer_connected", peer=peer, addr=addr)
                    break
                except Exception as exc:
                    log.debug("mdns_dial_failed", peer=peer, addr=addr, error=str(exc))
