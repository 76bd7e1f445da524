"""Two costs py-libp2p 0.8.1 pays on every message, trimmed without changing what any message
means; scripts/bench_p2p.py measured them as most of a node's CPU per gossip message.

- yamux sends a WINDOW_UPDATE frame after nearly every read: besides go-yamux's rule (grow the
  window back once half of it is consumed) it grants any smaller slack at once, whatever its
  `PY_YAMUX_*` knobs say. That is one more encrypted write for every message received. Streams
  here follow go-yamux's rule alone (`_window_update_at_half`), with the library's own window
  auto-tuning: the reader grants the window back once it has consumed half of it, so a sender
  that used it up waits only for the reader, never for a frame nobody will send.
- Every pubsub RPC carries the sender's signed peer record, and the library checks its signature
  twice per RPC (once in the read loop, once in gossipsub's handler) although a peer resends the
  same record for hours. A record already accepted from that peer, byte for byte, is taken again
  without re-verifying for `RECORD_RECHECK_S`; a new or changed record is fully checked, and a
  bad one still fails the RPC.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable

import libp2p.pubsub.gossipsub as gossipsub_module
import libp2p.pubsub.pubsub as pubsub_module
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.stream_muxer.yamux.yamux import YamuxStream

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


async def _window_update_at_half(self: YamuxStream, *, bytes_read: int = 0) -> None:
    """go-yamux's `sendWindowUpdate`: grow the receive window back to its target once what the
    reader has consumed reaches the threshold (half the target), and not before."""
    del bytes_read  # what was read is already counted: the window shrank when it arrived
    async with self.window_lock:
        buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
        delta = self.target_recv_window - (self.recv_window + buffered)
        if delta <= 0 or delta < self._grow_threshold():
            return
        increment = self._grow_to_delta(buffered) + self._apply_autotune_epoch(buffered)
        self._pending_recv_release = 0
    if increment > 0:
        await self.send_window_update(increment, skip_lock=True)


def apply() -> None:
    """Install both; idempotent, and called before any host is built."""
    YamuxStream._auto_tune_and_send_window_update = _window_update_at_half  # type: ignore[method-assign]
    for module in (pubsub_module, gossipsub_module):
        current = module.maybe_consume_signed_record
        if not hasattr(current, "__wrapped__"):
            module.maybe_consume_signed_record = _remembering(current)  # type: ignore[attr-defined]
