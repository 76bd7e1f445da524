"""`/gpunode/hold/1`: request → queued? → ready | refused … release → released (node.scheduler.holds).

The stream stays open while the hold waits and while its slot is kept. The client ends a hold
with `release`: the provider's handler is stopped at once (its `finally` gives the place or the
slot back, unless the job took it), and the provider answers `released` after anything it sent
before, so the stream is clean and carries the client's next hold to that provider: a hold on a
warm stream costs one round trip, not a stream negotiation as well. A client that closes or
resets the stream gives its hold up the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from node.errors import P2PError, ProtocolViolation
from node.logging import get_logger
from node.p2p.host import P2PHost
from node.p2p.job_messages import (
    HOLD_PROTOCOL,
    HoldRelease,
    HoldReleased,
    HoldRequest,
    HoldResponse,
    JobRejected,
    decode_hold_frame,
    decode_hold_response,
    encode_hold_frame,
    encode_hold_response,
)
from node.p2p.stream import InboundFrames, P2PStream

log = get_logger(__name__)

HoldHandler = Callable[[str, HoldRequest], AsyncIterator[HoldResponse]]

# A provider closes a hold stream idle this long; clients stop reusing one well before.
SERVER_IDLE_S = 60.0
CLIENT_REUSE_S = 30.0
# Idle hold streams kept per provider, and how long a release waits for its answer.
POOL_PER_PEER = 8
RELEASE_WAIT_S = 5.0


# provider side --------------------------------------------------------------------------------


def serve_holds(host: P2PHost, handler: HoldHandler) -> None:
    """Answer `/gpunode/hold/1` with `handler(peer, request)`: HoldQueued at most once, then
    HoldReady or JobRejected, after which it waits as long as it keeps the slot."""

    async def on_stream(stream: P2PStream) -> None:
        inbound = InboundFrames(stream)
        try:
            while True:
                try:
                    raw = await inbound.next_frame(SERVER_IDLE_S)
                except P2PError:  # silent too long (PeerTimeout), or gone
                    return
                if raw is None:
                    return
                try:
                    frame = decode_hold_frame(raw)
                except ProtocolViolation as exc:
                    with contextlib.suppress(P2PError):
                        await stream.write_frame(encode_hold_response(JobRejected("malformed", str(exc))))
                    return
                if isinstance(frame, HoldRelease):  # nothing to release: still acknowledged
                    await stream.write_frame(encode_hold_response(HoldReleased()))
                    continue
                if not await _serve_one(handler, stream, inbound, frame):
                    return
        except P2PError as exc:
            log.info("hold_stream_lost", peer=stream.remote_peer, error=str(exc))
        finally:
            await inbound.close()

    host.set_stream_handler(HOLD_PROTOCOL, on_stream)


async def _serve_one(
    handler: HoldHandler, stream: P2PStream, inbound: InboundFrames, request: HoldRequest
) -> bool:
    """One hold, until the client releases it (True: the stream carries the next) or leaves."""
    responses = handler(stream.remote_peer, request)
    try:
        while True:
            following: asyncio.Future[HoldResponse] = asyncio.ensure_future(anext(responses))
            watching: asyncio.Future[Any] = inbound.watch()
            await asyncio.wait({following, watching}, return_when=asyncio.FIRST_COMPLETED)
            if not following.done():
                following.cancel()  # released, or the client left: the handler gives the hold up
                await asyncio.wait({following})
                break
            try:
                response = following.result()
            except StopAsyncIteration:
                break  # refused, or its slot's time ran out: the client still ends the hold
            await stream.write_frame(encode_hold_response(response))
    finally:
        await responses.aclose()  # type: ignore[attr-defined]
    raw = await inbound.next_frame(SERVER_IDLE_S)
    if raw is None or not isinstance(decode_hold_frame(raw), HoldRelease):
        return False
    await stream.write_frame(encode_hold_response(HoldReleased()))
    return True


# client side ----------------------------------------------------------------------------------


class Hold:
    """A hold asked of one provider: its answers in order; `release()` ends it and keeps the
    stream for the next hold, `close()` ends it by resetting the stream."""

    def __init__(self, client: HoldClient, stream: P2PStream) -> None:
        self._client = client
        self._stream = stream
        self.peer = stream.remote_peer
        self._ended = False

    async def next(self, timeout_s: float) -> HoldResponse:
        """The provider's next answer; `PeerTimeout` after `timeout_s`, `P2PError` if it left."""
        raw = await self._stream.read_frame(timeout_s)
        if raw is None:
            raise P2PError(f"provider {self.peer} closed the hold stream", hint="it stopped or restarted")
        response = decode_hold_response(raw)
        if isinstance(response, HoldReleased):
            raise ProtocolViolation(f"provider {self.peer} released a hold nobody released")
        return response

    async def release(self) -> None:
        """End the hold; the stream goes back to the pool once the provider says it ended."""
        if self._ended:
            return
        self._ended = True
        try:
            await self._stream.write_frame(encode_hold_frame(HoldRelease()))
            deadline = time.monotonic() + RELEASE_WAIT_S
            while True:  # a ready or queued sent before the release arrived comes first
                raw = await self._stream.read_frame(max(0.0, deadline - time.monotonic()))
                if isinstance(decode_hold_response(raw or b""), HoldReleased):
                    break
        except (P2PError, ProtocolViolation):
            await _reset(self._stream)
            return
        self._client.checkin(self.peer, self._stream)

    async def close(self) -> None:
        if not self._ended:
            self._ended = True
            await _reset(self._stream)


@dataclass
class _Pooled:
    stream: P2PStream
    idle_since: float = field(default_factory=time.monotonic)


class HoldClient:
    """Asks providers for holds over `/gpunode/hold/1`, reusing released streams per provider."""

    def __init__(self, host: P2PHost) -> None:
        self._host = host
        self._idle: dict[str, list[_Pooled]] = {}

    async def ask(self, peer: str, request: HoldRequest) -> Hold:
        payload = encode_hold_frame(request)
        idle = self._idle.get(peer, [])
        while idle:
            pooled = idle.pop()
            if time.monotonic() - pooled.idle_since >= CLIENT_REUSE_S:
                await _reset(pooled.stream)
                continue
            try:
                await pooled.stream.write_frame(payload)
            except P2PError:
                await _reset(pooled.stream)  # the provider dropped it: a fresh one is safe
                continue
            return Hold(self, pooled.stream)
        stream = await self._host.open_stream(peer, HOLD_PROTOCOL)
        try:
            await stream.write_frame(payload)
        except BaseException:
            await _reset(stream)
            raise
        return Hold(self, stream)

    def checkin(self, peer: str, stream: P2PStream) -> None:
        idle = self._idle.setdefault(peer, [])
        if len(idle) < POOL_PER_PEER:
            idle.append(_Pooled(stream))
        else:
            task: asyncio.Future[Any] = asyncio.ensure_future(_reset(stream))
            task.add_done_callback(lambda t: t.exception())


async def _reset(stream: P2PStream) -> None:
    with contextlib.suppress(P2PError):
        await stream.reset()
