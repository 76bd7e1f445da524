"""A node that dies takes its sandboxes with it: none is left running under init.

Each test runs a node (a pool of sandboxed workers) in a child process, SIGKILLs it, and looks for
any process of its sandboxes left alive. The workers are `hostile_worker`'s "deaf" ones, which never
read their socket again and so never learn that the node is gone: only the kernel can end them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from executor_support import BuiltinModels, working_modes

from node.executor.cgroups import CgroupScope
from node.executor.sandbox import SandboxMode

pytestmark = pytest.mark.slow
HERE = Path(__file__).parent
ROOT = HERE.parent.parent

# The node: a warm pool of deaf workers, and deaf sandboxes launched all the time beside it, so
# that the kill lands on some mid-launch (before bwrap arms its own --die-with-parent) as well as
# on the warm worker.
NODE = r"""
import asyncio, dataclasses, sys
from pathlib import Path
from executor_support import executor_settings
from hostile_worker import HostileSandbox
from node.executor.pool import ExecutorPool
from node.executor.sandbox import Sandbox, SandboxMode, SandboxSpec
from node.executor.sandbox_mode import create_sandbox
from node.executor.store import ModelStore
from node.executor.worker_handle import limits_from

mode, store_root, model_id, marker = sys.argv[1:5]

class Marked(HostileSandbox):
    async def spawn(self, spec, **popen):
        spec = dataclasses.replace(spec, env={**spec.env, "GPUNODE_TEST_MARK": marker})
        return await super().spawn(spec, **popen)

async def main():
    store = ModelStore(Path(store_root), capacity_bytes=2**30)
    settings = executor_settings(store.root)
    sandbox = Marked(await create_sandbox(settings, SandboxMode(mode)), "deaf")
    async with ExecutorPool(settings, store, sandbox=sandbox) as pool:
        await pool.warm(model_id)
        print("warm", flush=True)
        # Deaf sandboxes launched back to back (a few alive at a time), so that the kill lands
        # on launches in flight.
        running = []
        for slot in range(10**6):
            spec = SandboxSpec(
                argv=[sys.executable, "-c", "import time; time.sleep(3600)"],
                limits=limits_from(settings),
                env={"GPUNODE_TEST_MARK": marker},
                slot=slot,
            )
            running.append(await Sandbox.spawn(sandbox, spec))
            if len(running) > 4:
                oldest = running.pop(0)
                oldest.kill()
                await oldest.wait()

asyncio.run(main())
"""


def _marked(marker: bytes) -> set[int]:
    """Live processes whose command line or environment carries `marker` (zombies are dead)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (entry / "stat").read_text().rpartition(")")[2].split()[0] == "Z":
                continue
            if marker in (entry / "cmdline").read_bytes() or marker in (entry / "environ").read_bytes():
                found.add(int(entry.name))
        except OSError:  # gone meanwhile
            continue
    return found


def _describe(pids: set[int]) -> list[str]:
    described = []
    for pid in sorted(pids):
        with contextlib.suppress(OSError):
            ppid = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1]
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
            described.append(f"{pid} (parent {ppid}): {command}")
    return described


def _survivors(marker: bytes, grace_s: float) -> set[int]:
    deadline = time.monotonic() + grace_s
    while (left := _marked(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _kill_node(mode: SandboxMode, models: BuiltinModels, marker: str, run_s: float) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}
    model = models.mlp.model_id
    argv = [sys.executable, "-c", NODE, str(mode), str(models.store.root), model, marker]
    node = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert node.stdout is not None
        for line in node.stdout:  # its log, then "warm"
            if line.strip() == "warm":
                break
        else:
            pytest.fail("the node did not start its pool")
        time.sleep(run_s)
    finally:
        node.send_signal(signal.SIGKILL)
        node.wait()


def _in_a_sandbox(pid: int) -> bool:
    """Whether `pid` runs in a pid namespace of its own (inside bwrap), not beside the node."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return any(len(line.split()) > 2 for line in status.splitlines() if line.startswith("NSpid:"))


@pytest.mark.parametrize("mode", working_modes())
def test_sandboxes_die_with_a_node_killed_mid_launch(
    builtin_models: BuiltinModels, mode: SandboxMode
) -> None:
    marker = f"reap-{uuid.uuid4().hex}"
    try:
        for run_s in (0.5, 1.0, 1.5):  # kills at a few points of the launches in flight
            _kill_node(mode, builtin_models, marker, run_s)
            left = _survivors(marker.encode(), grace_s=5.0)
            # Before: bwrap itself under init, with its sandbox, for as long as the worker ran.
            outer = {pid for pid in left if not _in_a_sandbox(pid)}
            assert not outer, f"bwrap outlived its node: {_describe(outer)}"
            # bwrap arms --die-with-parent inside the sandbox only once its mounts are made: one
            # killed while making them is left under init, in the dead node's cgroup, until the
            # next node starts and kills what runs there (before: it could not even remove it).
            scope = CgroupScope.create()
            if scope is not None:
                scope.close()
                left = _survivors(marker.encode(), grace_s=5.0)
            assert not left, f"sandbox processes outlived their node: {_describe(left)}"
    finally:
        for pid in _marked(marker.encode()):  # a failure leaves nothing running either
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        scope = CgroupScope.create()  # and removes the dead nodes' cgroups
        if scope is not None:
            scope.close()
