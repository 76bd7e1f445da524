"""The node's handle on one sandboxed worker: start it, send it batches, kill it when it misbehaves."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.config import ExecutorSettings
from node.executor import framing
from node.executor.errors import JobTimedOut, ModelFailed, RequestRefused, WorkerCrashed
from node.executor.framing import AsyncChannel, Kind
from node.executor.gpu_binding import gpu_binding
from node.executor.json_depth import too_deep
from node.executor.manifest import MANIFEST_FILE, ModelManifest
from node.executor.profile import ExecutionProfile
from node.executor.sandbox import Sandbox, SandboxedProcess, SandboxLimits, SandboxSpec
from node.logging import get_logger

log = get_logger(__name__)
_STDERR_TAIL = 4096
_DETAIL_CHARS = 500  # of a worker's own words (an ERROR's message) passed on to the client
_DRAIN_GRACE_S = 2.0
TokenSink = Callable[[int, str], None]  # (index of the job in its batch, text it produced)
# What the node reads of a worker's stderr a second at most: a worker that floods it blocks on its
# own writes instead of keeping the node's event loop busy (measured: 73% of a core, unthrottled).
STDERR_BYTES_PER_S = 256 * 1024
STDERR_BURST_BYTES = 2**20  # read at once: an honest worker's warnings never wait


class StderrTail(deque[bytes]):
    """The last chunks a worker wrote to stderr, and how many bytes the node has read in all."""

    def __init__(self) -> None:
        super().__init__(maxlen=64)
        self.bytes_read = 0


@dataclass(frozen=True, slots=True)
class WorkerStartup:
    """How long a cold start took, split into the torch import and everything else."""

    wall_s: float
    torch_import_s: float


def limits_from(settings: ExecutorSettings, device: str = "cpu") -> SandboxLimits:
    return SandboxLimits(
        memory_bytes=settings.worker_memory_bytes,
        tmpfs_bytes=settings.tmpfs_bytes,
        cpu_seconds=settings.worker_cpu_seconds,
        max_processes=settings.max_processes,
        limit_address_space=not device.startswith("cuda"),
    )


@dataclass
class _Generation:
    """A generation request in flight in a worker's batch."""

    done: asyncio.Future[bytes]
    on_tokens: Callable[[str], None] | None
    peak: int  # the most requests in flight at once beside it, itself included
    streamed: int = 0


