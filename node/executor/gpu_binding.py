"""Which device nodes and CUDA settings give a sandbox one GPU, and only that one.

`cuda:N` means the N-th GPU in PCI bus order everywhere in the node (the probe runs with
`CUDA_DEVICE_ORDER=PCI_BUS_ID`, as NVML counts). The device node is found from the driver's own
record of that GPU (`/proc/driver/nvidia/gpus/<bus id>/information`): `/dev/nvidiaM` is numbered
by the driver's minor number, which need not be N, and CUDA's default order (fastest first) need
not be PCI order either, so binding `/dev/nvidiaN` could hand a job another tenant's GPU. Inside,
the GPU is named by its UUID, which no enumeration order can change. `/dev/nvidia-uvm-tools`
(the UVM event interface for profilers) is never bound: inference does not need it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from node.errors import ExecutorError

DRIVER_GPUS = Path("/proc/driver/nvidia/gpus")
DEV = Path("/dev")
_CUDA_DEVICE = re.compile(r"^cuda:([0-9]{1,3})$")
_BUS_ID = re.compile(r"^[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")
_UUID = re.compile(r"^GPU-[0-9a-fA-F-]{36}$")
_SHARED_NODES = ("nvidiactl", "nvidia-uvm")


@dataclass(frozen=True)
class GpuBinding:
    """The device nodes to bind (host path = sandbox path) and the environment naming the GPU."""

    nodes: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


def gpu_binding(device: str, *, driver_gpus: Path | None = None, dev: Path | None = None) -> GpuBinding:
    """The binding for `device` ("cpu" or "cuda:N"); raises `ExecutorError` for any other name."""
    driver_gpus, dev = driver_gpus or DRIVER_GPUS, dev or DEV
    if device == "cpu":
        return GpuBinding()
    match = _CUDA_DEVICE.match(device)
    if match is None:
        raise ExecutorError(f"device {device!r} is not 'cpu' or 'cuda:N'")
    index = int(match.group(1))
    gpus = sorted(p for p in _listing(driver_gpus) if _BUS_ID.match(p.name))
    if index >= len(gpus):
        raise ExecutorError(
            f"device {device} does not exist: the NVIDIA driver lists {len(gpus)} GPU(s)",
            hint="run `gpunode doctor` to list this machine's GPUs",
        )
    minor, uuid = _driver_record(gpus[index])
    nodes = (dev / f"nvidia{minor}", *(dev / name for name in _SHARED_NODES))
    env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": uuid if uuid else "0"}
    return GpuBinding(nodes=tuple(str(p) for p in nodes if p.exists()), env=env)


def _listing(driver_gpus: Path) -> list[Path]:
    try:
        return list(driver_gpus.iterdir())
    except OSError as exc:
        raise ExecutorError(
            f"cannot list the NVIDIA driver's GPUs in {driver_gpus}: {exc}",
            hint="load the nvidia kernel module, or run on the CPU",
        ) from exc


def _driver_record(gpu: Path) -> tuple[int, str | None]:
    """The GPU's minor number (its /dev/nvidiaM) and UUID (None where the driver hides it)."""
    fields = {}
    for line in (gpu / "information").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    minor = fields.get("Device Minor", "")
    if not minor.isdigit() or int(minor) > 255:
        raise ExecutorError(f"the NVIDIA driver gives GPU {gpu.name} no device minor number")
    uuid = fields.get("GPU UUID", "")
    return int(minor), uuid if _UUID.match(uuid) else None
