"""What a provider needs from its machine, checked one by one; `gpunode doctor` renders the list."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from node.config import ExecutorSettings
from node.executor.cgroups import CgroupScope
from node.executor.errors import SandboxUnavailable
from node.executor.sandbox import SandboxMode
from node.executor.sandbox_mode import detect_mode
from node.executor.seccomp_filter import seccomp_bpf

Status = Literal["ok", "warn", "fail"]
_MIN_FREE_BYTES = 2**30


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check; a `fail` on a `required` check means the node cannot serve jobs safely."""

    name: str
    status: Status
    detail: str
    fix: str = ""
    required: bool = True


def check_bubblewrap() -> CheckResult:
    path = shutil.which("bwrap")
    if path is None:
        return CheckResult("bubblewrap", "fail", "bwrap is not on PATH", "apt-get install bubblewrap")
    done = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return CheckResult("bubblewrap", "ok", f"{done.stdout.strip() or 'bwrap'} at {path}")


def check_user_namespaces() -> CheckResult:
    limit = _read_int("/proc/sys/user/max_user_namespaces")
    unprivileged = _read_int("/proc/sys/kernel/unprivileged_userns_clone")
    is_root = os.geteuid() == 0
    if limit == 0 or unprivileged == 0:
        return CheckResult(
            "user namespaces",
            "warn" if is_root else "fail",
            f"disabled (max_user_namespaces={limit}, unprivileged_userns_clone={unprivileged})",
            "sysctl -w user.max_user_namespaces=10000 kernel.unprivileged_userns_clone=1",
            required=not is_root,
        )
    return CheckResult(
        "user namespaces", "ok", f"enabled (max_user_namespaces={limit})", required=not is_root
    )


def check_seccomp() -> CheckResult:
    if "Seccomp:" not in Path("/proc/self/status").read_text():
        return CheckResult(
            "seccomp",
            "fail",
            "the kernel has no seccomp support",
            "use a kernel built with CONFIG_SECCOMP_FILTER",
        )
    try:
        size = len(seccomp_bpf())
    except SandboxUnavailable as exc:
        return CheckResult("seccomp", "fail", exc.message, exc.hint or "")
    return CheckResult("seccomp", "ok", f"filter compiles to {size // 8} BPF instructions")


async def check_sandbox_mode(settings: ExecutorSettings) -> CheckResult:
    report = await detect_mode(settings)
    tried = "; ".join(f"{mode}: {why}" for mode, why in report.failures.items())
    if report.mode is None:
        return CheckResult("sandbox mode", "fail", f"no mode works ({tried})", report.fix_hint())
    if report.mode is SandboxMode.NONE:
        return CheckResult(
            "sandbox mode",
            "warn",
            "sandbox disabled (executor.sandbox = none): jobs run unconfined",
            'set executor.sandbox = "bwrap" before serving strangers',
        )
    if report.mode is SandboxMode.ROOT_USERNS:
        return CheckResult(
            "sandbox mode",
            "warn",
            f"root-userns: processes bounded by a pids cgroup ({tried})",
            report.fix_hint(),
        )
    return CheckResult("sandbox mode", "ok", str(report.mode))


def check_cgroups() -> CheckResult:
    if os.geteuid() != 0:
        return CheckResult(
            "cgroups",
            "warn",
            "not root: per-worker cgroups are off, rlimits only",
            "run the provider as root, or delegate a cgroup subtree to its user",
            required=False,
        )
    scope = CgroupScope.create()
    if scope is None:
        return CheckResult(
            "cgroups",
            "warn",
            "no writable pids cgroup: rlimits only",
            "mount the pids (and memory) controllers writable",
            required=False,
        )
    scope.close()
    return CheckResult("cgroups", "ok", f"v{scope.version}: {', '.join(sorted(scope.roots))}", required=False)


def check_gpu() -> CheckResult:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # no NVIDIA library or driver: CPU-only providers are valid
        return CheckResult(
            "GPU driver / NVML",
            "warn",
            f"no NVIDIA driver ({type(exc).__name__}): serving on CPU",
            "install the NVIDIA driver to serve on GPUs",
            required=False,
        )
    try:
        count = pynvml.nvmlDeviceGetCount()
        driver = pynvml.nvmlSystemGetDriverVersion()
    finally:
        pynvml.nvmlShutdown()
    nodes = [p for p in ("/dev/nvidiactl", "/dev/nvidia-uvm") if not Path(p).exists()]
    if nodes:
        return CheckResult(
            "GPU driver / NVML",
            "warn",
            f"driver {driver}, {count} GPUs, missing {nodes}",
            "load nvidia-uvm (nvidia-modprobe -u -c=0)",
            required=False,
        )
    return CheckResult("GPU driver / NVML", "ok", f"driver {driver}, {count} GPUs", required=False)


def check_disk(settings: ExecutorSettings) -> CheckResult:
    target = settings.model_dir
    while not target.exists():
        target = target.parent
    free = shutil.disk_usage(target).free
    cache_gib = settings.model_cache_bytes / 2**30
    detail = f"{free / 2**30:.1f} GiB free at {target}, model cache up to {cache_gib:.1f} GiB"
    if free < _MIN_FREE_BYTES:
        return CheckResult("model disk", "fail", detail, f"free space on {target} or move executor.model_dir")
    if free < settings.model_cache_bytes:
        return CheckResult(
            "model disk", "warn", detail, "lower executor.model_cache_bytes or free space", required=False
        )
    return CheckResult("model disk", "ok", detail)


async def run_checks(settings: ExecutorSettings) -> list[CheckResult]:
    checks = [check_bubblewrap(), check_user_namespaces(), check_seccomp()]
    if checks[0].status == "ok":
        checks.append(await check_sandbox_mode(settings))
    checks += await asyncio.to_thread(lambda: [check_cgroups(), check_gpu(), check_disk(settings)])
    return checks


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None