class WorkerHandle:
    """One warm worker: one batch in flight at a time (the lane that owns it sees to that), or,
    for a generation model, many requests decoded together (`generate`)."""

    def __init__(
        self,
        proc: SandboxedProcess,
        channel: AsyncChannel,
        profile: ExecutionProfile,
        startup: WorkerStartup,
        stderr: StderrTail,
        drain: asyncio.Task[None],
        max_output_bytes: int,
    ) -> None:
        self._proc = proc
        self._max_output = max_output_bytes
        self._drain = drain  # held: the loop keeps only a weak reference to running tasks
        self._channel = channel
        self.profile = profile
        self.startup = startup
        self._stderr = stderr
        self._next_id = 1
        self._in_flight = 0  # the request id of the batch in flight, 0 when idle
        self.alive = True
        self.running = asyncio.Event()  # set while a batch is in flight
        self.batches_run = 0
        self.batches_served = 0  # answered with results or a model's error, within the protocol
        self.lost_to_timeout = False  # killed because a job's deadline came, not for its own fault
        self._generations: dict[int, _Generation] = {}
        self._reader: asyncio.Task[None] | None = None  # reads the worker's answers while any is due
        self._sending = asyncio.Lock()  # one writer at a time: a second would steal the first's wake-up

    @property
    def pid(self) -> int:
        """The host pid of the sandbox's outermost process (bwrap, or the worker without one)."""
        return self._proc.process.pid

    @classmethod
    async def start(
        cls,
        sandbox: Sandbox,
        manifest: ModelManifest,
        model_dir: Path,
        settings: ExecutorSettings,
        *,
        device: str = "cpu",
        slot: int = 0,
    ) -> WorkerHandle:
        started = time.perf_counter()
        gpu = gpu_binding(device)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for end in (ours, theirs):  # room for an inline packet, whatever the host's default
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * framing.INLINE_LIMIT)
        # Opened here and inherited: the sandbox sees the model's bytes, never the store's paths.
        model_fds = {
            name: os.open(model_dir / name, os.O_RDONLY) for name in (MANIFEST_FILE, *manifest.files)
        }
        argv = [
            sys.executable,
            "-B",
            "-s",
            "-m",
            "node.executor.worker",
            "--fd",
            str(theirs.fileno()),
            *[f"--model-file={name}={fd}" for name, fd in model_fds.items()],
            "--device",
            _device_inside(device),
            "--threads",
            str(settings.threads),
            "--max-body",
            str(_max_body(settings)),
            "--prefill-chunk",
            str(settings.prefill_chunk_tokens),
            "--stream-interval-ms",
            str(settings.stream_interval_ms),
            *(["--deterministic"] if settings.deterministic else []),
        ]
        env = {"OMP_NUM_THREADS": str(settings.threads), "MKL_NUM_THREADS": str(settings.threads)}
        if settings.cpu_capability:
            env["ATEN_CPU_CAPABILITY"] = settings.cpu_capability
        if device != "cpu":
            # Only this GPU's device node is bound in, so inside it is the one visible GPU, cuda:0.
            env.update(gpu.env)
            env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
        spec = SandboxSpec(
            argv=argv,
            limits=limits_from(settings, device),
            env=env,
            devices=gpu.nodes,
            pass_fds=(theirs.fileno(), *model_fds.values()),
            slot=slot,
        )
        try:
            proc = await sandbox.spawn(
                spec, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
            )
        finally:
            theirs.close()
            for fd in model_fds.values():
                os.close(fd)
        stderr = StderrTail()
        drain = asyncio.get_running_loop().create_task(_drain(proc, stderr))
        channel = AsyncChannel(ours, max_body=_max_result(settings, settings.max_batch))
        try:
            profile, torch_import_s = await _await_ready(channel, settings.job_timeout_s)
        except BaseException as exc:
            # Whatever went wrong (a crash, a timeout, a malformed READY, the caller cancelled),
            # the sandbox is killed and reaped here: nothing else holds it.
            proc.kill()
            code = await proc.wait()
            channel.close()
            if not isinstance(exc, Exception):
                # Stopped while the worker came up: the reader of its stderr does not outlive it.
                drain.cancel()
                await asyncio.gather(drain, return_exceptions=True)
                raise
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(drain, _DRAIN_GRACE_S)  # what it said before dying
            tail = b"".join(stderr).decode(errors="replace")[-_STDERR_TAIL:].strip()
            raise WorkerCrashed(
                f"worker for {manifest.name} {_startup_failure(exc, code)}: {tail}",
                hint="run `gpunode doctor` to check the sandbox",
            ) from None
        startup = WorkerStartup(wall_s=time.perf_counter() - started, torch_import_s=torch_import_s)
        log.info("worker_ready", model=manifest.name, device=device, startup_s=round(startup.wall_s, 3))
        return cls(proc, channel, profile, startup, stderr, drain, settings.max_output_bytes)

    async def run_batch(
        self, items: list[bytes], timeout_s: float, on_tokens: TokenSink | None = None
    ) -> list[bytes]:
        """Outputs for `items`, in order; kills the worker on timeout, crash or protocol breach.

        Text a job streams before its result goes to `on_tokens(index, text)` as it comes."""
        request_id = self._take_id()
        self.batches_run += 1
        self._in_flight = request_id
        self.running.set()
        try:
            async with asyncio.timeout(timeout_s):
                await self._channel.send(Kind.RUN, request_id, framing.pack_items(items), len(items))
                reply = await self._reply(request_id, len(items), on_tokens)
            if reply is None:
                raise await self._crashed()
            outputs = self._outputs(reply, request_id, len(items))
            self.batches_served += 1
            return outputs
        except ModelFailed:
            self.batches_served += 1
            raise
        except TimeoutError:
            self.lost_to_timeout = True
            await self.kill()
            raise JobTimedOut(
                f"job ran past its wall-clock limit of {timeout_s:g} s; its worker was killed",
                hint="send a smaller input, or ask the provider for a longer job timeout",
            ) from None
        except OSError as exc:  # the socket broke: the worker died, or is made to
            self._proc.kill()
            raise await self._crashed() from exc
        except framing.FramingError as exc:
            # A worker that breaks the protocol once is not trusted again: it is killed (its lane
            # starts a fresh one), never left running with a reply the node did not read.
            await self.kill()
            raise WorkerCrashed(
                f"worker broke the message protocol and was killed: {exc}",
                hint="the worker was replaced; the job was not retried",
            ) from None
        finally:
            self._in_flight = 0
            self.running.clear()

    def _take_id(self) -> int:
        # Ids are 32 bits on the wire and never 0 (READY's): they wrap after 2**32 - 1 requests.
        request_id, self._next_id = self._next_id, self._next_id % (2**32 - 1) + 1
        while request_id in self._generations:  # a request 2**32 ids old still running
            request_id, self._next_id = self._next_id, self._next_id % (2**32 - 1) + 1
        return request_id

    @property
    def generations(self) -> int:
        """Generation requests in flight in this worker."""
        return len(self._generations)

    async def generate(
        self,
        item: bytes,
        timeout_s: float,
        on_tokens: Callable[[str], None] | None = None,
        stop: asyncio.Event | None = None,
    ) -> tuple[bytes, int]:
        """One generation request, decoded in the worker's batch alongside the others in flight:
        its output, and the most requests that were in flight at once beside it (itself included).

        Setting `stop` ends the request with what it made so far. At `timeout_s` the request is
        stopped, and the worker is killed only if it does not answer then."""
        if not self.alive:
            raise WorkerCrashed("the worker died before the job reached it", hint="the job was not retried")
        loop = asyncio.get_running_loop()
        request_id = self._take_id()
        generation = _Generation(loop.create_future(), on_tokens, peak=len(self._generations) + 1)
        self._generations[request_id] = generation
        for other in self._generations.values():
            other.peak = max(other.peak, len(self._generations))
        self.batches_run += 1
        self.running.set()
        if self._reader is None:
            self._reader = loop.create_task(self._read_generations())
        waits: set[asyncio.Future[Any]] = {generation.done}
        stopping = loop.create_task(stop.wait()) if stop is not None else None
        if stopping is not None:
            waits.add(stopping)
        try:
            async with self._sending:
                await self._channel.send(Kind.RUN, request_id, framing.pack_items([item]), 1)
            async with asyncio.timeout(timeout_s):
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                if not generation.done.done():
                    await self._stop_generation(request_id)
                    return await asyncio.shield(generation.done), generation.peak
                return generation.done.result(), generation.peak
        except TimeoutError:
            await self._stop_generation(request_id, grace_s=_DRAIN_GRACE_S)
            raise JobTimedOut(
                f"job ran past its wall-clock limit of {timeout_s:g} s; it was stopped",
                hint="ask for fewer tokens, or ask the provider for a longer job timeout",
            ) from None
        except OSError as exc:  # the socket broke: the worker died, or is made to
            self._proc.kill()
            self._generations.pop(request_id, None)
            raise WorkerCrashed(
                "worker died while running the job", hint="the worker was replaced; the job was not retried"
            ) from exc
        finally:
            if stopping is not None:
                stopping.cancel()

    async def _stop_generation(self, request_id: int, *, grace_s: float | None = None) -> None:
        """Ask the worker to end a request with what it made; with `grace_s`, kill the worker if it
        has not answered within it (the request's answer is then never read)."""
        generation = self._generations.get(request_id)
        if generation is None or not self.alive:
            return
        with contextlib.suppress(OSError):
            async with self._sending:
                await self._channel.send(Kind.CANCEL, request_id, b'{"index":0}')
        if grace_s is None:
            return
        await asyncio.wait({generation.done}, timeout=grace_s)
        if generation.done.done():
            generation.done.exception()  # answered, with what it made or an error: the caller timed out
        else:
            self.lost_to_timeout = True
            await self.kill()

    async def _read_generations(self) -> None:
        """The worker's answers to generation requests, each to its own, while any is in flight."""
        try:
            while self._generations:
                reply = await self._channel.recv(
                    max_body=self._max_output + framing.ITEM_LEN.size, max_item=self._max_output
                )
                if reply is None:
                    raise EOFError("the worker closed its socket")
                self._answer_generation(reply)
        except (OSError, EOFError, framing.FramingError) as exc:
            self.alive = False
            self._proc.kill()
            log.warning("worker_lost", reason=str(exc)[:300], stderr=self.stderr_tail())
            self._fail_generations(
                WorkerCrashed(
                    f"worker died or broke the message protocol while running the job: {exc}"[:500],
                    hint="the worker was replaced; the job was not retried",
                )
            )
            await self._proc.wait()
            self._channel.close()
        finally:
            self._reader = None
            self.running.clear()

    def _answer_generation(self, reply: framing.Message) -> None:
        generation = self._generations.get(reply.request_id)
        if generation is None:
            raise framing.FramingError(f"worker answered request {reply.request_id}, which is not in flight")
        if reply.kind is Kind.TOKENS:
            _, text = _tokens(reply.body, 1)
            generation.streamed += len(text)
            if generation.streamed > self._max_output:
                raise framing.FramingError(f"worker streamed more than {self._max_output} characters")
            if generation.on_tokens is not None and not generation.done.done():
                generation.on_tokens(text)
            return
        del self._generations[reply.request_id]
        try:
            output = self._outputs(reply, reply.request_id, 1)[0]
        except (RequestRefused, ModelFailed) as exc:
            self.batches_served += 1
            generation.done.set_exception(exc)
            return
        self.batches_served += 1
        generation.done.set_result(output)

    def _fail_generations(self, error: Exception) -> None:
        for generation in self._generations.values():
            if not generation.done.done():
                generation.done.set_exception(error)
                generation.done.exception()  # its caller may be gone: nothing to log then
        self._generations.clear()

    async def _reply(
        self, request_id: int, count: int, on_tokens: TokenSink | None
    ) -> framing.Message | None:
        streamed = 0
        while True:
            reply = await self._channel.recv(
                max_body=count * (self._max_output + framing.ITEM_LEN.size), max_item=self._max_output
            )
            if reply is None or reply.kind is not Kind.TOKENS:
                return reply
            if reply.request_id != request_id:
                raise framing.FramingError(
                    f"worker streamed for request {reply.request_id}, not {request_id}"
                )
            index, text = _tokens(reply.body, count)
            streamed += len(text)
            if streamed > self._max_output:
                raise framing.FramingError(f"worker streamed more than {self._max_output} characters")
            if on_tokens is not None:
                on_tokens(index, text)

    def _outputs(self, reply: framing.Message, request_id: int, expected: int) -> list[bytes]:
        if reply.request_id != request_id:
            raise framing.FramingError(f"worker answered request {reply.request_id}, expected {request_id}")
        if reply.kind is Kind.ERROR:
            kind, message, fault = _model_error(reply.body)
            if fault == "input":
                raise RequestRefused(
                    f"the model cannot take this request: {message}",
                    hint="shorten the prompt or ask for fewer tokens",
                )
            raise ModelFailed(
                f"model failed on this input: {kind}: {message}",
                hint="check the input's shapes, dtypes and value ranges against the model",
            )
        if reply.kind is not Kind.RESULT or reply.count != expected:
            raise framing.FramingError(
                f"worker sent {reply.kind.name} with {reply.count} items, expected {expected}"
            )
        return reply.items

    async def wait_exit(self) -> int:
        """Wait until the worker's sandbox has exited, for whatever reason; its exit status."""
        code = await self._proc.wait()
        self.alive = False
        if not self.running.is_set():  # else the batch in flight reads the end and closes it
            self._channel.close()  # a worker that ended on its own while idle leaves no socket
        return code

    async def _crashed(self) -> WorkerCrashed:
        self.alive = False
        code = await self._proc.wait()
        self._channel.close()
        # What the worker wrote goes to the provider's log, not into the error the client gets: a
        # warm worker has seen other clients' inputs, and its stderr is its own to fill.
        log.warning("worker_died", status=describe_exit(code), stderr=self.stderr_tail())
        return WorkerCrashed(
            f"worker died while running the job ({describe_exit(code)})",
            hint="the worker was replaced; the job was not retried",
        )

    @property
    def stderr_bytes_read(self) -> int:
        return self._stderr.bytes_read

    def stderr_tail(self) -> str:
        return b"".join(self._stderr).decode(errors="replace")[-_STDERR_TAIL:].strip()

    async def stop(self) -> None:
        if self.alive:
            with contextlib.suppress(OSError):
                await self._channel.send(Kind.SHUTDOWN, 0, b"")
            try:
                async with asyncio.timeout(2):
                    await self._proc.wait()
            except TimeoutError:
                pass
        await self.kill()

    async def kill(self) -> None:
        self.alive = False
        self._proc.kill()
        reader = self._reader
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()  # its wait on the socket ends before the socket closes
            await asyncio.gather(reader, return_exceptions=True)
        self._fail_generations(
            WorkerCrashed("the worker was stopped while running the job", hint="the job was not retried")
        )
        await self._proc.wait()
        self._channel.close()
        # The reader of its stderr ends with the worker, not after it.
        self._drain.cancel()
        await asyncio.gather(self._drain, return_exceptions=True)


