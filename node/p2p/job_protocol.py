"""`/gpunode/job/1`: request → accepted/rejected → progress* → result/failed, over framed streams.

A client keeps finished job streams open and reuses them for the next job to the same peer, so a
job on a warm connection costs one round trip instead of a stream negotiation as well. The
provider answers jobs on one stream one after the other; concurrency comes from more streams.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import trio

from node.errors import P2PError, PeerTimeout, ProtocolViolation
from node.logging import get_logger
from node.p2p.host import P2PHost
from node.p2p.job_messages import (
    JOB_PROTOCOL,
    JobAccepted,
    JobFailed,
    JobOutcome,
    JobProgress,
    JobRejected,
    JobRequest,
    JobResponse,
    JobResult,
    JobTokens,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from node.p2p.stream import FramedStream, InboundFrames, P2PStream

log = get_logger(__name__)

JobHandler = Callable[[str, JobRequest], AsyncIterator[JobResponse]]
JobEvent = JobAccepted | JobProgress | JobTokens
ProgressCallback = Callable[[JobEvent], None]

# A provider closes a job stream that stays idle this long; clients stop reusing one well before.
SERVER_IDLE_S = 60.0
CLIENT_REUSE_S = 30.0
# Idle job streams kept per provider for reuse.
POOL_PER_PEER = 8


# provider side --------------------------------------------------------------------------------


def serve_jobs(host: P2PHost, handler: JobHandler, *, keepalive_s: float | None = None) -> None:
    """Answer `/gpunode/job/1` with `handler(peer, request)`, an async iterator of responses.

    The handler yields JobAccepted or JobRejected first, then JobProgress items, then one
    JobResult or JobFailed. While it is busy, a progress frame goes out every `keepalive_s`
    (default: half the read timeout) so the client can tell a slow job from a dead provider.
    """
    interval = keepalive_s if keepalive_s is not None else host.read_timeout_s / 2

    async def on_stream(stream: P2PStream) -> None:
        inbound = InboundFrames(stream)
        try:
            while True:
                try:
                    raw = await inbound.next_frame(SERVER_IDLE_S)
                except PeerTimeout:
                    return
                if raw is None:
                    return
                try:
                    request = decode_request(raw)
                except ProtocolViolation as exc:
                    await stream.write_frame(encode_response(JobRejected("malformed", str(exc))))
                    return
                if not await _answer(handler, stream, request, interval, inbound):
                    return
        finally:
            await inbound.close()

    host.set_stream_handler(JOB_PROTOCOL, on_stream)


async def _answer(
    handler: JobHandler, stream: P2PStream, request: JobRequest, keepalive_s: float, inbound: InboundFrames
) -> bool:
    """Stream the handler's answers to one request; False when the stream cannot be reused.

    A client that resets the stream while its job runs has gone: the handler is stopped at once
    (cancelled where it waits), not when its next answer fails to leave. Once its last answer has
    been written, the handler is resumed once more, so it can tell a result that left from one
    that did not (closed at its last `yield` instead)."""
    responses = handler(stream.remote_peer, request)
    order = _ResponseOrder()
    pending: asyncio.Future[JobResponse] | None = None
    job = request.job_id.hex()
    try:
        last_fraction = 0.0
        while not order.finished:
            if pending is None:
                pending = asyncio.ensure_future(anext(responses))
            while not await _ready_or_gone(pending, inbound, keepalive_s):
                if order.accepted:
                    await stream.write_frame(encode_response(JobProgress("running", last_fraction)))
            frames: list[bytes] = []
            # Answers the handler has ready at once (accepted, then running) go out in one write:
            # one trip to the p2p thread and one packet instead of one each.
            while pending is not None and pending.done():
                if frames and (pending.cancelled() or pending.exception() is not None):
                    break  # what the handler gave before it failed goes out first
                response = pending.result()
                pending = None
                order.check(response, "handler")
                if isinstance(response, JobProgress):
                    last_fraction = response.fraction
                frames.append(encode_response(response))
                if not order.finished:
                    pending = asyncio.ensure_future(anext(responses))
                    await asyncio.sleep(0)  # lets a handler with its next answer ready give it now
            await stream.write_frames(frames)
        with suppress(StopAsyncIteration):
            extra = await anext(responses)
            raise ProtocolViolation(f"handler sent {type(extra).__name__} after the job ended")
        return True
    except P2PError as exc:
        if isinstance(exc, ProtocolViolation) and not isinstance(exc, PeerTimeout):
            log.error("job_handler_broke_protocol", job_id=job, error=str(exc))
            await _give_up(stream, order, "provider error")
        else:
            log.info("job_stream_lost", job_id=job, peer=stream.remote_peer, error=str(exc))
        return False
    except StopAsyncIteration:
        log.error("job_handler_ended_early", job_id=job)
        await _give_up(stream, order, "provider gave no result")
        return False
    except Exception as exc:
        log.exception("job_handler_failed", job_id=job, error=str(exc))
        await _give_up(stream, order, "provider error")
        return False
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with suppress(BaseException):
                await pending
        await responses.aclose()  # type: ignore[attr-defined]


async def _ready_or_gone(pending: asyncio.Future[JobResponse], inbound: InboundFrames, wait_s: float) -> bool:
    """Wait up to `wait_s` for the handler's next answer: True once it is ready, False if it is
    not (time for a keepalive). Returns False at once when the client's side ends: py-libp2p's
    yamux reads a reset as an end of stream, and only a write tells the two apart (it fails on a
    reset stream), so the keepalive that follows is what finds a client that left."""
    watching = inbound.watch()
    if watching.done():
        _raise_if_reset(watching, inbound.peer)
        return bool((await asyncio.wait({pending}, timeout=wait_s))[0])
    either: set[asyncio.Future[Any]] = {pending, watching}
    await asyncio.wait(either, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
    if watching.done():
        _raise_if_reset(watching, inbound.peer)
    return pending.done()


def _raise_if_reset(read: asyncio.Future[bytes | None], peer: str) -> None:
    if not read.cancelled() and read.exception() is not None:
        raise P2PError(f"client {peer} reset the job stream while its job ran", hint="it left")


async def _give_up(stream: P2PStream, order: _ResponseOrder, reason: str) -> None:
    """Tell the client the job is over, in the one form still legal at this point."""
    if order.finished:
        return
    final = JobFailed("internal", reason) if order.accepted else JobRejected("internal", reason)
    with suppress(P2PError):
        await stream.write_frame(encode_response(final))


@dataclass
class _ResponseOrder:
    """The legal order of responses: (accepted, progress*, result|failed) | rejected."""

    accepted: bool = False
    finished: bool = False

    def check(self, response: JobResponse, who: str) -> None:
        if self.finished:
            raise ProtocolViolation(f"{who} sent {type(response).__name__} after the job ended")
        if isinstance(response, JobAccepted):
            if self.accepted:
                raise ProtocolViolation(f"{who} accepted the job twice")
            self.accepted = True
            return
        if isinstance(response, JobRejected):
            if self.accepted:
                raise ProtocolViolation(f"{who} rejected a job it had accepted")
            self.finished = True
            return
        if not self.accepted:
            raise ProtocolViolation(f"{who} sent {type(response).__name__} before accepting the job")
        if isinstance(response, JobResult | JobFailed):
            self.finished = True


# client side ----------------------------------------------------------------------------------


@dataclass
class _Pooled:
    stream: FramedStream
    idle_since: float = field(default_factory=time.monotonic)


class JobClient:
    """Sends jobs to providers over `/gpunode/job/1`, reusing finished streams per provider."""

    def __init__(
        self, host: P2PHost, *, job_timeout_s: float | None = None, read_timeout_s: float | None = None
    ) -> None:
        self._host = host
        self.job_timeout_s = job_timeout_s if job_timeout_s is not None else host.job_timeout_s
        self.read_timeout_s = read_timeout_s if read_timeout_s is not None else host.read_timeout_s
        self._idle: dict[str, list[_Pooled]] = {}  # touched only in the p2p thread

    async def request_job(
        self, peer: str, request: JobRequest, on_progress: ProgressCallback | None = None
    ) -> JobOutcome:
        """Send `request` to `peer` and wait for the outcome.

        Rejections and failures are values; `PeerTimeout` when the provider stays silent longer
        than the read timeout or the job outlives its deadline, `P2PError` when it goes away.
        """
        payload = encode_request(request)
        budget = min(self.job_timeout_s, max(0.0, request.deadline_ms / 1000 - time.time()))
        if budget <= 0:
            raise P2PError(f"job {request.job_id.hex()} is past its deadline", hint="set a later deadline")
        loop = asyncio.get_running_loop()

        def notify(event: JobEvent) -> None:
            if on_progress is not None:
                loop.call_soon_threadsafe(on_progress, event)

        outcome = await self._host.run_in_p2p_thread(self._exchange, peer, payload, budget, notify)
        return outcome  # type: ignore[return-value]

    async def _exchange(
        self, peer: str, payload: bytes, budget: float, notify: Callable[[JobEvent], None]
    ) -> JobOutcome:
        with trio.move_on_after(budget):
            stream, reused = await self._checkout(peer)
            try:
                return await self._converse_once(peer, stream, payload, notify, fresh=not reused)
            except _StaleStream:
                # The provider dropped a pooled stream before reading our request; a fresh
                # stream is safe because the request was never seen.
                stream = await self._host.open_trio_stream(peer, JOB_PROTOCOL)
                return await self._converse_once(peer, stream, payload, notify, fresh=True)
        raise PeerTimeout(f"provider {peer} did not finish the job within {budget:.1f} s")

    async def _converse_once(
        self,
        peer: str,
        stream: FramedStream,
        payload: bytes,
        notify: Callable[[JobEvent], None],
        *,
        fresh: bool = False,
    ) -> JobOutcome:
        reusable = False
        try:
            outcome = await self._converse(stream, payload, notify, may_be_stale=not fresh)
            reusable = True
            return outcome
        finally:
            with trio.CancelScope(shield=True):
                if reusable:
                    await self._checkin(peer, stream)
                else:
                    await stream.reset()

    async def _converse(
        self,
        stream: FramedStream,
        payload: bytes,
        notify: Callable[[JobEvent], None],
        *,
        may_be_stale: bool,
    ) -> JobOutcome:
        order = _ResponseOrder()
        try:
            await stream.write_frames([payload], self.read_timeout_s)
            raw = await stream.read_frame(self.read_timeout_s)
        except PeerTimeout:
            raise
        except P2PError:
            if may_be_stale:
                raise _StaleStream from None
            raise
        if raw is None and may_be_stale:
            raise _StaleStream
        while True:
            if raw is None:
                raise P2PError(
                    f"provider {stream.remote_peer} closed the job stream without a result",
                    hint="the provider stopped or crashed; try another one",
                )
            response = decode_response(raw)
            order.check(response, f"provider {stream.remote_peer}")
            if isinstance(response, JobResult | JobRejected | JobFailed):
                return response
            notify(response)
            raw = await stream.read_frame(self.read_timeout_s)

    async def _checkout(self, peer: str) -> tuple[FramedStream, bool]:
        idle = self._idle.get(peer, [])
        while idle:
            pooled = idle.pop()
            if time.monotonic() - pooled.idle_since < CLIENT_REUSE_S and not pooled.stream.raw.is_closed:
                return pooled.stream, True
            await pooled.stream.close()
        return await self._host.open_trio_stream(peer, JOB_PROTOCOL), False

    async def _checkin(self, peer: str, stream: FramedStream) -> None:
        idle = self._idle.setdefault(peer, [])
        if len(idle) < POOL_PER_PEER:
            idle.append(_Pooled(stream))
        else:
            await stream.close()


class _StaleStream(Exception):
    """A reused stream turned out dead before the provider read anything from it."""
