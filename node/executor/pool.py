"""The warm worker pool: one lane per (model, device), each with warm sandboxed workers and a batcher.

    async with ExecutorPool(settings, store) as pool:
        result = await pool.run(model_id, input_bytes)

Inputs are checked (size, format, fit to the model, and the value ranges our built-in models take)
before they are queued, off the event loop when they are large, so a bad input fails alone
before it can share a batch. Every job runs under `executor.job_timeout_s` at most: a caller's
deadline may shorten its wait, never extend it, and never kills a warm worker (`lane`). Batchable
models get dynamic batching: a free worker takes every queued job of the same shape, up to
`max_batch`, waiting up to `max_batch_wait_ms` for more only while jobs are arriving together.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from node.config import ExecutorSettings
from node.errors import ExecutorError
from node.executor.errors import InputTooLarge, InvalidInput, JobTimedOut, ModelFailed
from node.executor.hf_requests import parse_generation, parse_request
from node.executor.input_limits import check_builtin_values, scans_values
from node.executor.lane import ModelLane
from node.executor.manifest import ModelManifest, normalize_model_id
from node.executor.profile import ExecutionProfile
from node.executor.result import ExecutionResult
from node.executor.sandbox import Sandbox
from node.executor.sandbox_mode import create_sandbox
from node.executor.store import ModelStore
from node.executor.wire import TensorPayload, parse_payload
from node.logging import get_logger
from node.types import Hash32, sha256

log = get_logger(__name__)
_SLOTS = 2**16
_OFFLOAD_BYTES = 1 << 20
# A header over this is parsed in a thread; smaller ones cost less than the hop to one.
_OFFLOAD_HEADER_BYTES = 64 * 1024
_T = TypeVar("_T")


class ExecutorPool:
    """Runs jobs in warm sandboxed workers; `sandbox` defaults to the best mode that works here."""

    def __init__(
        self,
        settings: ExecutorSettings,
        store: ModelStore,
        *,
        sandbox: Sandbox | None = None,
        device: str = "cpu",
    ) -> None:
        self.settings = settings
        self.store = store
        self.device = device
        self._sandbox = sandbox
        self._owns_sandbox = sandbox is None
        self._lanes: dict[str, ModelLane] = {}  # only lanes whose start succeeded
        self._starting: dict[str, asyncio.Task[ModelLane]] = {}  # one start per model, shared
        # Random start: pools of other nodes on this host draw other uids (RLIMIT_NPROC is per uid).
        self._next_slot = secrets.randbelow(_SLOTS)
        self.ready = asyncio.Event()

    @property
    def sandbox(self) -> Sandbox:
        if self._sandbox is None or not self.ready.is_set():
            raise ExecutorError("the executor pool is not running", hint="use `async with ExecutorPool(...)`")
        return self._sandbox

    async def __aenter__(self) -> ExecutorPool:
        if self._sandbox is None:
            self._sandbox = await create_sandbox(self.settings)
        self.ready.set()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for starting in self._starting.values():
            starting.cancel()
        await asyncio.gather(*self._starting.values(), return_exceptions=True)
        await asyncio.gather(*(lane.close() for lane in self._lanes.values()), return_exceptions=True)
        for model_id in self._lanes:
            self.store.unpin(model_id)
        self._lanes.clear()
        if self._owns_sandbox and self._sandbox is not None and self._sandbox.cgroups is not None:
            self._sandbox.cgroups.close()
        self.ready.clear()

    async def warm(self, model_id: str | bytes) -> ExecutionProfile:
        """Start the model's workers now (else the first job pays the cold start); returns its profile."""
        lane = await self._lane(normalize_model_id(model_id))
        return await lane.profile()

    async def run(
        self,
        model_id: str | bytes,
        input_bytes: bytes,
        *,
        timeout_s: float | None = None,
        client: str | None = None,
        on_tokens: Callable[[str], None] | None = None,
        stop: asyncio.Event | None = None,
    ) -> ExecutionResult:
        """Run one job for `client` within `timeout_s` (capped by `executor.job_timeout_s`).

        `client` is the job's tenant: user programs batch only one client's jobs, and a job without
        a client is batched with none. A generation's text goes to `on_tokens` as it is produced
        (the result still holds the whole output); cancelling the call stops the generation, and
        setting `stop` ends it with what it made so far (finish reason `cancelled`).
        Raises an `ExecutorError` subclass naming what went wrong."""
        key = normalize_model_id(model_id)
        timeout = self.job_timeout(timeout_s)
        # A warm lane already holds the verified manifest: no disk access on the hot path.
        warm = self._lanes.get(key)
        manifest = warm.manifest if warm is not None else self.store.get(key)
        costly = (
            len(input_bytes) > _OFFLOAD_BYTES
            if manifest.hf is not None
            else _costly(input_bytes, scans_body=scans_values(manifest))
        )
        payload = await _off_loop_if(costly, _admit, manifest, input_bytes, self.settings)
        lane = await self._lane(key)
        enqueued = time.perf_counter()
        output, profile, started = await lane.submit(input_bytes, payload, timeout, client, on_tokens, stop)
        try:
            costly = (
                len(output) > _OFFLOAD_BYTES
                if manifest.task == "generate"
                else _costly(output, scans_body=False)
            )
            await _off_loop_if(costly, _check_output, manifest, output, self.settings.max_output_bytes)
        except InvalidInput as exc:
            raise ModelFailed(f"the model's output is not a valid tensor payload: {exc.message}") from exc
        finished = time.perf_counter()
        input_hash, output_hash = await asyncio.gather(_hash(input_bytes), _hash(output))
        return ExecutionResult(
            model_id=Hash32(bytes.fromhex(key)),
            input_hash=input_hash,
            output=output,
            output_hash=output_hash,
            profile=profile,
            queued_s=started - enqueued,
            run_s=finished - started,
        )

    async def check_input(self, model_id: str | bytes, input_bytes: bytes) -> None:
        """Raise `InvalidInput` unless `run` would take `input_bytes` for the model: what a
        provider checks before it claims a job it cannot run first."""
        key = normalize_model_id(model_id)
        warm = self._lanes.get(key)
        manifest = warm.manifest if warm is not None else self.store.get(key)
        costly = _costly(input_bytes, scans_body=scans_values(manifest))
        await _off_loop_if(costly, _admit, manifest, input_bytes, self.settings)

    def job_timeout(self, timeout_s: float | None) -> float:
        """The provider's `job_timeout_s` is a ceiling: a caller's deadline may only come sooner."""
        ceiling = self.settings.job_timeout_s
        timeout = timeout_s if timeout_s is not None and timeout_s < ceiling else ceiling  # NaN: ceiling
        if timeout <= 0:
            raise JobTimedOut("the job's deadline passed before it could run", hint="allow a later deadline")
        return timeout

    def lanes(self) -> dict[str, ModelLane]:
        return dict(self._lanes)

    async def _lane(self, model_id: str) -> ModelLane:
        lane = self._lanes.get(model_id)
        if lane is not None:
            return lane
        # Jobs arriving together wait on one start and share its outcome, its error included: a
        # lane is visible to jobs only once it started, so none is queued on a lane that fails.
        starting = self._starting.get(model_id)
        if starting is None:
            starting = asyncio.get_running_loop().create_task(self._start_lane(model_id))
            self._starting[model_id] = starting
            starting.add_done_callback(lambda _: self._starting.pop(model_id, None))
        return await asyncio.shield(starting)

    async def _start_lane(self, model_id: str) -> ModelLane:
        manifest = self.store.verify(model_id)
        self.store.pin(model_id)
        lane = ModelLane(
            manifest,
            self.store.path(model_id),
            self.settings,
            self.sandbox,
            device=self.device,
            slots=self._take_slots,
        )
        try:
            await lane.start()
        except BaseException:
            self.store.unpin(model_id)
            await lane.close()
            raise
        self._lanes[model_id] = lane
        return lane

    def _take_slots(self) -> int:
        slot, self._next_slot = self._next_slot, (self._next_slot + 1) % _SLOTS
        return slot