async def _await_ready(channel: AsyncChannel, timeout_s: float) -> tuple[ExecutionProfile, float]:
    """The worker's profile and torch import time from its READY; raises on anything else."""
    async with asyncio.timeout(timeout_s):
        message = await channel.recv()
    if message is None:
        raise EOFError("exited before it was ready")
    if message.kind is not Kind.READY or message.request_id != 0:
        raise framing.FramingError(f"sent {message.kind.name} (request {message.request_id}) before READY")
    try:
        if too_deep(message.body, 1):
            raise ValueError("READY nests deeper than one object")
        info = json.loads(message.body)
        if not isinstance(info, dict):
            raise TypeError("READY is not a JSON object")
        torch_import_s = float(info["torch_import_s"])
        if not math.isfinite(torch_import_s) or torch_import_s < 0:
            raise ValueError(f"torch_import_s {torch_import_s} is not a duration")
        return ExecutionProfile.from_worker(info), torch_import_s
    except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
        raise framing.FramingError(f"malformed READY: {type(exc).__name__}: {exc}"[:300]) from None


def _startup_failure(exc: BaseException, code: int) -> str:
    if isinstance(exc, EOFError):
        return f"exited before it was ready ({describe_exit(code)})"
    if isinstance(exc, TimeoutError):
        return "did not come up in time"
    return f"did not come up ({exc!r})"


