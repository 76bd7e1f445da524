"""The attack suite: jobs that try to get out, each contained with a clear error, and the pool still
serves the next honest job. Attacker programs run under the same recipe (`Sandbox.spawn` with the
pool's limits) as the pool's workers, in every sandbox mode that works on this machine."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import sandbox_attacks as attacks
from executor_support import (
    BuiltinModels,
    executor_settings,
    exported_program,
    mlp_input,
    poisoned_program,
    preferred_mode,
    run_attack,
    working_modes,
)

from node.config import ExecutorSettings
from node.executor.errors import UnknownModel
from node.executor.pool import ExecutorPool
from node.executor.sandbox import Sandbox, SandboxMode
from node.executor.sandbox_mode import create_sandbox

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]
MODES = working_modes()
ATTACK_LIMITS = {"worker_memory_bytes": 512 * 2**20, "tmpfs_bytes": 8 * 2**20, "worker_cpu_seconds": 2}


@pytest.fixture(scope="module")
def attack_settings(builtin_models: BuiltinModels) -> ExecutorSettings:
    return executor_settings(builtin_models.store.root, **ATTACK_LIMITS)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def pool(builtin_models: BuiltinModels) -> AsyncIterator[ExecutorPool]:
    async with ExecutorPool(executor_settings(builtin_models.store.root), builtin_models.store) as pool:
        await pool.warm(builtin_models.mlp.model_id)
        yield pool


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def sandboxes(attack_settings: ExecutorSettings) -> AsyncIterator[dict[SandboxMode, Sandbox]]:
    made = {}
    for mode in (SandboxMode.ROOT_USERNS, preferred_mode()):
        made[mode] = await create_sandbox(attack_settings, mode)
    yield made
    for sandbox in made.values():
        if sandbox.cgroups is not None:
            sandbox.cgroups.close()


async def assert_pool_still_serves(pool: ExecutorPool, models: BuiltinModels) -> None:
    result = await pool.run(models.mlp.model_id, mlp_input(2, seed=1))
    assert len(result.output) > 0
    assert result.profile.batch_size == 2


@pytest.mark.parametrize("mode", MODES)
async def test_cannot_reach_the_network(
    pool: ExecutorPool,
    builtin_models: BuiltinModels,
    sandboxes: dict[SandboxMode, Sandbox],
    attack_settings: ExecutorSettings,
    mode: SandboxMode,
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind(f"\0gpunode-test-{os.getpid()}")
    abstract.listen()
    abstract.setblocking(False)
    script = (
        attacks.NETWORK.replace("UDP_PORT", str(udp.getsockname()[1]))
        .replace("PORT", str(listener.getsockname()[1]))
        .replace("ABSTRACT", repr(f"\0gpunode-test-{os.getpid()}"))
    )
    with listener, udp, abstract:
        outcome = await run_attack(sandboxes[mode], attack_settings, script)
        for server in (listener, abstract):
            with pytest.raises(BlockingIOError):
                server.accept()
        with pytest.raises(BlockingIOError):
            udp.recv(16)
    assert outcome.verdict is not None, outcome.stderr
    for family in ("tcp", "tcp6", "udp", "netlink", "packet"):
        assert outcome.verdict[family] == "EAFNOSUPPORT"  # refused by seccomp before the empty netns
    assert outcome.verdict["abstract_unix"] == "ECONNREFUSED"  # a private network namespace
    await assert_pool_still_serves(pool, builtin_models)


@pytest.mark.parametrize("mode", MODES)
async def test_cannot_write_outside_its_tmpfs(
    pool: ExecutorPool,
    builtin_models: BuiltinModels,
    sandboxes: dict[SandboxMode, Sandbox],
    attack_settings: ExecutorSettings,
    mode: SandboxMode,
) -> None:
    outcome = await run_attack(sandboxes[mode], attack_settings, attacks.WRITE_OUTSIDE)
    assert outcome.verdict is not None, outcome.stderr
    assert outcome.verdict.pop("/tmp/allowed") == "written"
    escaped = {
        path: result
        for path, result in outcome.verdict.items()
        if result not in ("EROFS", "EACCES", "ENOENT")
    }
    assert escaped == {}
    assert not await asyncio.to_thread(Path(sys.prefix, "evil").exists)
    await assert_pool_still_serves(pool, builtin_models)


@pytest.mark.parametrize("mode", MODES)
async def test_cannot_read_host_files_or_the_nodes_environment(
    pool: ExecutorPool,
    builtin_models: BuiltinModels,
    sandboxes: dict[SandboxMode, Sandbox],
    attack_settings: ExecutorSettings,
    mode: SandboxMode,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GPUNODE_KEY_PASSWORD", "canary-secret-do-not-leak")
    script = attacks.READ_HOST.replace("STORE", str(builtin_models.store.root))
    outcome = await run_attack(sandboxes[mode], attack_settings, script)
    verdict = outcome.verdict
    assert verdict is not None, outcome.stderr
    for path in ("/root", "/home", "/etc/shadow", "/etc/passwd", "/work/main/pyproject.toml", "/var/log"):
        assert verdict[path] == "ENOENT", (path, verdict[path])
    assert verdict[str(builtin_models.store.root)] == "ENOENT"
    for environ in (verdict["proc1_environ"], verdict["own_environ"]):
        assert isinstance(environ, str)
        assert "canary-secret" not in environ
        assert "GPUNODE_KEY_PASSWORD" not in environ
    assert "PATH=/usr/bin:/bin" in str(verdict["proc1_environ"])
    assert len(verdict["processes"]) <= 3  # type: ignore[arg-type]  # its own pid namespace
    await assert_pool_still_serves(pool, builtin_models)


def _root_only_proc_files() -> list[str]:
    """Every /proc file outside the per-process directories that only root may read, plus kallsyms
    (kernel addresses for whoever counts as root)."""
    found = ["/proc/kallsyms"]
    for top in os.listdir("/proc"):
        if top.isdigit() or top in ("self", "thread-self", "net"):
            continue
        for folder, subdirs, names in os.walk(f"/proc/{top}") if os.path.isdir(f"/proc/{top}") else []:
            subdirs[:] = [d for d in subdirs if not os.path.islink(f"{folder}/{d}")]
            found += [f"{folder}/{n}" for n in names if _root_only(f"{folder}/{n}")]
        if _root_only(f"/proc/{top}"):
            found.append(f"/proc/{top}")
    return sorted(set(found))


def _root_only(path: str) -> bool:
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) and not mode & stat.S_IROTH


@pytest.mark.parametrize("mode", MODES)
async def test_cannot_read_root_only_proc_files(
    pool: ExecutorPool,
    builtin_models: BuiltinModels,
    sandboxes: dict[SandboxMode, Sandbox],
    attack_settings: ExecutorSettings,
    mode: SandboxMode,
) -> None:
    # In root-userns mode the sandbox's uid is host root: file modes alone let it read kernel page
    # flags, slab and vmalloc maps, timers, the kernel log.
    targets = await asyncio.to_thread(_root_only_proc_files)
    assert "/proc/slabinfo" in targets
    script = attacks.READ_PROC.replace("PATHS", repr(targets))
    outcome = await run_attack(sandboxes[mode], attack_settings, script)
    assert outcome.verdict is not None, outcome.stderr
    read = {path: result for path, result in outcome.verdict.items() if result == "read"}
    assert read == {}
    await assert_pool_still_serves(pool, builtin_models)


@pytest.mark.parametrize("mode", MODES)
async def test_cannot_ptrace_io_uring_unshare_or_mount(
    pool: ExecutorPool,
    builtin_models: BuiltinModels,
    sandboxes: dict[SandboxMode, Sandbox],
    attack_settings: ExecutorSettings,
    mode: SandboxMode,
) -> None:
    outcome = await run_attack(sandboxes[mode], attack_settings, attacks.KERNEL_SURFACE)
    assert outcome.verdict is not None, outcome.stderr
    assert outcome.verdict == dict.fromkeys(outcome.verdict, "EPERM")
    assert len(outcome.verdict) == 10
    await assert_pool_still_serves(pool, builtin_models)


@pytest.mark.parametrize("mode", MODES)
async def test_cannot_fork_bomb(
    pool: ExecutorPool,
    builtin_models: BuiltinModels,
    sandboxes: dict[SandboxMode, Sandbox],
    attack_settings: ExecutorSettings,
    mode: SandboxMode,
) -> None:
    outcome = await run_attack(sandboxes[mode], attack_settings, attacks.FORK_BOMB)
    assert outcome.verdict is not None, outcome.stderr
    assert outcome.verdict["error"] == "EAGAIN"
    assert outcome.verdict["forked"] < attack_settings.max_processes  # type: ignore[operator]
    assert outcome.leftover_pids == frozenset()  # the forks died with the sandbox
    await assert_pool_still_serves(pool, builtin_models)


@pytest.mark.parametrize("mode", MODES)
async def test_cannot_exhaust_memory(
    pool: ExecutorPool,
    builtin_models: BuiltinModels,
    sandboxes: dict[SandboxMode, Sandbox],
    attack_settings: ExecutorSettings,
    mode: SandboxMode,
) -> None:
    outcome = await run_attack(sandboxes[mode], attack_settings, attacks.EXHAUST_MEMORY)
    assert outcome.verdict is not None, outcome.stderr
    assert outcome.verdict["error"] == "MemoryError"
    assert outcome.verdict["allocated"] < attack_settings.worker_memory_bytes  # type: ignore[operator]
    await assert_pool_still_serves(pool, builtin_models)


@pytest.mark.parametrize("mode", MODES)
async def test_cannot_fill_the_disk(
    pool: ExecutorPool,
    builtin_models: BuiltinModels,
    sandboxes: dict[SandboxMode, Sandbox],
    attack_settings: ExecutorSettings,
    mode: SandboxMode,
) -> None:
    outcome = await run_attack(sandboxes[mode], attack_settings, attacks.FILL_DISK)
    assert outcome.verdict is not None, outcome.stderr
    for path in ("/tmp/fill", "/dev/shm/fill"):
        result = outcome.verdict[path]
        assert isinstance(result, dict)
        assert result["error"] in ("ENOSPC", "EFBIG")
        assert result["written"] <= attack_settings.tmpfs_bytes
    await assert_pool_still_serves(pool, builtin_models)


@pytest.mark.parametrize("mode", MODES)
async def test_cannot_spin_the_cpu_past_its_limit(
    pool: ExecutorPool,
    builtin_models: BuiltinModels,
    sandboxes: dict[SandboxMode, Sandbox],
    attack_settings: ExecutorSettings,
    mode: SandboxMode,
) -> None:
    outcome = await run_attack(sandboxes[mode], attack_settings, attacks.SPIN_CPU, timeout_s=60)
    assert not outcome.timed_out  # RLIMIT_CPU stopped it, not the wall clock
    assert "CPU time limit" in outcome.exit or "SIGKILL" in outcome.exit, outcome.exit
    await assert_pool_still_serves(pool, builtin_models)


@pytest.mark.parametrize("mode", MODES)
async def test_cannot_sleep_forever(
    pool: ExecutorPool,
    builtin_models: BuiltinModels,
    sandboxes: dict[SandboxMode, Sandbox],
    attack_settings: ExecutorSettings,
    mode: SandboxMode,
) -> None:
    outcome = await run_attack(sandboxes[mode], attack_settings, attacks.SLEEP_FOREVER, timeout_s=1.0)
    assert outcome.timed_out
    assert outcome.wall_s < 10
    assert outcome.leftover_pids == frozenset()
    await assert_pool_still_serves(pool, builtin_models)


async def test_poisoned_program_runs_no_code_even_inside_the_sandbox(
    pool: ExecutorPool,
    builtin_models: BuiltinModels,
    sandboxes: dict[SandboxMode, Sandbox],
    tmp_path: Path,
) -> None:
    # The store refuses it (test_store); this is the second wall: the workers' torch loader.
    poisoned = poisoned_program(exported_program(tmp_path / "clean.pt2"), tmp_path / "poisoned.pt2")
    settings = executor_settings(builtin_models.store.root)
    fd = os.open(poisoned, os.O_RDONLY)
    try:
        script = attacks.LOAD_POISONED_PROGRAM.replace("FD", str(fd))
        outcome = await run_attack(sandboxes[preferred_mode()], settings, script, pass_fds=(fd,))
    finally:
        os.close(fd)
    assert outcome.verdict is not None, outcome.stderr
    assert outcome.verdict["payload_ran"] is False
    assert "refused" in outcome.verdict
    await assert_pool_still_serves(pool, builtin_models)


async def test_job_naming_a_refused_model_gets_a_clear_error(
    pool: ExecutorPool, builtin_models: BuiltinModels
) -> None:
    with pytest.raises(UnknownModel, match="not in the store"):
        await pool.run("ee" * 32, mlp_input())
    await assert_pool_still_serves(pool, builtin_models)


async def test_many_attacks_at_once_leave_the_pool_serving(
    pool: ExecutorPool,
    builtin_models: BuiltinModels,
    sandboxes: dict[SandboxMode, Sandbox],
    attack_settings: ExecutorSettings,
) -> None:
    sandbox = sandboxes[preferred_mode()]
    scripts = [attacks.FORK_BOMB, attacks.EXHAUST_MEMORY, attacks.FILL_DISK, attacks.KERNEL_SURFACE]
    outcomes = await asyncio.gather(
        *(run_attack(sandbox, attack_settings, s, slot=2000 + i) for i, s in enumerate(scripts)),
        *(pool.run(builtin_models.mlp.model_id, mlp_input(1, seed=i)) for i in range(8)),
    )
    verdicts = [o.verdict for o in outcomes[:4]]  # type: ignore[union-attr]
    assert verdicts[0]["error"] == "EAGAIN"
    assert verdicts[1]["error"] == "MemoryError"
    assert verdicts[2]["/tmp/fill"]["error"] in ("ENOSPC", "EFBIG")
    assert set(verdicts[3].values()) == {"EPERM"}
    for result in outcomes[4:]:
        assert len(result.output) > 0  # type: ignore[union-attr]
