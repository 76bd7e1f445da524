"""The sandbox recipe: bubblewrap + seccomp + rlimits (+ cgroups where writable).

One recipe serves the worker pool and anything else that must run untrusted code; the attack tests
launch it with attacker scripts to prove it contains them. Modes, detected at run time:

- `unprivileged-uid`: the node runs as root; each sandbox drops to a dedicated uid and bwrap makes
  an unprivileged user namespace. Needs the interpreter, venv and node package readable by others.
- `root-userns`: bwrap runs as root with `--unshare-user`; the sandbox uid maps to host root, so
  RLIMIT_NPROC no longer bounds processes and a pids cgroup must. Works when the venv sits under a
  0700 directory.
- `current-user`: the node is not root; bwrap runs as the node's own user.
- `none`: `executor.sandbox = "none"`, a plain subprocess, for development only.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import os
import resource
import shutil
import signal
import site
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import node
from node.executor.cgroups import CgroupLeaf, CgroupScope
from node.executor.errors import SandboxUnavailable
from node.executor.seccomp_filter import seccomp_fd

NODE_MOUNT = Path("/opt/gpunode")
# The sandbox's own private tmpfs, not the host's /tmp.
SANDBOX_TMP = "/tmp"  # noqa: S108
SANDBOX_SHM = "/dev/shm"  # noqa: S108
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64")
_ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime")
# Loaded here, not between fork and exec: the child of a threaded process must not dlopen.
_LAUNCHER = Path(__file__).with_name("sandbox_launch.py")


# Kernel knobs under /proc that are root-owned files: bwrap leaves them to file permissions, and in
# root-userns mode the sandbox's uid is host root, so they are hidden outright (in every mode), with
# every other /proc file that is not world-readable or that can be written (`proc_masks`).
_PROC_DIRS_HIDDEN = ("/proc/sys", "/proc/irq", "/proc/bus")
# World-readable, but kernel addresses for whoever counts as root: hidden too.
_PROC_FILES_HIDDEN = ("/proc/sysrq-trigger", "/proc/kcore", "/proc/kallsyms", "/proc/modules")
# Per-process (the sandbox's own), per-namespace, or hidden whole above.
_PROC_NOT_WALKED = frozenset({"self", "thread-self", "net", "sys", "irq", "bus"})


class SandboxMode(enum.StrEnum):
    UNPRIVILEGED_UID = "unprivileged-uid"
    ROOT_USERNS = "root-userns"
    CURRENT_USER = "current-user"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    memory_bytes: int
    tmpfs_bytes: int
    cpu_seconds: int
    max_processes: int
    max_open_files: int = 1024
    # CUDA reserves terabytes of virtual address space at start, so GPU workers are bounded by the
    # memory cgroup instead of RLIMIT_AS/RLIMIT_DATA.
    limit_address_space: bool = True


@dataclass(frozen=True)
class SandboxSpec:
    """What one sandboxed process runs and sees. `binds` maps host paths to sandbox paths (read-only)."""

    argv: list[str]
    limits: SandboxLimits
    binds: Mapping[Path, Path] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    devices: tuple[str, ...] = ()
    pass_fds: tuple[int, ...] = ()
    slot: int = 0


@dataclass
class SandboxedProcess:
    process: asyncio.subprocess.Process
    cgroup: CgroupLeaf | None

    def kill(self) -> None:
        # bwrap leads its own process group; --die-with-parent and the pid namespace take the rest.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    async def wait(self) -> int:
        code = await self.process.wait()
        if self.cgroup is not None:
            await self.cgroup.release()
        return code


class Sandbox:
    """Builds and launches the recipe for one mode; `uid_base + slot` is each sandbox's uid."""

    def __init__(self, mode: SandboxMode, *, uid_base: int, cgroups: CgroupScope | None) -> None:
        if mode is SandboxMode.ROOT_USERNS and cgroups is None:
            raise SandboxUnavailable(
                "root-userns sandboxes need a writable pids cgroup to bound processes",
                hint="mount the cgroup pids controller writable, or make the venv readable by others",
            )
        self.mode = mode
        self.uid_base = uid_base
        self.cgroups = cgroups
        self.bwrap = shutil.which("bwrap") or "bwrap"
        self.proc_masks = proc_masks() if mode is not SandboxMode.NONE else ([], [])

    def command(self, spec: SandboxSpec, seccomp: int | None) -> list[str]:
        if self.mode is SandboxMode.NONE:
            return list(spec.argv)
        argv = [self.bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
        # A user namespace that cannot nest another (seccomp refuses that too).
        argv += ["--unshare-user", "--disable-userns"]
        if self.mode is SandboxMode.ROOT_USERNS:
            argv += ["--uid", "65534", "--gid", "65534"]
        argv += [*_system_binds(), "--proc", "/proc", *_proc_mask_args(*self.proc_masks), "--dev", "/dev"]
        for device in spec.devices:
            argv += ["--dev-bind", device, device]
        # /tmp and /dev/shm are the only writable places, each a tmpfs of the given size; bwrap's
        # /dev is itself an unbounded tmpfs, so it is made read-only below.
        for writable in (SANDBOX_TMP, SANDBOX_SHM):
            argv += ["--size", str(spec.limits.tmpfs_bytes), "--tmpfs", writable]
        for host, inside in {**runtime_binds(), **spec.binds}.items():
            argv += ["--ro-bind", str(host), str(inside)]
        argv += ["--clearenv", "--chdir", SANDBOX_TMP]
        for key, value in sandbox_env(spec, self.mode).items():
            argv += ["--setenv", key, value]
        if seccomp is not None:
            argv += ["--seccomp", str(seccomp)]
        return [*argv, "--remount-ro", "/dev", "--remount-ro", "/", "--", *spec.argv]

    async def spawn(self, spec: SandboxSpec, **popen: object) -> SandboxedProcess:
        """Start `spec` under the recipe; stdin is closed, stdout/stderr as `popen` says."""
        leaf = self._cgroup_leaf(spec)
        seccomp = None if self.mode is SandboxMode.NONE else seccomp_fd()
        try:
            process = await asyncio.create_subprocess_exec(
                *self._launch(spec, leaf),
                *self.command(spec, seccomp),
                env=sandbox_env(spec, self.mode)
                if self.mode is SandboxMode.NONE
                else {"PATH": "/usr/bin:/bin"},
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(*spec.pass_fds, *([seccomp] if seccomp is not None else [])),
                start_new_session=True,
                **popen,  # type: ignore[arg-type]
            )
        except BaseException:
            if leaf is not None:
                leaf.remove()
            raise
        finally:
            if seccomp is not None:
                os.close(seccomp)
        return SandboxedProcess(process=process, cgroup=leaf)

    def _cgroup_leaf(self, spec: SandboxSpec) -> CgroupLeaf | None:
        if self.cgroups is None:
            return None
        return self.cgroups.leaf(
            f"slot-{spec.slot}-{os.urandom(4).hex()}",
            max_processes=spec.limits.max_processes,
            memory_bytes=spec.limits.memory_bytes,
        )

    def _launch(self, spec: SandboxSpec, leaf: CgroupLeaf | None) -> list[str]:
        """The launcher that joins the sandbox's cgroups, sets its rlimits, gives up root and binds
        its life to the node's before it execs bwrap (`sandbox_launch`)."""
        drop_to = self.uid_base + spec.slot if self.mode is SandboxMode.UNPRIVILEGED_UID else None
        nproc = self.mode in (SandboxMode.UNPRIVILEGED_UID,)
        launch = {
            "cgroup_procs": [str(p) for p in (leaf.procs_files if leaf is not None else [])],
            "rlimits": _rlimits(spec.limits, nproc=nproc),
            "drop_to": drop_to,
            "node_pid": os.getpid(),
        }
        return [sys.executable, "-I", "-S", str(_LAUNCHER), json.dumps(launch), "--"]


def _rlimits(limits: SandboxLimits, *, nproc: bool) -> list[tuple[int, int]]:
    values = [
        (resource.RLIMIT_FSIZE, limits.tmpfs_bytes),
        (resource.RLIMIT_NOFILE, limits.max_open_files),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_CPU, limits.cpu_seconds),
    ]
    if limits.limit_address_space:
        values += [(resource.RLIMIT_AS, limits.memory_bytes), (resource.RLIMIT_DATA, limits.memory_bytes)]
    return [*values, (resource.RLIMIT_NPROC, limits.max_processes)] if nproc else values


