"""The node's handle on one sandboxed worker: start it, send it batches, kill it when it misbehaves."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.config import ExecutorSettings
from node.executor import framing
from node.executor.errors import JobTimedOut, ModelFailed, WorkerCrashed
from node.executor.framing import AsyncChannel, Kind
from node.executor.manifest import MANIFEST_FILE, ModelManifest
from node.executor.profile import ExecutionProfile
from node.executor.sandbox import Sandbox, SandboxedProcess, SandboxLimits, SandboxSpec
from node.logging import get_logger

log = get_logger(__name__)
_STDERR_TAIL = 4096


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


class WorkerHandle:
    """One warm worker; one batch in flight at a time (the lane that owns it sees to that)."""

    def __init__(
        self,
        proc: SandboxedProcess,
        channel: AsyncChannel,
        profile: ExecutionProfile,
        startup: WorkerStartup,
        stderr: deque[bytes],
        drain: asyncio.Task[None],
    ) -> None:
        self._proc = proc
        self._drain = drain  # held: the loop keeps only a weak reference to running tasks
        self._channel = channel
        self.profile = profile
        self.startup = startup
        self._stderr = stderr
        self._next_id = 1
        self.alive = True
        self.running = asyncio.Event()  # set while a batch is in flight
        self.batches_run = 0

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
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
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
            *(["--deterministic"] if settings.deterministic else []),
        ]
        env = {"OMP_NUM_THREADS": str(settings.threads), "MKL_NUM_THREADS": str(settings.threads)}
        if settings.cpu_capability:
            env["ATEN_CPU_CAPABILITY"] = settings.cpu_capability
        if device.startswith("cuda"):
            # Only this GPU's device node is bound in, so inside it is the one visible GPU, cuda:0.
            env["CUDA_VISIBLE_DEVICES"] = _gpu_index(device)
            env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
        spec = SandboxSpec(
            argv=argv,
            limits=limits_from(settings, device),
            env=env,
            devices=_device_nodes(device),
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
        stderr: deque[bytes] = deque(maxlen=64)
        drain = asyncio.get_running_loop().create_task(_drain(proc, stderr))
        channel = AsyncChannel(ours, max_body=settings.max_output_bytes * settings.max_batch + 2**20)
        try:
            ready = await _await_ready(proc, channel, (stderr, drain), settings.job_timeout_s, manifest.name)
        except asyncio.CancelledError:
            # Stopped while the worker came up: neither it nor the reader of its stderr outlives this.
            proc.kill()
            drain.cancel()
            await asyncio.gather(proc.wait(), drain, return_exceptions=True)
            channel.close()
            raise
        startup = WorkerStartup(
            wall_s=time.perf_counter() - started, torch_import_s=float(ready["torch_import_s"])
        )
        log.info("worker_ready", model=manifest.name, device=device, startup_s=round(startup.wall_s, 3))
        return cls(proc, channel, ExecutionProfile.from_worker(ready), startup, stderr, drain)

    async def run_batch(self, items: list[bytes], timeout_s: float) -> list[bytes]:
        """Outputs for `items`, in order; kills the worker on timeout, crash or protocol breach."""
        request_id, self._next_id = self._next_id, self._next_id + 1
        self.batches_run += 1
        self.running.set()
        try:
            async with asyncio.timeout(timeout_s):
                await self._channel.send(Kind.RUN, request_id, framing.pack_items(items), len(items))
                reply = await self._channel.recv()
        except TimeoutError:
            await self.kill()
            raise JobTimedOut(
                f"job ran past its wall-clock limit of {timeout_s:g} s; its worker was killed",
                hint="send a smaller input, or ask the provider for a longer job timeout",
            ) from None
        except OSError as exc:  # the socket broke: the worker died, or is made to
            self._proc.kill()
            raise await self._crashed() from exc
        except framing.FramingError as exc:
            await self.kill()
            raise WorkerCrashed(f"worker broke the message protocol: {exc}") from exc
        finally:
            self.running.clear()
        if reply is None:
            raise await self._crashed()
        return self._outputs(reply, request_id, len(items))

    def _outputs(self, reply: framing.Message, request_id: int, expected: int) -> list[bytes]:
        if reply.request_id != request_id:
            raise WorkerCrashed(f"worker answered request {reply.request_id}, expected {request_id}")
        if reply.kind is Kind.ERROR:
            detail = json.loads(reply.body)
            raise ModelFailed(
                f"model failed on this input: {detail.get('type')}: {detail.get('message')}",
                hint="check the input's shapes, dtypes and value ranges against the model",
            )
        if reply.kind is not Kind.RESULT or reply.count != expected:
            raise WorkerCrashed(
                f"worker sent {reply.kind.name} with {reply.count} items, expected {expected}"
            )
        return reply.items

    async def wait_exit(self) -> int:
        """Wait until the worker's sandbox has exited, for whatever reason; its exit status."""
        code = await self._proc.wait()
        self.alive = False
        return code

    async def _crashed(self) -> WorkerCrashed:
        self.alive = False
        code = await self._proc.wait()
        self._channel.close()
        return WorkerCrashed(
            f"worker died while running the job ({describe_exit(code)}): {self.stderr_tail()}",
            hint="the worker was replaced; the job was not retried",
        )

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
        await self._proc.wait()
        self._channel.close()
        # The reader of its stderr ends with the worker, not after it.
        self._drain.cancel()
        await asyncio.gather(self._drain, return_exceptions=True)


async def _await_ready(
    proc: SandboxedProcess,
    channel: AsyncChannel,
    stderr: tuple[deque[bytes], asyncio.Task[None]],
    timeout_s: float,
    model: str,
) -> dict[str, Any]:
    message: framing.Message | None = None
    failure: Exception | None = None
    try:
        async with asyncio.timeout(timeout_s):
            message = await channel.recv()
    except (TimeoutError, OSError, framing.FramingError) as exc:
        failure = exc
    if message is not None and message.kind is Kind.READY:
        info: dict[str, Any] = json.loads(message.body)
        return info
    proc.kill()
    code = await proc.wait()
    channel.close()
    sink, drain = stderr
    await drain  # the whole of what it said before dying
    tail = b"".join(sink).decode(errors="replace")[-_STDERR_TAIL:].strip()
    reason = (
        f"did not come up ({failure!r})" if failure else f"exited before it was ready ({describe_exit(code)})"
    )
    raise WorkerCrashed(
        f"worker for {model} {reason}: {tail}", hint="run `gpunode doctor` to check the sandbox"
    )


async def _drain(proc: SandboxedProcess, sink: deque[bytes]) -> None:
    stream = proc.process.stderr
    if stream is None:
        return
    while chunk := await stream.read(4096):
        sink.append(chunk)


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


def _gpu_index(device: str) -> str:
    return device.partition(":")[2] or "0"


def _device_inside(device: str) -> str:
    return "cuda:0" if device.startswith("cuda") else device


def _device_nodes(device: str) -> tuple[str, ...]:
    if not device.startswith("cuda"):
        return ()
    index = _gpu_index(device)
    shared = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")
    return tuple(p for p in (f"/dev/nvidia{index}", *shared) if Path(p).exists())
