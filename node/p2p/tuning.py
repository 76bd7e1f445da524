"""Two costs py-libp2p 0.8.1 pays on every message, trimmed without changing what any message
means; scripts/bench_p2p.py measured them as most of a node's CPU per gossip message.

- yamux sends a WINDOW_UPDATE frame after every read by default (`PY_YAMUX_RELEASE_ON_READ=1`),
  one extra encrypted write per message received. With it off, released bytes are batched into
  one update per half window, as go-yamux does; the library reads the knob on every call, and an
  operator's own setting of it is kept.
- Every pubsub RPC carries the sender's signed peer record, and the library checks its signature
  twice per RPC (once in the read loop, once in gossipsub's handler) although a peer resends the
  same record for hours. A record already accepted from that peer, byte for byte, is taken again
  without re-verifying for `RECORD_RECHECK_S`; a new or changed record is fully checked, and a
  bad one still fails the RPC.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Callable

import libp2p.pubsub.gossipsub as gossipsub_module
import libp2p.pubsub.pubsub as pubsub_module
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2

# A peer's record is verified again at least this often (the peerstore keeps it for 2 hours).
RECORD_RECHECK_S = 600.0

_Consume = Callable[[rpc_pb2.RPC, IHost, ID], bool]

# Per host: the last record accepted from each peer, and when it was verified.
_accepted: weakref.WeakKeyDictionary[IHost, dict[ID, tuple[bytes, float]]] = weakref.WeakKeyDictionary()


def _remembering(verify: _Consume) -> _Consume:
    def consume(msg: rpc_pb2.RPC, host: IHost, peer_id: ID) -> bool:
        if not msg.HasField("senderRecord"):
            return True
        record = msg.senderRecord
        known = _accepted.setdefault(host, {}).get(peer_id)
        now = time.monotonic()
        if known is not None and known[0] == record and now - known[1] < RECORD_RECHECK_S:
            return True
        if not verify(msg, host, peer_id):
            return False
        _accepted[host][peer_id] = (record, now)
        return True

    consume.__wrapped__ = verify  # type: ignore[attr-defined]
    return consume


def apply() -> None:
    """Install both; idempotent, and called before any host is built."""
    os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")
    for module in (pubsub_module, gossipsub_module):
        current = module.maybe_consume_signed_record
        if not hasattr(current, "__wrapped__"):
            module.maybe_consume_signed_record = _remembering(current)  # type: ignore[attr-defined]