def proc_masks(root: str = "/proc") -> tuple[list[str], list[str]]:
    """The /proc directories and files a sandbox must not see, found on this kernel: those not
    world-readable (kernel pages, slabs, timers, the kernel log...), those anyone may write, and
    the fixed lists above. In root-userns mode file permissions do not stop the sandbox (its uid
    is host root), so each of these is covered by an empty read-only tmpfs or /dev/null."""
    dirs = [d for d in _PROC_DIRS_HIDDEN if os.path.isdir(d)]
    files = [f for f in _PROC_FILES_HIDDEN if os.path.exists(f)]
    pending = [entry for entry in os.scandir(root) if not entry.name.isdigit()]
    pending = [entry for entry in pending if entry.name not in _PROC_NOT_WALKED]
    while pending:
        entry = pending.pop()
        try:
            mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode):
                if mode & 0o005 != 0o005:
                    dirs.append(entry.path)
                else:
                    pending.extend(os.scandir(entry.path))
            elif stat.S_ISREG(mode) and (not mode & stat.S_IROTH or mode & 0o222):
                files.append(entry.path)
        except OSError:  # gone, or unreadable even to root: mask what cannot be looked at
            dirs.append(entry.path) if entry.is_dir(follow_symlinks=False) else files.append(entry.path)
    return sorted(set(dirs)), sorted(set(files) - set(dirs))


def _proc_mask_args(dirs: list[str], files: list[str]) -> list[str]:
    argv: list[str] = []
    for path in dirs:
        argv += ["--tmpfs", path, "--remount-ro", path]
    for path in files:
        if not any(path.startswith(d + "/") for d in dirs):
            argv += ["--ro-bind", "/dev/null", path]
    return argv


def _system_binds() -> list[str]:
    argv: list[str] = []
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    for path in _ETC_FILES:
        if os.path.exists(path):
            argv += ["--ro-bind", path, path]
    return argv


def runtime_binds() -> dict[Path, Path]:
    """The interpreter's prefixes, site-packages outside them, and the node package at /opt/gpunode."""
    paths = {Path(sys.prefix), Path(sys.base_prefix), *map(Path, site.getsitepackages())}
    keep = sorted(p for p in paths if p.is_dir() and not str(p).startswith("/usr"))
    binds = {p: p for p in keep if not any(p != q and p.is_relative_to(q) for q in keep)}
    binds[Path(node.__file__).parent] = NODE_MOUNT / "node"
    return binds


def sandbox_env(spec: SandboxSpec, mode: SandboxMode) -> dict[str, str]:
    node_parent = Path(node.__file__).parent.parent if mode is SandboxMode.NONE else NODE_MOUNT
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": SANDBOX_TMP,
        "TMPDIR": SANDBOX_TMP,
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(node_parent),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        # torch.export.load falls back to full unpickling when the safe loader refuses; forbid it.
        "TORCH_FORCE_WEIGHTS_ONLY_LOAD": "1",
        **spec.env,
    }
