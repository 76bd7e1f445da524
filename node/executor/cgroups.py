"""Per-worker cgroups (pids, memory) in a subtree of the node's own, removed when done.

cgroup v1 (one hierarchy per controller, as on this machine) and v2 (unified) are both handled;
where neither is writable the sandbox relies on rlimits alone and `gpunode doctor` says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from node.logging import get_logger

log = get_logger(__name__)
CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass
class CgroupLeaf:
    """One worker's cgroups; `procs_files` are written with the worker's pid before it starts."""

    dirs: list[Path]
    removed: bool = False

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for path in self.procs_files:
            try:
                found.update(int(p) for p in Path(path).read_text().split())
            except FileNotFoundError:
                continue
        return found

    async def release(self, timeout_s: float = 5.0) -> None:
        """Kill whatever is left in the leaf (a sandbox's pid namespace dies a little after bwrap)
        and remove it once empty; a cgroup with processes in it cannot be removed."""
        if self.removed:
            return
        deadline = time.monotonic() + timeout_s
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.01)
        self.remove()

    def remove(self) -> None:
        if self.removed:
            return
        self.removed = True
        for d in self.dirs:
            _rmdir_quietly(d)


@dataclass
class CgroupScope:
    """The node's subtree: `<controller root>/gpunode-<pid>-<random>` per controller."""

    roots: dict[str, Path]
    version: int
    leaves: list[CgroupLeaf] = field(default_factory=list)

    @classmethod
    def create(cls) -> CgroupScope | None:
        """A fresh scope, or None when no pids controller can be written here."""
        name = f"gpunode-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            if (CGROUP_ROOT / "cgroup.controllers").is_file():
                return cls._create_v2(name)
            return cls._create_v1(name)
        except OSError as exc:
            log.info("cgroups_unavailable", reason=str(exc))
            return None

    @classmethod
    def _create_v1(cls, name: str) -> CgroupScope | None:
        roots = {}
        for controller in ("pids", "memory"):
            base = CGROUP_ROOT / controller
            if (base / "cgroup.procs").is_file() and os.access(base, os.W_OK):
                remove_stale_scopes(base)
                (base / name).mkdir()
                roots[controller] = base / name
        return cls(roots=roots, version=1) if "pids" in roots else None

    @classmethod
    def _create_v2(cls, name: str) -> CgroupScope | None:
        available = (CGROUP_ROOT / "cgroup.controllers").read_text().split()
        if "pids" not in available or not os.access(CGROUP_ROOT, os.W_OK):
            return None
        remove_stale_scopes(CGROUP_ROOT)
        scope = CGROUP_ROOT / name
        scope.mkdir()
        wanted = [c for c in ("pids", "memory") if c in available]
        (scope / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))
        return cls(roots=dict.fromkeys(wanted, scope), version=2)

    def leaf(self, name: str, *, max_processes: int, memory_bytes: int) -> CgroupLeaf:
        dirs: dict[Path, None] = {}
        for controller, root in self.roots.items():
            d = root / name
            d.mkdir(exist_ok=True)
            dirs[d] = None
            if controller == "pids":
                (d / "pids.max").write_text(str(max_processes))
            elif self.version == 1:
                (d / "memory.limit_in_bytes").write_text(str(memory_bytes))
            else:
                (d / "memory.max").write_text(str(memory_bytes))
        leaf = CgroupLeaf(dirs=list(dirs))
        self.leaves.append(leaf)
        return leaf

    def close(self) -> None:
        for leaf in self.leaves:
            leaf.remove()
        for root in set(self.roots.values()):
            _rmdir_quietly(root)


def remove_stale_scopes(base: Path, timeout_s: float = 5.0) -> None:
    """Remove the scopes of node processes that died without cleaning up (SIGKILL, OOM), killing
    first whatever still runs in them: a sandbox that outlived its node, which would otherwise
    keep its cgroup busy (and unremovable) for as long as it ran."""
    for scope in base.glob("gpunode-*-*"):
        owner = scope.name.split("-")[1]
        if not owner.isdigit() or _alive(int(owner)):
            continue
        leaves = [leaf for leaf in scope.iterdir() if leaf.is_dir()]
        for cgroup in (*leaves, scope):
            kill_all(cgroup, timeout_s)
        for leaf in leaves:
            _rmdir_quietly(leaf)
        _rmdir_quietly(scope)


def kill_all(cgroup: Path, timeout_s: float = 5.0) -> None:
    """SIGKILL every process in `cgroup` (v2's `cgroup.kill` where there is one) and wait, up to
    `timeout_s`, until it is empty; a process killed is listed until it has finished exiting."""
    kill_file = cgroup / "cgroup.kill"
    if kill_file.is_file():
        with contextlib.suppress(OSError):
            kill_file.write_text("1")
    deadline = time.monotonic() + timeout_s
    if pids := _procs(cgroup):
        log.warning("stale_sandbox_killed", path=str(cgroup), pids=sorted(pids))
    while pids:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            log.warning("cgroup_not_emptied", path=str(cgroup), pids=sorted(pids))
            return
        time.sleep(0.01)
        pids = _procs(cgroup)


def _procs(cgroup: Path) -> set[int]:
    try:
        return {int(p) for p in (cgroup / "cgroup.procs").read_text().split()}
    except FileNotFoundError:
        return set()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _rmdir_quietly(path: Path) -> None:
    # A cgroup dir can only be removed once its processes are gone; leftovers are logged, not fatal.
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cgroup_not_removed", path=str(path), reason=str(exc))
