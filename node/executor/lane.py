"""One (model, device) lane: its queue, its warm workers, the batcher between them.

Every job carries the caller's deadline from the moment it is queued and fails with `JobTimedOut`
at that deadline wherever it is (queued, batched, running): no worker, honest or not, holds a
caller past it. A caller's deadline never kills a worker, though: a batch runs under the
provider's `job_timeout_s` alone, and only that ceiling kills a worker (with its batch). Were a
caller's deadline to kill it, a client sending jobs with tiny deadlines would make every warm worker
start cold again, at no cost to itself and at the cost of every other client's queued jobs; letting
a batch finish costs the provider no more than any job may (the ceiling), and a job whose deadline
passes while queued never runs at all. A batch that fails is split in halves rather than rerun job
by job, so one bad input costs about 2·log2(batch) runs, not one per job of its batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.config import ExecutorSettings
from node.errors import ExecutorError
from node.executor.errors import JobTimedOut, ModelFailed, WorkerCrashed
from node.executor.manifest import ModelManifest
from node.executor.profile import ExecutionProfile
from node.executor.sandbox import Sandbox
from node.executor.wire import TensorPayload
from node.executor.worker_handle import WorkerHandle, describe_exit
from node.logging import get_logger

log = get_logger(__name__)
LaneOutput = tuple[bytes, ExecutionProfile, float]
# A worker that dies before serving anything (not killed for a job's deadline) waits this long, then
# twice as long after each such death in a row, before it is replaced: a model that exits right
# after READY must not make the node start sandboxes in a loop.
_RESTART_BACKOFF_S = 0.25
_RESTART_BACKOFF_MAX_S = 30.0


@dataclass
class _Job:
    data: bytes
    payload: TensorPayload
    deadline: float  # on the event loop's clock
    timeout_s: float
    client: str | None  # the tenant; None: a job of its own, batched with no other
    on_tokens: Callable[[str], None] | None = None  # text a generation streams as it comes
    stop: asyncio.Event = field(default_factory=asyncio.Event)  # set: end a generation with what it made
    done: asyncio.Future[LaneOutput] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def left_s(self) -> float:
        return self.deadline - asyncio.get_running_loop().time()

    def timed_out(self) -> JobTimedOut:
        return JobTimedOut(
            f"job did not finish within its limit of {self.timeout_s:g} s",
            hint="send a smaller input or allow a longer deadline (the provider's job_timeout_s caps it)",
        )


def _stop_if_cancelled(stop: asyncio.Event) -> Callable[[asyncio.Future[LaneOutput]], None]:
    def callback(done: asyncio.Future[LaneOutput]) -> None:
        if done.cancelled():
            stop.set()

    return callback


def _live_tokens(job: _Job) -> Callable[[str], None] | None:
    on_tokens = job.on_tokens
    if on_tokens is None:
        return None

    def sink(text: str) -> None:
        if not job.done.done():
            on_tokens(text)

    return sink


def _token_sink(batch: list[_Job]) -> Callable[[int, str], None] | None:
    if all(job.on_tokens is None for job in batch):
        return None

    def sink(index: int, text: str) -> None:
        job = batch[index]
        if job.on_tokens is not None and not job.done.done():
            job.on_tokens(text)

    return sink


class ModelLane:
    """Feeds queued jobs to idle warm workers, batching same-shaped jobs of batchable models."""

    def __init__(
        self,
        manifest: ModelManifest,
        model_dir: Path,
        settings: ExecutorSettings,
        sandbox: Sandbox,
        *,
        device: str,
        slots: Callable[[], int],
    ) -> None:
        self.manifest = manifest
        self._model_dir = model_dir
        self._settings = settings
        self._sandbox = sandbox
        self._device = device
        self._slots = slots
        self._queue: deque[_Job] = deque()
        self._retries: deque[list[_Job]] = deque()  # halves of failed batches, run before new jobs
        self._queued = asyncio.Event()
        self._idle: asyncio.Queue[WorkerHandle] = asyncio.Queue()
        self._workers: set[WorkerHandle] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        self._profile: ExecutionProfile | None = None
        self._broken: ExecutorError | None = None
        self._closing = False
        self._changed = asyncio.Event()  # set whenever a worker comes or goes
        self._failed_starts = 0  # workers in a row that died before serving a batch

    async def start(self) -> None:
        workers = await asyncio.gather(
            *(self._start_worker() for _ in range(self._settings.workers_per_model)), return_exceptions=True
        )
        failures = [w for w in workers if isinstance(w, BaseException)]
        for worker in workers:
            if isinstance(worker, WorkerHandle):
                self._adopt(worker)
        if failures and not self._workers:
            raise failures[0]
        self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch())

    def workers(self) -> list[WorkerHandle]:
        return list(self._workers)

    async def profile(self) -> ExecutionProfile:
        """The lane's execution profile, once a worker is up (after a crash, its replacement)."""
        while not self._workers:
            if self._broken is not None:
                raise self._broken
            self._changed.clear()
            await self._changed.wait()
        if self._profile is None:
            raise ExecutorError(f"model {self.manifest.name} has no worker up")
        return self._profile

    async def submit(
        self,
        data: bytes,
        payload: TensorPayload,
        timeout_s: float,
        client: str | None = None,
        on_tokens: Callable[[str], None] | None = None,
        stop: asyncio.Event | None = None,
    ) -> LaneOutput:
        if self._closing:
            raise ExecutorError("the executor is shutting down; the job did not run")
        if self._broken is not None and not self._workers:
            raise self._broken
        job = _Job(data, payload, asyncio.get_running_loop().time() + timeout_s, timeout_s, client, on_tokens)
        if stop is not None:
            job.stop = stop
        # A caller that goes away (cancelled, or its deadline passed) stops its generation too: it
        # does not run on to max_tokens for nobody.
        job.done.add_done_callback(_stop_if_cancelled(job.stop))
        self._queue.append(job)
        self._queued.set()
        try:
            async with asyncio.timeout_at(job.deadline):
                return await asyncio.shield(job.done)
        except TimeoutError:
            # Queued: no batch takes it now. Running: its batch goes on, under the provider's
            # ceiling, and the worker stays warm for the next job.
            job.done.cancel()
            raise job.timed_out() from None
        except asyncio.CancelledError:
            job.done.cancel()
            raise

    async def close(self) -> None:
        self._closing = True
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(
            *self._tasks, *([self._dispatcher] if self._dispatcher else []), return_exceptions=True
        )
        await asyncio.gather(*(worker.stop() for worker in self._workers), return_exceptions=True)
        shutdown = ExecutorError("the executor is shutting down; the job did not run")
        self._fail([*self._queue, *(job for batch in self._retries for job in batch)], shutdown)
        self._queue.clear()
        self._retries.clear()

    async def _start_worker(self) -> WorkerHandle:
        return await WorkerHandle.start(
            self._sandbox,
            self.manifest,
            self._model_dir,
            self._settings,
            device=self._device,
            slot=self._slots(),
        )

    def _adopt(self, worker: WorkerHandle) -> None:
        self._workers.add(worker)
        self._changed.set()
        self._profile = self._profile or worker.profile
        # A generation model's worker decodes up to max_batch requests together: one free slot each.
        for _ in range(self._settings.max_batch if self.manifest.task == "generate" else 1):
            self._idle.put_nowait(worker)
        self._spawn(self._watch(worker))

    async def _watch(self, worker: WorkerHandle) -> None:
        # Whatever ends a worker (a job's timeout, a crash, an outside kill), the lane replaces it.
        code = await worker.wait_exit()
        if self._closing:
            return
        self._workers.discard(worker)
        log.warning("worker_exited", model=self.manifest.name, status=describe_exit(code))
        if worker.batches_served or worker.lost_to_timeout:
            self._failed_starts = 0
        else:
            self._failed_starts += 1
            delay = _RESTART_BACKOFF_S * 2 ** (self._failed_starts - 1)
            await asyncio.sleep(min(delay, _RESTART_BACKOFF_MAX_S))
        await self._restart()

    async def _dispatch(self) -> None:
        while True:
            worker = await self._idle.get()
            while not self._queue and not self._retries:
                self._queued.clear()
                await self._queued.wait()
            if not worker.alive:  # died while idle; its replacement will come through the queue
                continue
            batch = self._retries.popleft() if self._retries else await self._take_batch()
            batch = [job for job in batch if not job.done.done()]  # callers gone or timed out
            if batch:
                self._spawn(self._run(worker, batch))
            else:
                self._idle.put_nowait(worker)

    async def _take_batch(self) -> list[_Job]:
        first = self._queue.popleft()
        while first.done.done() and self._queue:  # its caller gave up (cancelled) while it queued
            first = self._queue.popleft()
        if not self.manifest.batchable or self._settings.max_batch == 1:
            return [first]
        batch = [first, *self._matching(first, self._settings.max_batch - 1)]
        # Waiting only pays off when jobs are arriving together; a lone job goes straight out.
        if len(batch) > 1 and len(batch) < self._settings.max_batch and self._settings.max_batch_wait_ms > 0:
            deadline = time.perf_counter() + self._settings.max_batch_wait_ms / 1000
            while len(batch) < self._settings.max_batch and (left := deadline - time.perf_counter()) > 0:
                self._queued.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await self._queued.wait()
                batch += self._matching(first, self._settings.max_batch - len(batch))
        return batch

    def _matching(self, first: _Job, limit: int) -> list[_Job]:
        signature = first.payload.signature()
        # Code that is not ours sees a whole batch: a user program batches one client's jobs only.
        ours = self.manifest.format == "builtin"
        taken = [
            job
            for job in self._queue
            if not job.done.done()
            and job.payload.signature() == signature
            and (ours or (first.client is not None and job.client == first.client))
        ][:limit]
        for job in taken:
            self._queue.remove(job)
        return taken

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, worker: WorkerHandle, batch: list[_Job]) -> None:
        started = time.perf_counter()
        for job in batch:
            if job.left_s() <= 0:
                self._fail([job], job.timed_out())
        batch = [job for job in batch if not job.done.done()]
        if not batch:
            self._idle.put_nowait(worker)
            return
        if self.manifest.task == "generate":
            await self._run_generation(worker, batch[0])
            return
        try:
            # The provider's ceiling, not a caller's deadline: only the ceiling kills a worker.
            outputs = await worker.run_batch(
                [job.data for job in batch], self._settings.job_timeout_s, _token_sink(batch)
            )
        except ModelFailed as exc:
            self._idle.put_nowait(worker)
            self._split(batch, exc)
            return
        except (JobTimedOut, WorkerCrashed) as exc:
            log.warning("worker_lost", model=self.manifest.name, reason=str(exc))
            self._split(batch, exc)
            return
        except Exception as exc:  # a worker that breaks the protocol is not trusted again
            await worker.kill()
            self._split(batch, WorkerCrashed(f"worker broke the message protocol: {exc}"))
            return
        except asyncio.CancelledError:  # the lane is closing: no caller waits on a batch that is gone
            self._fail(batch, ExecutorError("the executor is shutting down; the job did not finish"))
            raise
        rows = sum(job.payload.batch_rows for job in batch)
        profile = worker.profile.with_batch(rows)
        self._idle.put_nowait(worker)
        for job, output in zip(batch, outputs, strict=True):
            if not job.done.done():
                job.done.set_result((output, profile, started))

    async def _run_generation(self, worker: WorkerHandle, job: _Job) -> None:
        """One generation in the worker's running batch; its slot is free again once it ends."""
        started = time.perf_counter()
        try:
            output, rows = await worker.generate(
                job.data, self._settings.job_timeout_s, _live_tokens(job), job.stop
            )
        except ExecutorError as exc:
            if worker.alive:
                self._idle.put_nowait(worker)
            self._fail([job], exc)
            return
        except asyncio.CancelledError:
            self._fail([job], ExecutorError("the executor is shutting down; the job did not finish"))
            raise
        self._idle.put_nowait(worker)
        if not job.done.done():
            # The receipt's profile says how many requests shared the batch: a lone request's
            # tokens are the ones a re-run alone reproduces bit for bit.
            job.done.set_result((output, worker.profile.with_batch(rows), started))

    def _split(self, batch: list[_Job], exc: ExecutorError) -> None:
        # One bad job must not fail the honest jobs batched with it, nor buy a rerun of each of
        # them: the halves run again (first, before new jobs) until the culprit is alone, and only
        # it gets the error. Jobs whose own deadline has passed fail now.
        live = []
        for job in batch:
            if job.done.done():  # its caller's deadline passed while it ran: already answered
                continue
            if job.left_s() > 0:
                live.append(job)
            else:
                self._fail([job], job.timed_out())
        if len(batch) == 1 or not live:
            self._fail(live, exc)
            return
        middle = (len(live) + 1) // 2
        self._retries.extendleft(half for half in (live[middle:], live[:middle]) if half)
        self._queued.set()

    def _fail(self, batch: list[_Job], exc: ExecutorError) -> None:
        for job in batch:
            if not job.done.done():
                job.done.set_exception(exc)

    async def _restart(self) -> None:
        try:
            self._adopt(await self._start_worker())
        except ExecutorError as exc:
            log.error("worker_restart_failed", model=self.manifest.name, reason=str(exc))
            self._broken = exc
            self._changed.set()
            if not self._workers:
                self._fail([*self._queue, *(job for batch in self._retries for job in batch)], exc)
                self._queue.clear()
                self._retries.clear()
