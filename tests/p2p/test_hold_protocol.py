"""`/gpunode/hold/1` between two real hosts, answered by a provider's `HoldDesk` over its real
`Load`: ready at once when a slot is free, queued and then ready when one frees, given up by
closing, lapsed slots given back, and bad requests refused with a reason."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from node.errors import P2PError, ProtocolViolation
from node.p2p.hold_protocol import HoldClient, serve_holds
from node.p2p.host import P2PHost
from node.p2p.job_messages import (
    HOLD_PROTOCOL,
    HoldQueued,
    HoldReady,
    HoldRelease,
    HoldReleased,
    HoldRequest,
    JobRejected,
    decode_hold_frame,
    decode_hold_response,
    encode_hold_frame,
    encode_hold_response,
)
from node.p2p.stream import P2PStream
from node.provider.holds import HoldDesk
from node.provider.runner import Load
from node.scheduler import AdmissionPolicy, HoldBook
from node.types import Hash32

if TYPE_CHECKING:
    from conftest import HostsFactory

MODEL = Hash32(b"\x07" * 32)
PRICE = 1000
TOO_LARGE = AdmissionPolicy({}).max_input_bytes + 1  # bytes of input


def request(n: int, *, price: int = PRICE, model: Hash32 = MODEL) -> HoldRequest:
    return HoldRequest(Hash32(n.to_bytes(32, "big")), model, price, 100, copies=2)


async def desk_on(host: P2PHost, *clients: P2PHost, slots: int = 1, ttl_s: float = 5.0) -> HoldDesk:
    """A desk serving holds on `host`, which `clients` are connected to."""
    for client in clients:
        await client.connect(host.addrs[0])
    load = Load(slots=slots)
    desk = HoldDesk(
        load, lambda: AdmissionPolicy({MODEL: PRICE}, slots=slots), book=HoldBook(grant_ttl_s=ttl_s)
    )
    serve_holds(host, desk.handle)
    return desk


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.02)


async def test_can_hold_a_free_slot_at_once_and_hand_it_to_the_job(running_hosts: HostsFactory) -> None:
    async with running_hosts(2) as (provider, client):
        desk = await desk_on(provider, client)
        hold = await HoldClient(client).ask(provider.peer_id, request(1))
        ready = await hold.next(5.0)
        assert isinstance(ready, HoldReady)
        assert ready.ttl_ms == 5000
        assert desk.load.free_slots == 0  # kept for the job
        assert desk.take(client.peer_id, request(1).job_id)  # the job arrived
        assert (desk.load.held, desk.load.reserved) == (0, 1)
        assert desk.load.snapshot(reserved_for_it=True).running == 0  # admitted into its slot
        desk.load.started(reserved=True)
        await hold.close()
        await asyncio.sleep(0.3)
        assert (desk.load.active, desk.load.free_slots, desk.book.granted) == (1, 0, 0)


async def test_can_wait_for_a_busy_provider_to_free_a_slot(running_hosts: HostsFactory) -> None:
    async with running_hosts(2) as (provider, client):
        desk = await desk_on(provider, client)
        desk.load.started()  # its one slot busy
        first = await HoldClient(client).ask(provider.peer_id, request(1))
        second = await HoldClient(client).ask(provider.peer_id, request(2))
        assert await first.next(5.0) == HoldQueued(0)
        assert await second.next(5.0) == HoldQueued(1)
        await until(lambda: desk.load.awaited == 1)  # two holds of two copies: one job expected
        desk.load.finished()
        assert isinstance(await first.next(5.0), HoldReady)  # the oldest first
        await first.close()  # given up (its job went elsewhere): the slot goes to the next
        assert isinstance(await second.next(5.0), HoldReady)
        await second.close()
        await until(lambda: desk.load.free_slots == 1 and desk.book.waiting == 0)


async def test_can_give_up_a_waiting_hold_by_closing_it(running_hosts: HostsFactory) -> None:
    async with running_hosts(2) as (provider, client):
        desk = await desk_on(provider, client)
        desk.load.started()
        hold = await HoldClient(client).ask(provider.peer_id, request(1))
        assert await hold.next(5.0) == HoldQueued(0)
        await hold.close()
        await until(lambda: desk.book.waiting == 0)
        desk.load.finished()
        assert desk.load.free_slots == 1  # nobody holds it


async def test_cannot_keep_a_slot_by_never_sending_the_job(running_hosts: HostsFactory) -> None:
    """The attacker is granted a slot and sits on it: the slot is given back after its time, the
    attacker's other hold there is dropped, and an honest client's hold gets the slot."""
    async with running_hosts(3) as (provider, attacker, honest):
        desk = await desk_on(provider, attacker, honest, ttl_s=0.5)
        desk.load.started()
        squat = await HoldClient(attacker).ask(provider.peer_id, request(1))
        more = await HoldClient(attacker).ask(provider.peer_id, request(2))
        assert await squat.next(5.0) == HoldQueued(0)
        assert await more.next(5.0) == HoldQueued(1)
        fair = await HoldClient(honest).ask(provider.peer_id, request(3))
        assert await fair.next(5.0) == HoldQueued(2)
        desk.load.finished()
        assert isinstance(await squat.next(5.0), HoldReady)
        started = time.monotonic()
        dropped = await more.next(5.0)
        assert isinstance(dropped, JobRejected)
        assert dropped.code == "hold_limit"
        assert isinstance(await fair.next(5.0), HoldReady)
        assert 0.4 <= time.monotonic() - started < 3.0
        again = await HoldClient(attacker).ask(provider.peer_id, request(4))
        refused = await again.next(5.0)
        assert isinstance(refused, JobRejected)
        assert "went unused" in refused.reason
        for hold in (squat, more, fair, again):
            await hold.close()


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (request(1, price=PRICE - 1), "price_too_low"),
        (request(1, model=Hash32(b"\x01" * 32)), "unknown_model"),
        (
            dataclasses.replace(request(1), input_bytes=AdmissionPolicy({}).max_input_bytes + 1),
            "input_too_large",
        ),
    ],
)
async def test_cannot_hold_a_slot_for_a_job_the_provider_would_refuse(
    running_hosts: HostsFactory, bad: HoldRequest, code: str
) -> None:
    async with running_hosts(2) as (provider, client):
        desk = await desk_on(provider, client)
        hold = await HoldClient(client).ask(provider.peer_id, bad)
        refused = await hold.next(5.0)
        assert isinstance(refused, JobRejected)
        assert refused.code == code
        await hold.close()
        assert (desk.book.waiting, desk.book.granted, desk.load.free_slots) == (0, 0, 1)


async def test_cannot_hold_with_a_malformed_request(running_hosts: HostsFactory) -> None:
    async with running_hosts(2) as (provider, client):
        await desk_on(provider, client)
        stream = await client.open_stream(provider.peer_id, HOLD_PROTOCOL)
        await stream.write_frame(b"\xff\xff\xff")
        answer = decode_hold_response(await stream.read_frame(5.0) or b"")
        assert isinstance(answer, JobRejected)
        assert answer.code == "malformed"
        await stream.close()


async def test_can_tell_a_hold_that_its_provider_left(running_hosts: HostsFactory) -> None:
    async with running_hosts(2) as (provider, client):
        desk = await desk_on(provider, client)
        desk.load.started()
        hold = await HoldClient(client).ask(provider.peer_id, request(1))
        assert await hold.next(5.0) == HoldQueued(0)
        await client.disconnect(provider.peer_id)
        with pytest.raises(P2PError):
            await hold.next(5.0)


def test_can_round_trip_the_client_frames() -> None:
    assert decode_hold_frame(encode_hold_frame(request(5))) == request(5)
    assert decode_hold_frame(encode_hold_frame(HoldRelease())) == HoldRelease()


async def test_can_release_a_hold_and_ask_the_next_on_the_same_stream(running_hosts: HostsFactory) -> None:
    """Released, a hold's stream goes back to the client's pool and carries its next hold: one
    stream for many holds. A waiting hold released frees its place; a granted one its slot."""
    async with running_hosts(2) as (provider, client):
        desk = await desk_on(provider, client)
        holds = HoldClient(client)
        first = await holds.ask(provider.peer_id, request(1))
        assert isinstance(await first.next(5.0), HoldReady)
        await first.release()
        await until(lambda: desk.load.free_slots == 1)
        desk.load.started()
        second = await holds.ask(provider.peer_id, request(2))
        assert await second.next(5.0) == HoldQueued(0)
        await second.release()
        assert desk.book.waiting == 0  # released before the answer to it
        third = await holds.ask(provider.peer_id, request(3))
        assert await third.next(5.0) == HoldQueued(0)
        desk.load.finished()
        assert isinstance(await third.next(5.0), HoldReady)
        await third.release()
        await until(lambda: desk.load.free_slots == 1)
        assert len(holds._idle[provider.peer_id]) == 1  # one stream carried all three


async def test_cannot_starve_a_hold_by_sending_jobs_without_one(running_hosts: HostsFactory) -> None:
    """The only slot is busy and jobs sent without a hold keep coming: the waiting hold is granted
    once one of them has started after it came, and its job queues behind it."""
    async with running_hosts(2) as (provider, client):
        desk = await desk_on(provider, client)
        desk.load.started()
        hold = await HoldClient(client).ask(provider.peer_id, request(1))
        assert await hold.next(5.0) == HoldQueued(0)
        desk.load.started()  # a job sent without a hold, after it
        assert isinstance(await hold.next(5.0), HoldReady)
        await hold.close()


async def test_cannot_hold_a_slot_for_a_model_the_provider_will_not_fetch(
    running_hosts: HostsFactory,
) -> None:
    """A provider that runs as many fetched models as it takes refuses a hold for another one at
    once, as it would refuse the job: no slot is kept for a job that would be turned away."""
    async with running_hosts(2) as (provider, client):
        await client.connect(provider.addrs[0])
        load = Load(slots=1)
        refusal = JobRejected("fetch_limit", "this provider runs as many fetched models as it takes (1)")
        desk = HoldDesk(
            load,
            lambda: AdmissionPolicy({MODEL: PRICE}, slots=1),
            refuse=lambda model_id: refusal if model_id != MODEL else None,
        )
        serve_holds(provider, desk.handle)
        holds = HoldClient(client)
        other = await holds.ask(provider.peer_id, request(1, model=Hash32(b"\x02" * 32)))
        assert await other.next(5.0) == refusal
        await other.release()
        served = await holds.ask(provider.peer_id, request(2))
        assert isinstance(await served.next(5.0), HoldReady)
        await served.release()
        assert (desk.book.waiting, desk.book.granted) == (0, 0)


async def test_cannot_be_told_by_a_provider_that_a_hold_nobody_released_is_over(
    running_hosts: HostsFactory,
) -> None:
    """A provider that answers a hold with `released` breaks the protocol: the client refuses it
    rather than reading its stream as free for the next hold."""
    async with running_hosts(2) as (provider, client):
        await client.connect(provider.addrs[0])

        async def confused(stream: P2PStream) -> None:
            await stream.read_frame(5.0)
            await stream.write_frame(encode_hold_response(HoldReleased()))
            await stream.read_frame(5.0)

        provider.set_stream_handler(HOLD_PROTOCOL, confused)
        hold = await HoldClient(client).ask(provider.peer_id, request(1))
        with pytest.raises(ProtocolViolation, match="released a hold nobody released"):
            await hold.next(5.0)
        await hold.close()