def _model_error(body: bytes) -> tuple[str, str, str]:
    """The (type, message, kind) of an ERROR body, cut to a length fit for a client's error."""
    try:
        if too_deep(body, 1):
            raise ValueError("nests deeper than one object")
        detail = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise framing.FramingError("ERROR body is not JSON") from exc
    if not isinstance(detail, dict) or not all(
        isinstance(detail.get(key), str) for key in ("type", "message")
    ):
        raise framing.FramingError("ERROR body lacks its type and message strings")
    fault = detail.get("kind")
    return detail["type"][:100], detail["message"][:_DETAIL_CHARS], fault if isinstance(fault, str) else ""


def _tokens(body: bytes, count: int) -> tuple[int, str]:
    """The (index, text) of a TOKENS body; the index must name a job of the batch."""
    try:
        if too_deep(body, 1):
            raise ValueError("nests deeper than one object")
        detail = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise framing.FramingError("TOKENS body is not JSON") from exc
    index, text = (detail.get("index"), detail.get("text")) if isinstance(detail, dict) else (None, None)
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
        raise framing.FramingError(f"TOKENS names no job of the batch: {str(index)[:20]}")
    if not isinstance(text, str):
        raise framing.FramingError("TOKENS carries no text")
    return index, text


async def _drain(proc: SandboxedProcess, sink: StderrTail) -> None:
    stream = proc.process.stderr
    if stream is None:
        return
    loop = asyncio.get_running_loop()
    allowance, last = float(STDERR_BURST_BYTES), loop.time()
    while chunk := await stream.read(4096):
        sink.append(chunk)
        sink.bytes_read += len(chunk)
        now = loop.time()
        allowance = min(STDERR_BURST_BYTES, allowance + (now - last) * STDERR_BYTES_PER_S) - len(chunk)
        last = now
        if allowance < 0:  # the pipe fills and the worker's own writes block
            await asyncio.sleep(-allowance / STDERR_BYTES_PER_S)


def describe_exit(code: int) -> str:
    """bwrap exits 128+N when the sandboxed process died of signal N; asyncio reports -N for bwrap."""
    signum = -code if code < 0 else code - 128 if code > 128 else 0
    reasons = {
        9: "killed (SIGKILL: memory or process limit, or the node)",
        24: "CPU time limit (SIGXCPU)",
        25: "file size limit (SIGXFSZ)",
        11: "segmentation fault",
        6: "aborted",
    }
    if signum:
        return f"signal {signum}: {reasons.get(signum, 'killed by a signal')}"
    return f"exit status {code}"


def _max_body(settings: ExecutorSettings) -> int:
    return settings.max_input_bytes * settings.max_batch + 2**20


def _max_result(settings: ExecutorSettings, items: int) -> int:
    return items * (settings.max_output_bytes + framing.ITEM_LEN.size)


def _device_inside(device: str) -> str:
    return "cuda:0" if device.startswith("cuda") else device
