"""The trio⇄asyncio bridge: py-libp2p runs under `trio.run` in its own thread; the node is asyncio.

Calls go asyncio→trio through the trio token (`run_sync_soon`), results come back through
`loop.call_soon_threadsafe`. A credit semaphore bounds the calls in flight so a burst on the
asyncio side queues there, with back-pressure, instead of flooding the trio run queue.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import Any, TypeVar

import trio

from node.errors import P2PError
from node.logging import get_logger
from node.p2p.errors import HostShuttingDown

T = TypeVar("T")
log = get_logger(__name__)

# Enough for hundreds of concurrent streams; each credit is one pending call, not one stream.
DEFAULT_CREDITS = 1024

Serve = Callable[["TrioBridge"], AbstractAsyncContextManager[None]]


class TrioBridge:
    """A trio event loop in a dedicated thread, driven from an asyncio loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, credits: int = DEFAULT_CREDITS) -> None:
        self._loop = loop
        self._credits = asyncio.Semaphore(credits)
        self._token: trio.lowlevel.TrioToken | None = None
        self._calls: trio.Nursery | None = None
        self._stop: trio.Event | None = None

    @classmethod
    @asynccontextmanager
    async def running(cls, serve: Serve, *, name: str = "gpunode-p2p") -> AsyncIterator[TrioBridge]:
        """Start the trio thread, enter `serve(bridge)` inside it, and stop both on exit."""
        bridge = cls(asyncio.get_running_loop())
        ready: asyncio.Future[None] = bridge._loop.create_future()
        done: asyncio.Future[None] = bridge._loop.create_future()
        thread = threading.Thread(
            target=bridge._thread_main, args=(serve, ready, done), name=name, daemon=True
        )
        thread.start()
        try:
            await ready
            yield bridge
        finally:
            bridge._request_stop()
            await asyncio.shield(done)
            await asyncio.to_thread(thread.join)

    def _thread_main(self, serve: Serve, ready: asyncio.Future[None], done: asyncio.Future[None]) -> None:
        try:
            trio.run(self._trio_main, serve, ready)
        except BaseException as exc:  # the asyncio side must learn of any failure, whatever it is
            log.error("p2p_thread_failed", error=repr(exc), exc_info=exc)
            self._settle(ready, exc=exc)
            self._settle(done, exc=exc)
            return
        self._settle(done, result=None)

    async def _trio_main(self, serve: Serve, ready: asyncio.Future[None]) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with serve(self), trio.open_nursery() as calls:
            self._calls = calls
            self._settle(ready, result=None)
            await self._stop.wait()
            self._calls = None
            calls.cancel_scope.cancel()

    def _request_stop(self) -> None:
        if self._token is None or self._stop is None:
            return
        with suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._stop.set)

    def _settle(
        self, fut: asyncio.Future[Any], *, result: Any = None, exc: BaseException | None = None
    ) -> None:
        def settle() -> None:
            if fut.done():
                return
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)

        # A closed asyncio loop raises RuntimeError: then nobody is left to tell.
        with suppress(RuntimeError):
            self._loop.call_soon_threadsafe(settle)

    # asyncio → trio ---------------------------------------------------------------------------

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `await fn(*args)` in the trio thread; cancelling the caller cancels it there too."""
        async with self._credits:
            fut: asyncio.Future[T] = self._loop.create_future()
            scope = trio.CancelScope()
            self._post(lambda: self._start_call(fn, args, fut, scope))
            try:
                return await fut
            except asyncio.CancelledError:
                self._post(scope.cancel, quiet=True)
                raise

    def call_soon(self, fn: Callable[..., object], *args: Any) -> None:
        """Run synchronous `fn(*args)` in the trio thread, without waiting."""
        self._post(lambda: fn(*args))

    def _post(self, fn: Callable[[], object], *, quiet: bool = False) -> None:
        token = self._token
        try:
            if token is None:
                raise trio.RunFinishedError
            token.run_sync_soon(fn)
        except trio.RunFinishedError:
            if not quiet:
                raise P2PError("the p2p host is not running", hint="start it with P2PHost.start()") from None

    def _start_call(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        fut: asyncio.Future[T],
        scope: trio.CancelScope,
    ) -> None:
        if self._calls is None:
            self._settle(fut, exc=HostShuttingDown())
            return
        try:
            self._calls.start_soon(self._run_call, fn, args, fut, scope)
        except RuntimeError:
            # The nursery closed on a failure of the host that is on its way out of `trio.run`:
            # raising here, in a callback of Trio's, would hide that failure behind Trio's own.
            self._settle(fut, exc=HostShuttingDown())

    async def _run_call(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        fut: asyncio.Future[T],
        scope: trio.CancelScope,
    ) -> None:
        with scope:
            try:
                result = await fn(*args)
            except trio.Cancelled:
                self._settle(fut, exc=HostShuttingDown())
                raise
            except Exception as exc:
                self._settle(fut, exc=exc)
                return
            self._settle(fut, result=result)

    # trio → asyncio ---------------------------------------------------------------------------

    async def to_asyncio(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """From the trio thread: run `await fn(*args)` on the asyncio loop and wait for it."""
        cf: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(_invoke(fn, args), self._loop)
        finished = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def wake(_: object) -> None:
            with suppress(trio.RunFinishedError):
                token.run_sync_soon(finished.set)

        cf.add_done_callback(wake)
        try:
            await finished.wait()
        except trio.Cancelled:
            cf.cancel()
            raise
        return cf.result()

    def to_asyncio_soon(self, fn: Callable[..., object], *args: Any) -> None:
        """From the trio thread: run synchronous `fn(*args)` on the asyncio loop, without waiting."""
        with suppress(RuntimeError):
            self._loop.call_soon_threadsafe(fn, *args)


async def _invoke(fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
    return await fn(*args)
