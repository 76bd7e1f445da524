"""Per-worker cgroups live in a subtree of the node's own and are removed, even after a crash."""

from __future__ import annotations

import subprocess

import pytest

from node.executor.cgroups import CgroupScope


def _writable() -> bool:
    scope = CgroupScope.create()
    if scope is None:
        return False
    scope.close()
    return True


pytestmark = pytest.mark.skipif(not _writable(), reason="no writable pids cgroup here")


async def test_can_bound_a_leaf_and_remove_everything() -> None:
    scope = CgroupScope.create()
    assert scope is not None
    leaf = scope.leaf("slot-test", max_processes=12, memory_bytes=2**28)
    pids_dir = next(d for d in leaf.dirs if (d / "pids.max").exists())
    assert (pids_dir / "pids.max").read_text().strip() == "12"
    await leaf.release()
    scope.close()
    assert not any(d.exists() for d in leaf.dirs)
    assert not any(root.exists() for root in scope.roots.values())


def test_removes_scopes_left_by_a_dead_node() -> None:
    finished = subprocess.Popen(["true"])  # a pid that has certainly exited once reaped
    finished.wait()
    scope = CgroupScope.create()
    assert scope is not None
    stale = [root.parent / f"gpunode-{finished.pid}-deadbeef" for root in scope.roots.values()]
    for path in stale:
        (path / "slot-0").mkdir(parents=True)
    scope.close()
    again = CgroupScope.create()
    assert again is not None
    again.close()
    assert not any(path.exists() for path in stale)


def test_kills_what_still_runs_in_a_dead_nodes_scope() -> None:
    finished = subprocess.Popen(["true"])
    finished.wait()
    scope = CgroupScope.create()
    assert scope is not None
    stale = [root.parent / f"gpunode-{finished.pid}-0rphan00" for root in scope.roots.values()]
    scope.close()
    orphan = subprocess.Popen(["sleep", "600"])  # a sandbox that outlived its node
    try:
        for path in stale:
            (path / "slot-0").mkdir(parents=True)
            (path / "slot-0" / "cgroup.procs").write_text(str(orphan.pid))
        again = CgroupScope.create()  # the next node to start here
        assert again is not None
        again.close()
        # Before: left running, and its cgroups busy ("Device or resource busy") for good.
        assert orphan.wait(timeout=5) == -9
        assert not any(path.exists() for path in stale)
    finally:
        orphan.kill()
        orphan.wait()