def _admit(manifest: ModelManifest, data: bytes, settings: ExecutorSettings) -> TensorPayload:
    if manifest.hf is not None:
        # A JSON request (`hf_requests`); the lane sees a payload of no tensors, one row.
        if len(data) > settings.max_input_bytes:
            raise InputTooLarge(
                f"request is {len(data)} bytes, over the limit of {settings.max_input_bytes}",
                hint="send fewer or shorter texts",
            )
        parse_request(manifest, data)
        return TensorPayload(tensors=(), size=len(data))
    payload = parse_payload(data, max_bytes=settings.max_input_bytes)
    manifest.check_input(payload)
    check_builtin_values(manifest, payload, data)
    return payload


def _check_output(manifest: ModelManifest, output: bytes, max_bytes: int) -> None:
    if manifest.task == "generate":
        if len(output) > max_bytes:
            raise InvalidInput(f"output of {len(output)} bytes is over the limit of {max_bytes}")
        parse_generation(output)
        return
    parse_payload(output, max_bytes=max_bytes)


def _costly(data: bytes, *, scans_body: bool) -> bool:
    """Whether checking `data` could hold the event loop: parsing costs what its header costs (a
    header is refused past `MAX_HEADER_BYTES` before it is parsed), and a value scan what the body
    costs. A small header over a big body is checked at once, sparing a thread hop per job."""
    header = int.from_bytes(data[:8], "little") if len(data) >= 8 else 0
    return header > _OFFLOAD_HEADER_BYTES or (scans_body and len(data) > _OFFLOAD_BYTES)


async def _off_loop_if(costly: bool, check: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    if costly:
        return await asyncio.to_thread(check, *args, **kwargs)
    return check(*args, **kwargs)


async def _hash(data: bytes) -> Hash32:
    # hashlib releases the GIL on large buffers: hash those in a thread, off the event loop.
    return await asyncio.to_thread(sha256, data) if len(data) > _OFFLOAD_BYTES else sha256(data)
