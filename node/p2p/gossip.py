"""Gossipsub and pubsub parameters, each set explicitly: py-libp2p's defaults do not fit an overlay
that must deliver every advert to 50+ nodes within half a second."""

from __future__ import annotations

import time

from libp2p.abc import IHost
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pubsub import Pubsub

ADVERT_TOPIC = "gpunode/adverts/1"


def new_gossipsub() -> GossipSub:
    return GossipSub(
        # meshsub 1.2 and 1.1 first: go-libp2p and js-libp2p peers speak both; 1.0 for old peers.
        protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11, PROTOCOL_ID],
        # The go-libp2p defaults D=6, Dlo=4, Dhi=12: with 50 peers a message reaches everyone in
        # about three hops, while the ~5-7 ms CPU each forward costs stays bounded per node.
        degree=6,
        degree_low=4,
        degree_high=12,
        # Fanout entries for topics we publish to without joining expire after a minute.
        time_to_live=60,
        # IHAVE gossip over the last 3 heartbeats, message cache of 5: a peer that missed the
        # mesh push still learns the message ids within ~3 s and pulls them.
        gossip_window=3,
        gossip_history=5,
        # 1 s instead of the 120 s default: the mesh must form and repair within seconds when
        # nodes join or leave, or adverts stall until the next heartbeat.
        heartbeat_initial_delay=0.1,
        heartbeat_interval=1,
        # Peer exchange on prune helps a node that knows only its bootstrap peer find a mesh.
        do_px=True,
        px_peers_count=16,
        prune_back_off=60,
        unsubscribe_back_off=10,
        # gossipsub's own forwarder limit counts every relayed message, and at 10/s it drops
        # legitimate relays as soon as a few dozen providers refresh together. Per-provider
        # flood control lives in the advert validator, which can tell an originator apart.
        spam_protection_enabled=True,
        max_messages_per_topic_per_second=500.0,
        # Every peer on a loopback or a single data-centre subnet shares an address; demanding
        # three distinct IPs in the mesh would keep regrafting forever there.
        eclipse_protection_enabled=False,
        max_pending_messages_per_peer=1000,
        pending_messages_ttl=30.0,
    )


def new_pubsub(host: IHost, router: GossipSub) -> Pubsub:
    pubsub = Pubsub(
        host,
        router,
        # Seen-message cache: large enough for several refresh rounds of 10k providers.
        cache_size=65536,
        seen_ttl=120,
        sweep_interval=30,
        # Signed messages prove their originator; go/js peers drop unsigned ones with seqnos.
        strict_signing=True,
        # Advert validation calls into the asyncio side; 2 s bounds a stuck chain lookup.
        validation_timeout=2.0,
        # Adverts carry no more than a few KiB; a 1 MiB RPC is already generous.
        max_inbound_rpc_size=1 << 20,
    )
    # Message ids are (peer id, seqno), and py-libp2p starts seqnos at the Unix time in seconds,
    # one per message: a node that restarts within a few minutes reuses seqnos its peers still
    # remember, and its new adverts are dropped as already seen. go-libp2p starts at nanoseconds.
    pubsub.counter = time.time_ns()
    return pubsub
