"""`/gpunode/hold/1`: request → queued? → ready | refused, then the client closes (node.scheduler.holds).

The stream stays open while the hold waits and while its slot is kept: a client that closes or
resets it gives the hold up, and the provider's handler is stopped at once (its `finally` gives
the place or the slot back). After `ready` the provider keeps the slot until the job arrives over
`/gpunode/job/1`, the client closes the stream, or the slot's time runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from node.errors import P2PError, PeerTimeout, ProtocolViolation
from node.logging import get_logger
from node.p2p.host import P2PHost
from node.p2p.job_messages import (
    HOLD_PROTOCOL,
    HoldQueued,
    HoldReady,
    HoldRequest,
    HoldResponse,
    JobRejected,
    decode_hold_request,
    decode_hold_response,
    encode_hold_request,
    encode_hold_response,
)
from node.p2p.stream import P2PStream

log = get_logger(__name__)

HoldHandler = Callable[[str, HoldRequest], AsyncIterator[HoldResponse]]

# The client sends its request at once.
REQUEST_WAIT_S = 10.0


def serve_holds(host: P2PHost, handler: HoldHandler) -> None:
    """Answer `/gpunode/hold/1` with `handler(peer, request)`: HoldQueued at most once, then
    HoldReady or JobRejected, after which it waits as long as it keeps the slot."""

    async def on_stream(stream: P2PStream) -> None:
        try:
            raw = await stream.read_frame(REQUEST_WAIT_S)
        except PeerTimeout:
            return
        if raw is None:
            return
        try:
            request = decode_hold_request(raw)
        except ProtocolViolation as exc:
            with contextlib.suppress(P2PError):
                await stream.write_frame(encode_hold_response(JobRejected("malformed", str(exc))))
            return
        gone: asyncio.Future[Any] = asyncio.ensure_future(stream.read_frame(float("inf")))
        responses = handler(stream.remote_peer, request)
        try:
            while True:
                following = asyncio.ensure_future(anext(responses))
                await asyncio.wait({following, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not following.done():
                    # The client closed or reset its side, or said more than it may: given up.
                    following.cancel()
                    await asyncio.wait({following})
                    return
                try:
                    response = following.result()
                except StopAsyncIteration:
                    return
                await stream.write_frame(encode_hold_response(response))
        except P2PError as exc:
            log.info("hold_stream_lost", job_id=request.job_id.hex(), peer=stream.remote_peer, error=str(exc))
        finally:
            await responses.aclose()  # type: ignore[attr-defined]
            gone.cancel()
            await asyncio.wait({gone})
            if not gone.cancelled():
                gone.exception()  # a reset: nothing more to do with it

    host.set_stream_handler(HOLD_PROTOCOL, on_stream)


class Hold:
    """A hold asked of one provider: its answers, in order, and `close()` to give it up (or to end
    it once the job was accepted)."""

    def __init__(self, stream: P2PStream) -> None:
        self._stream = stream
        self.peer = stream.remote_peer

    @classmethod
    async def ask(cls, host: P2PHost, peer: str, request: HoldRequest) -> Hold:
        stream = await host.open_stream(peer, HOLD_PROTOCOL)
        hold = cls(stream)
        try:
            await stream.write_frame(encode_hold_request(request))
        except BaseException:
            await hold.close()
            raise
        return hold

    async def next(self, timeout_s: float) -> HoldResponse:
        """The provider's next answer; `PeerTimeout` after `timeout_s`, `P2PError` if it left."""
        raw = await self._stream.read_frame(timeout_s)
        if raw is None:
            raise P2PError(f"provider {self.peer} closed the hold stream", hint="it stopped or restarted")
        response = decode_hold_response(raw)
        if not isinstance(response, HoldQueued | HoldReady | JobRejected):
            raise ProtocolViolation(f"provider {self.peer} sent {type(response).__name__} on a hold")
        return response

    async def close(self) -> None:
        with contextlib.suppress(P2PError):
            await self._stream.reset()
