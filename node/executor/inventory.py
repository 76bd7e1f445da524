"""What this machine can serve: devices and start-up benchmark figures, for adverts and `doctor`.

The probing imports torch, so it runs in a subprocess (`node.executor.probe`) and comes back as
typed values; the node process stays free of torch.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from typing import Any

from node.errors import ExecutorError


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """A GPU, or the CPU when no GPU is present; `compute_capability` is the ISA level for a CPU."""

    kind: str
    index: int
    name: str
    memory_bytes: int
    compute_capability: str | None
    driver: str | None
    healthy: bool
    health_detail: str

    @property
    def device(self) -> str:
        return "cpu" if self.kind == "cpu" else f"cuda:{self.index}"


@dataclass(frozen=True, slots=True)
class BenchmarkFigures:
    """Start-up benchmark of one device: fp32 matmul throughput and the reference model's speed."""

    device: str
    matmul_gflops: float
    reference_model: str
    reference_model_id: str  # hex model id of the reference model as a store holds it
    batch: int
    latency_ms_p50: float
    throughput_items_per_s: float


@dataclass(frozen=True, slots=True)
class Inventory:
    torch_version: str
    devices: tuple[DeviceInfo, ...]
    benchmarks: tuple[BenchmarkFigures, ...]


async def take_inventory(
    *,
    benchmark: bool = True,
    threads: int = 1,
    matmul_size: int = 1024,
    repeats: int = 20,
    timeout_s: float = 300.0,
) -> Inventory:
    """Probe devices (and benchmark them) in a torch subprocess."""
    argv = [
        sys.executable,
        "-m",
        "node.executor.probe",
        "--threads",
        str(threads),
        "--size",
        str(matmul_size),
        "--repeats",
        str(repeats),
        *(["--benchmark"] if benchmark else []),
    ]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        # NVML counts GPUs in PCI bus order; so must torch, or one GPU's health is told of another
        # and `cuda:N` would name a different GPU here than in the sandbox (`gpu_binding`).
        env={**os.environ, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ExecutorError(f"device probe did not finish in {timeout_s:g} s") from None
    if proc.returncode != 0:
        raise ExecutorError(
            f"device probe failed: {err.decode(errors='replace')[-2000:]}",
            hint="run `gpunode doctor` to check torch and the GPU driver",
        )
    return parse_inventory(json.loads(out))


def parse_inventory(data: dict[str, Any]) -> Inventory:
    return Inventory(
        torch_version=str(data["torch_version"]),
        devices=tuple(DeviceInfo(**d) for d in data["devices"]),
        benchmarks=tuple(BenchmarkFigures(**b) for b in data["benchmarks"]),
    )
