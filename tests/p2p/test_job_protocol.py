"""`/gpunode/job/1` between two real hosts."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from node.errors import P2PError, PeerTimeout, ProtocolViolation
from node.gen.gpunode.v1 import job_pb2
from node.p2p.job_messages import (
    JOB_PROTOCOL,
    BlobRef,
    JobAccepted,
    JobFailed,
    JobProgress,
    JobRejected,
    JobRequest,
    JobResponse,
    JobResult,
    OnchainPayment,
    VoucherPayment,
    decode_request,
    encode_request,
)
from node.p2p.job_protocol import JobClient, serve_jobs
from node.types import Address, Hash32, ResultReceipt, sha256

if TYPE_CHECKING:
    from conftest import HostsFactory

PROVIDER = Address("0x00000000000000000000000000000000000000A1")


def make_request(data: bytes = b"input", *, deadline_s: float = 30.0) -> JobRequest:
    return JobRequest(
        job_id=Hash32(os.urandom(32)),
        model_id=sha256(b"model"),
        input=data,
        payment=OnchainPayment(Hash32(os.urandom(32))),
        max_price_wei=10**15,
        deadline_ms=int((time.time() + deadline_s) * 1000),
    )


async def echo_handler(peer: str, request: JobRequest) -> AsyncIterator[JobResponse]:
    if request.max_price_wei < 10**12:
        yield JobRejected("price", "offer below the provider's price")
        return
    yield JobAccepted(queue_position=0)
    yield JobProgress("running", 0.5)
    data = request.input if isinstance(request.input, bytes) else b""
    receipt = ResultReceipt(
        job_id=request.job_id,
        model_id=request.model_id,
        input_hash=sha256(data),
        output_hash=sha256(data[::-1]),
        profile_hash=sha256(b"profile"),
        provider=PROVIDER,
    )
    yield JobResult(receipt, b"\x01" * 65, data[::-1])


def test_can_round_trip_a_request_through_protobuf() -> None:
    request = JobRequest(
        job_id=Hash32(b"\x02" * 32),
        model_id=Hash32(b"\x03" * 32),
        input=BlobRef(Hash32(b"\x04" * 32), 123),
        payment=VoucherPayment(PROVIDER, PROVIDER, 2**200, b"\x05" * 65),
        max_price_wei=7,
        deadline_ms=99,
    )
    assert decode_request(encode_request(request)) == request


@pytest.mark.parametrize("bound", [None, 0, 5])
def test_can_round_trip_how_long_a_request_may_queue(bound: int | None) -> None:
    request = dataclasses.replace(make_request(), max_queue_position=bound)
    assert decode_request(encode_request(request)).max_queue_position == bound


def test_can_read_a_request_from_a_client_that_never_bounds_the_queue() -> None:
    """A request encoded without the field (as clients before it did) may queue as before."""
    raw = encode_request(make_request())
    old = job_pb2.JobRequest()
    old.ParseFromString(raw)
    assert not old.HasField("max_queue_position")
    assert decode_request(old.SerializeToString()).max_queue_position is None


def test_cannot_encode_a_queue_bound_that_does_not_fit_the_wire() -> None:
    with pytest.raises(ProtocolViolation, match="does not fit a uint32"):
        encode_request(dataclasses.replace(make_request(), max_queue_position=2**32))


async def test_can_run_a_job_and_see_progress(running_hosts: HostsFactory) -> None:
    async with running_hosts(2) as (provider, client):
        serve_jobs(provider, echo_handler)
        await client.connect(provider.addrs[0])
        events: list[JobAccepted | JobProgress] = []
        outcome = await JobClient(client).request_job(provider.peer_id, make_request(b"abc"), events.append)
        assert isinstance(outcome, JobResult)
        assert outcome.output == b"cba"
        assert outcome.receipt.output_hash == sha256(b"cba")
        await asyncio.sleep(0)  # progress callbacks are scheduled on the loop
        assert events == [JobAccepted(0), JobProgress("running", 0.5)]


async def test_can_reuse_a_job_stream_for_many_jobs(running_hosts: HostsFactory) -> None:
    async with running_hosts(2) as (provider, client):
        serve_jobs(provider, echo_handler)
        await client.connect(provider.addrs[0])
        jobs = JobClient(client)
        for i in range(20):
            outcome = await jobs.request_job(provider.peer_id, make_request(bytes([i]) * 10))
            assert isinstance(outcome, JobResult)
            assert outcome.output == bytes([i]) * 10
        outcomes = await asyncio.gather(
            *(jobs.request_job(provider.peer_id, make_request(b"x")) for _ in range(10))
        )
        assert all(isinstance(o, JobResult) for o in outcomes)


async def test_rejection_is_a_value(running_hosts: HostsFactory) -> None:
    async with running_hosts(2) as (provider, client):
        serve_jobs(provider, echo_handler)
        await client.connect(provider.addrs[0])
        request = make_request()
        cheap = JobRequest(
            request.job_id, request.model_id, request.input, request.payment, 1, request.deadline_ms
        )
        outcome = await JobClient(client).request_job(provider.peer_id, cheap)
        assert outcome == JobRejected("price", "offer below the provider's price")


async def test_handler_crash_becomes_job_failed(running_hosts: HostsFactory) -> None:
    async def crashing(peer: str, request: JobRequest) -> AsyncIterator[JobResponse]:
        yield JobAccepted()
        raise RuntimeError("worker died")

    async with running_hosts(2) as (provider, client):
        serve_jobs(provider, crashing)
        await client.connect(provider.addrs[0])
        outcome = await JobClient(client).request_job(provider.peer_id, make_request())
        assert outcome == JobFailed("internal", "provider error")


async def test_cannot_wait_forever_on_a_silent_provider(running_hosts: HostsFactory) -> None:
    async with running_hosts(2) as (provider, client):

        async def silent(stream: object) -> None:
            await asyncio.sleep(30)

        provider.set_stream_handler(JOB_PROTOCOL, silent)  # type: ignore[arg-type]
        await client.connect(provider.addrs[0])
        started = time.monotonic()
        with pytest.raises(PeerTimeout, match="sent nothing"):
            await JobClient(client, read_timeout_s=1.0).request_job(provider.peer_id, make_request())
        assert time.monotonic() - started < 5


async def test_slow_job_stays_alive_through_keepalive_progress(running_hosts: HostsFactory) -> None:
    async def slow(peer: str, request: JobRequest) -> AsyncIterator[JobResponse]:
        yield JobAccepted()
        await asyncio.sleep(2.5)
        async for item in echo_handler(peer, request):
            if isinstance(item, JobResult):
                yield item

    async with running_hosts(2) as (provider, client):
        serve_jobs(provider, slow, keepalive_s=0.3)
        await client.connect(provider.addrs[0])
        outcome = await JobClient(client, read_timeout_s=1.0).request_job(provider.peer_id, make_request())
        assert isinstance(outcome, JobResult)


async def test_cannot_send_a_job_past_its_deadline(running_hosts: HostsFactory) -> None:
    async with running_hosts(2) as (provider, client):
        serve_jobs(provider, echo_handler)
        with pytest.raises(P2PError, match="past its deadline"):
            await JobClient(client).request_job(provider.peer_id, make_request(deadline_s=-1))


async def test_job_outliving_its_deadline_times_out(running_hosts: HostsFactory) -> None:
    async def endless(peer: str, request: JobRequest) -> AsyncIterator[JobResponse]:
        yield JobAccepted()
        while True:
            await asyncio.sleep(0.2)
            yield JobProgress("running", 0.1)

    async with running_hosts(2) as (provider, client):
        serve_jobs(provider, endless)
        await client.connect(provider.addrs[0])
        with pytest.raises(PeerTimeout, match="did not finish"):
            await JobClient(client).request_job(provider.peer_id, make_request(deadline_s=1.5))


async def test_unknown_peer_gives_clear_error(running_hosts: HostsFactory) -> None:
    async with running_hosts(1) as (client,):
        async with running_hosts(1) as (gone,):
            peer = gone.peer_id
        with pytest.raises(P2PError):
            await JobClient(client).request_job(peer, make_request())


async def test_handler_that_breaks_the_order_is_reported_cleanly(running_hosts: HostsFactory) -> None:
    async def ends_early(peer: str, request: JobRequest) -> AsyncIterator[JobResponse]:
        yield JobAccepted()

    async def progress_first(peer: str, request: JobRequest) -> AsyncIterator[JobResponse]:
        yield JobProgress("loading", 0.1)

    async with running_hosts(3) as (early, unordered, client):
        serve_jobs(early, ends_early)
        serve_jobs(unordered, progress_first)
        jobs = JobClient(client)
        for provider in (early, unordered):
            await client.connect(provider.addrs[0])
        assert await jobs.request_job(early.peer_id, make_request()) == JobFailed(
            "internal", "provider gave no result"
        )
        assert await jobs.request_job(unordered.peer_id, make_request()) == JobRejected(
            "internal", "provider error"
        )


async def test_client_going_away_stops_the_provider_handler(running_hosts: HostsFactory) -> None:
    closed = asyncio.Event()

    async def long_job(peer: str, request: JobRequest) -> AsyncIterator[JobResponse]:
        try:
            yield JobAccepted()
            while True:
                yield JobProgress("running", 0.5)
                await asyncio.sleep(0.1)
        finally:
            closed.set()

    async with running_hosts(1) as (provider,):
        serve_jobs(provider, long_job)
        async with running_hosts(1) as (client,):
            await client.connect(provider.addrs[0])
            job = asyncio.create_task(JobClient(client).request_job(provider.peer_id, make_request()))
            await asyncio.sleep(0.5)
            job.cancel()
        await asyncio.wait_for(closed.wait(), 10)


@pytest.mark.xfail(
    strict=False,
    reason="known intermittent defect: under heavy load the provider sometimes misses the client's "
    "reset of a silent job's stream until its next keepalive (py-libp2p's yamux reads a reset as a "
    "clean end of stream)",
)
async def test_client_leaving_a_silent_job_stops_its_handler_at_once(running_hosts: HostsFactory) -> None:
    """The handler has nothing to say while its job runs (no progress, no keepalive due for a
    minute): the provider still learns the client left as soon as it resets the stream, and
    cancels the handler where it waits."""
    running, stopped = asyncio.Event(), asyncio.Event()

    async def silent(peer: str, request: JobRequest) -> AsyncIterator[JobResponse]:
        yield JobAccepted()
        yield JobProgress("running", 0.0)
        try:
            running.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopped.set()
            raise
        yield JobFailed("never", "never reached")

    async with running_hosts(2) as (provider, client):
        serve_jobs(provider, silent, keepalive_s=60.0)
        await client.connect(provider.addrs[0])
        job = asyncio.create_task(JobClient(client).request_job(provider.peer_id, make_request()))
        await asyncio.wait_for(running.wait(), 10)
        left = time.monotonic()
        job.cancel()
        await asyncio.wait_for(stopped.wait(), 10)
        assert time.monotonic() - left < 5  # not the 60 s keepalive


async def test_handler_learns_whether_its_result_left(running_hosts: HostsFactory) -> None:
    """A handler is resumed after its last answer was written, and closed at it otherwise."""
    outcomes: list[str] = []
    ended = asyncio.Event()

    async def telling(peer: str, request: JobRequest) -> AsyncIterator[JobResponse]:
        handed_over = False
        try:
            async for item in echo_handler(peer, request):
                yield item
            handed_over = True
        finally:
            outcomes.append("left" if handed_over else "kept")
            ended.set()

    async with running_hosts(2) as (provider, client):
        serve_jobs(provider, telling)
        await client.connect(provider.addrs[0])
        outcome = await JobClient(client).request_job(provider.peer_id, make_request())
        assert isinstance(outcome, JobResult)
        await asyncio.wait_for(ended.wait(), 10)
        assert outcomes == ["left"]
