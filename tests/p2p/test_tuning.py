"""py-libp2p tuning (node.p2p.tuning): a signed peer record already accepted from a peer is not
verified again, a new or bad one always is; yamux grows a window back at half (streams moving
data both ways, large and small, are covered by the job and blob protocol tests)."""

from __future__ import annotations

from collections.abc import Callable

import libp2p.pubsub.gossipsub as gossipsub_module
import libp2p.pubsub.pubsub as pubsub_module
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.secp256k1 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.peer.peerstore import env_to_send_in_RPC
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.utils import maybe_consume_signed_record
from libp2p.stream_muxer.yamux.yamux import YamuxStream

from node.p2p import tuning


def rpc_from(sender: IHost, record: bytes | None = None) -> rpc_pb2.RPC:
    msg = rpc_pb2.RPC()
    msg.senderRecord = record if record is not None else env_to_send_in_RPC(sender)[0]
    return msg


def counting(calls: list[bytes]) -> Callable[[rpc_pb2.RPC, IHost, ID], bool]:
    def verify(msg: rpc_pb2.RPC, host: IHost, peer_id: ID) -> bool:
        calls.append(msg.senderRecord)
        return maybe_consume_signed_record(msg, host, peer_id)

    return verify


def test_can_take_a_known_record_again_without_verifying_it() -> None:
    receiver, sender = new_host(create_new_key_pair()), new_host(create_new_key_pair())
    calls: list[bytes] = []
    consume = tuning._remembering(counting(calls))
    msg = rpc_from(sender)
    assert consume(msg, receiver, sender.get_id())
    assert consume(msg, receiver, sender.get_id())
    assert consume(rpc_pb2.RPC(), receiver, sender.get_id())  # no record: nothing to check
    assert len(calls) == 1
    # Another receiving host keeps its own memory.
    assert consume(msg, new_host(create_new_key_pair()), sender.get_id())
    assert len(calls) == 2


def test_cannot_pass_a_tampered_or_misattributed_record_after_a_good_one() -> None:
    receiver, sender, other = (new_host(create_new_key_pair()) for _ in range(3))
    calls: list[bytes] = []
    consume = tuning._remembering(counting(calls))
    good = rpc_from(sender)
    assert consume(good, receiver, sender.get_id())
    tampered = bytearray(good.senderRecord)
    tampered[-1] ^= 0x01
    assert not consume(rpc_from(sender, bytes(tampered)), receiver, sender.get_id())
    # The same good bytes claimed by another peer are checked, and refused.
    assert not consume(good, receiver, other.get_id())
    assert len(calls) == 3
    # The good record is still remembered for its own peer.
    assert consume(good, receiver, sender.get_id())
    assert len(calls) == 3


def test_can_recheck_a_known_record_after_a_while() -> None:
    receiver, sender = new_host(create_new_key_pair()), new_host(create_new_key_pair())
    calls: list[bytes] = []
    consume = tuning._remembering(counting(calls))
    msg = rpc_from(sender)
    assert consume(msg, receiver, sender.get_id())
    remembered = tuning._accepted[receiver][sender.get_id()]
    tuning._accepted[receiver][sender.get_id()] = (remembered[0], remembered[1] - tuning.RECORD_RECHECK_S)
    assert consume(msg, receiver, sender.get_id())
    assert len(calls) == 2


def test_tuning_is_installed_once_by_every_host() -> None:
    tuning.apply()
    tuning.apply()
    for module in (pubsub_module, gossipsub_module):
        installed = module.maybe_consume_signed_record
        assert installed.__wrapped__ is maybe_consume_signed_record  # type: ignore[attr-defined]
    assert YamuxStream._auto_tune_and_send_window_update is tuning._window_update_at_half
