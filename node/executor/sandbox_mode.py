"""Which sandbox mode works on this machine, found by trying the real recipe on a tiny program."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

from node.config import ExecutorSettings
from node.executor.cgroups import CgroupScope
from node.executor.errors import SandboxUnavailable
from node.executor.sandbox import Sandbox, SandboxLimits, SandboxMode, SandboxSpec, runtime_binds
from node.logging import get_logger

log = get_logger(__name__)
_PROBE = "import node.executor.framing, safetensors"
_PROBE_LIMITS = SandboxLimits(memory_bytes=2**30, tmpfs_bytes=2**20, cpu_seconds=10, max_processes=32)


@dataclass
class ModeReport:
    """The mode that works (None: none does) and why each mode tried before it did not."""

    mode: SandboxMode | None
    failures: dict[str, str] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)

    def fix_hint(self) -> str:
        if self.unreadable:
            return (
                f"make these readable by other users ({', '.join(self.unreadable[:3])}), e.g. build the "
                "venv from /usr/bin/python3 outside /root, or give the node a writable pids cgroup"
            )
        if not shutil.which("bwrap"):
            return "install bubblewrap (apt-get install bubblewrap)"
        return (
            "enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1) or run as root"
        )


def unreadable_by_others(paths: list[Path]) -> list[str]:
    """Paths an unprivileged uid cannot reach: a directory on the way without o+x, a file without o+r."""
    bad: list[str] = []
    for path in paths:
        target = Path(os.path.realpath(path))
        for ancestor in reversed(target.parents):
            if not os.stat(ancestor).st_mode & stat.S_IXOTH:
                bad.append(str(ancestor))
                break
        else:
            mode = os.stat(target).st_mode
            need = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0)
            if mode & need != need:
                bad.append(str(target))
    return sorted(set(bad))


def runtime_paths() -> list[Path]:
    return [Path(sys.executable), *runtime_binds()]


async def probe(sandbox: Sandbox, slot: int = 0) -> str | None:
    """None when the recipe runs the probe program; else what went wrong."""
    spec = SandboxSpec(argv=[sys.executable, "-B", "-s", "-c", _PROBE], limits=_PROBE_LIMITS, slot=slot)
    try:
        proc = await sandbox.spawn(spec, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    except OSError as exc:
        return f"could not start bwrap: {exc}"
    try:
        async with asyncio.timeout(30):
            _, err = await proc.process.communicate()
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return "the probe did not finish in 30 s"
    code = proc.process.returncode
    return None if code == 0 else f"exit status {code}: {err.decode(errors='replace').strip()[-500:]}"


async def detect_mode(settings: ExecutorSettings) -> ModeReport:
    """Try each mode in order of preference; the first whose probe runs wins."""
    if settings.sandbox == "none":
        return ModeReport(mode=SandboxMode.NONE)
    report = ModeReport(mode=None)
    if not shutil.which("bwrap"):
        report.failures["bwrap"] = "bubblewrap is not installed"
        return report
    candidates = (
        [SandboxMode.UNPRIVILEGED_UID, SandboxMode.ROOT_USERNS]
        if os.geteuid() == 0
        else [SandboxMode.CURRENT_USER]
    )
    report.unreadable = unreadable_by_others(runtime_paths()) if os.geteuid() == 0 else []
    for mode in candidates:
        if mode is SandboxMode.UNPRIVILEGED_UID and report.unreadable:
            report.failures[mode] = f"not readable by an unprivileged uid: {', '.join(report.unreadable)}"
            continue
        failure = await _try(mode, settings)
        if failure is None:
            report.mode = mode
            return report
        report.failures[mode] = failure
    return report


async def _try(mode: SandboxMode, settings: ExecutorSettings) -> str | None:
    cgroups = CgroupScope.create() if os.geteuid() == 0 else None
    try:
        return await probe(Sandbox(mode, uid_base=settings.sandbox_uid_base, cgroups=cgroups))
    except SandboxUnavailable as exc:
        return str(exc)
    finally:
        if cgroups is not None:
            cgroups.close()


async def create_sandbox(settings: ExecutorSettings, mode: SandboxMode | None = None) -> Sandbox:
    """The sandbox the pool runs workers in: `mode`, or the best one that works here."""
    if mode is None:
        report = await detect_mode(settings)
        if report.mode is None:
            raise SandboxUnavailable(f"no sandbox mode works here: {report.failures}", hint=report.fix_hint())
        mode = report.mode
    cgroups = CgroupScope.create() if os.geteuid() == 0 and mode is not SandboxMode.NONE else None
    log.info("sandbox_mode", mode=str(mode), cgroups=cgroups is not None)
    try:
        return Sandbox(mode, uid_base=settings.sandbox_uid_base, cgroups=cgroups)
    except SandboxUnavailable:
        if cgroups is not None:
            cgroups.close()
        raise
