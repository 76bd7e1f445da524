"""A compromised worker on the wire: every frame, fd and size it sends is a lie the node must catch.

Each test starts a pool whose workers are `hostile_worker.SCRIPT` under the real sandbox recipe
(in every sandbox mode that works here), sends honest jobs, and checks that the lie cost the node
nothing: the job fails with a clear error, the worker is killed and replaced, no process, fd or
memory is left behind and no queued job waits past its deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import pytest_asyncio
from executor_support import BuiltinModels, executor_settings, mlp_input, preferred_mode, working_modes
from hf_support import HfModels
from hostile_worker import HostileSandbox

from node.config import ExecutorSettings
from node.executor.errors import JobTimedOut, ModelFailed, WorkerCrashed
from node.executor.pool import ExecutorPool
from node.executor.sandbox import Sandbox, SandboxMode
from node.executor.sandbox_mode import create_sandbox
from node.executor.worker_handle import STDERR_BURST_BYTES, STDERR_BYTES_PER_S

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]
MODES = working_modes()
# tmpfs_bytes is RLIMIT_FSIZE: room for a 1 GiB sparse memfd, the size of lie a worker could tell.
LIMITS = {"tmpfs_bytes": 2**30, "job_timeout_s": 20.0, "max_output_bytes": 4 * 2**20}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def sandboxes(builtin_models: BuiltinModels) -> AsyncIterator[dict[SandboxMode, Sandbox]]:
    settings = executor_settings(builtin_models.store.root)
    modes = {SandboxMode.ROOT_USERNS, preferred_mode()}
    made = {mode: await create_sandbox(settings, mode) for mode in modes}
    yield made
    for sandbox in made.values():
        if sandbox.cgroups is not None:
            sandbox.cgroups.close()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@asynccontextmanager
async def hostile_pool(
    sandboxes: dict[SandboxMode, Sandbox],
    mode: SandboxMode,
    models: BuiltinModels,
    behaviour: str,
    **extra: object,
) -> AsyncIterator[tuple[ExecutorPool, HostileSandbox]]:
    settings: ExecutorSettings = executor_settings(models.store.root, **{**LIMITS, **extra})
    sandbox = HostileSandbox(sandboxes[mode], behaviour)
    fds = _open_fds()
    try:
        async with ExecutorPool(settings, models.store, sandbox=sandbox) as pool:
            yield pool, sandbox
        # Nothing left behind: every sandbox it started has exited and been reaped, every fd closed.
        assert all(proc.process.returncode is not None for proc in sandbox.spawned)
        assert all(proc.cgroup is None or proc.cgroup.removed for proc in sandbox.spawned)
        assert _open_fds() <= fds
    finally:
        # Whatever the test's outcome, no sandbox it started outlives it: each is killed (bwrap's
        # group, then whatever is left in its cgroup) and reaped, even after a failed assertion.
        for proc in sandbox.spawned:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "behaviour",
    [
        "ready_not_json",
        "ready_not_object",
        "ready_missing_fields",
        "ready_bad_number",
        "ready_infinite",
        "ready_nested",
    ],
)
async def test_cannot_leave_a_sandbox_running_with_a_malformed_ready(
    sandboxes: dict[SandboxMode, Sandbox], builtin_models: BuiltinModels, mode: SandboxMode, behaviour: str
) -> None:
    async with hostile_pool(sandboxes, mode, builtin_models, behaviour) as (pool, sandbox):
        for _ in range(2):
            with pytest.raises(WorkerCrashed, match=r"malformed READY|did not come up"):
                await pool.run(builtin_models.mlp.model_id, mlp_input())
        # Killed and reaped at once, not at the pool's exit: one job, no leak.
        assert len(sandbox.spawned) == 2
        assert all(proc.process.returncode is not None for proc in sandbox.spawned)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        ("wrong_id", "answered request 2, expected 1"),
        ("wrong_kind", "sent RUN with 1 items, expected 1"),
        ("wrong_count", "sent RESULT with 2 items, expected 1"),
        ("huge_error", "ERROR body of 1073741824 bytes is over the limit of 32768"),
        ("huge_result", "RESULT body of 1073741824 bytes is over the limit of 4194312"),
        ("unsealed_memfd", "not sealed"),
        ("tmp_file", "not a memfd"),
        ("bad_error_body", "ERROR body lacks its type"),
        ("tokens_wrong_id", "worker streamed for request 2, not 1"),
        ("tokens_bad_index", "TOKENS names no job of the batch: 1"),
        ("tokens_not_json", "TOKENS body is not JSON"),
    ],
)
async def test_worker_breaking_the_protocol_is_killed_and_replaced(
    sandboxes: dict[SandboxMode, Sandbox],
    builtin_models: BuiltinModels,
    mode: SandboxMode,
    behaviour: str,
    error: str,
) -> None:
    async with hostile_pool(sandboxes, mode, builtin_models, behaviour) as (pool, sandbox):
        model = builtin_models.mlp.model_id
        await pool.warm(model)
        rss = _rss_bytes()
        async with asyncio.timeout(30):  # before: a wrong request id hung this lane forever
            first = asyncio.ensure_future(pool.run(model, mlp_input(1)))
            queued = asyncio.ensure_future(pool.run(model, mlp_input(1, seed=1)))
            with pytest.raises(WorkerCrashed, match=re.escape(error)) as raised:
                await first
            assert "broke the message protocol and was killed" in str(raised.value)
            with pytest.raises(WorkerCrashed, match="broke the message protocol"):
                await queued  # ran on the replacement, which lied in turn: failed, not hung
        assert _rss_bytes() - rss < 64 * 2**20  # before: +1 GiB from a sparse memfd
        assert len(sandbox.spawned) >= 2
        assert all(proc.process.returncode is not None for proc in sandbox.spawned[:2])


@pytest.mark.parametrize("mode", MODES)
async def test_stderr_flood_is_bounded_in_memory_and_in_the_error(
    sandboxes: dict[SandboxMode, Sandbox], builtin_models: BuiltinModels, mode: SandboxMode
) -> None:
    async with hostile_pool(sandboxes, mode, builtin_models, "stderr_flood") as (pool, _):
        rss = _rss_bytes()
        with pytest.raises(WorkerCrashed, match="exited before it was ready") as raised:
            await pool.run(builtin_models.mlp.model_id, mlp_input())
        assert len(str(raised.value)) < 5000  # 1.5 MB said, 4 KiB kept
        assert _rss_bytes() - rss < 64 * 2**20


@pytest.mark.parametrize("mode", MODES)
async def test_cannot_extend_the_providers_job_timeout(
    sandboxes: dict[SandboxMode, Sandbox], builtin_models: BuiltinModels, mode: SandboxMode
) -> None:
    async with hostile_pool(sandboxes, mode, builtin_models, "silent", job_timeout_s=1.0) as (pool, _):
        model = builtin_models.mlp.model_id
        await pool.warm(model)
        started = time.monotonic()
        with pytest.raises(JobTimedOut, match="limit of 1 s"):
            await pool.run(model, mlp_input(), timeout_s=3600)  # the client asks for an hour
        assert time.monotonic() - started < 5


@pytest.mark.parametrize("mode", MODES)
async def test_one_jobs_long_timeout_does_not_stretch_its_batch(
    sandboxes: dict[SandboxMode, Sandbox], builtin_models: BuiltinModels, mode: SandboxMode
) -> None:
    settings = {"job_timeout_s": 6.0, "max_batch": 8, "max_batch_wait_ms": 50.0}
    async with hostile_pool(sandboxes, mode, builtin_models, "silent", **settings) as (pool, _):
        model = builtin_models.mlp.model_id
        await pool.warm(model)
        started = time.monotonic()
        short = asyncio.ensure_future(pool.run(model, mlp_input(), timeout_s=0.5))
        long = asyncio.ensure_future(pool.run(model, mlp_input(seed=1)))
        with pytest.raises(JobTimedOut):
            await short
        assert time.monotonic() - started < 3  # before: it ran under the batch's longest, 6 s
        with pytest.raises(JobTimedOut, match="limit of 6 s"):
            await long


@pytest.mark.parametrize("mode", MODES)
async def test_cannot_make_warm_workers_start_cold_with_tiny_deadlines(
    sandboxes: dict[SandboxMode, Sandbox], builtin_models: BuiltinModels, mode: SandboxMode
) -> None:
    async with hostile_pool(sandboxes, mode, builtin_models, "slow") as (pool, sandbox):
        model = builtin_models.mlp.model_id
        await pool.warm(model)
        worker = pool.lanes()[model].workers()[0]
        # The attacker: jobs whose deadlines end long before the model could answer.
        for seed in range(3):
            started = time.monotonic()
            with pytest.raises(JobTimedOut, match=r"limit of 0\.1 s"):
                await pool.run(model, mlp_input(seed=seed), timeout_s=0.1)
            assert time.monotonic() - started < 0.5  # the caller still gets its answer at its deadline
        # Before: each killed the warm worker, and the next client waited for a cold start.
        assert (await pool.run(model, mlp_input(seed=9))).output
        assert worker.alive
        assert pool.lanes()[model].workers() == [worker]
        assert len(sandbox.spawned) == 1


def _marked_input(seed: int, marked: bool) -> bytes:
    return _input_with_mark(seed, "marked" if marked else "plain")


def _input_with_mark(seed: int, mark: str) -> bytes:
    data = mlp_input(1, seed=seed)
    length = struct.unpack_from("<Q", data)[0]
    header = json.loads(data[8 : 8 + length])
    header["__metadata__"] = {"mark": mark}
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + data[8 + length :]


@pytest.mark.parametrize("mode", MODES)
async def test_one_bad_input_in_a_batch_costs_log_runs_not_one_per_job(
    sandboxes: dict[SandboxMode, Sandbox], builtin_models: BuiltinModels, mode: SandboxMode
) -> None:
    settings = {"max_batch": 32, "max_batch_wait_ms": 0.0}
    async with hostile_pool(sandboxes, mode, builtin_models, "fail_marked", **settings) as (pool, _):
        model = builtin_models.mlp.model_id
        await pool.warm(model)
        worker = pool.lanes()[model].workers()[0]
        inputs = [_marked_input(i, marked=i == 11) for i in range(18)]
        outcomes = await asyncio.gather(*(pool.run(model, d) for d in inputs), return_exceptions=True)
        assert isinstance(outcomes[11], ModelFailed)
        assert "marked input" in str(outcomes[11])
        assert all(not isinstance(o, BaseException) for i, o in enumerate(outcomes) if i != 11)
        # One batch of 18, then halves down to the culprit: 1 + 2*5 = 11 at most (before: 1 + 18).
        assert worker.batches_run <= 11
        assert pool.lanes()[model].workers() == [worker]  # a model error keeps the worker warm


@pytest.mark.parametrize("mode", MODES)
async def test_worker_exiting_after_ready_does_not_make_the_node_restart_it_in_a_loop(
    sandboxes: dict[SandboxMode, Sandbox], builtin_models: BuiltinModels, mode: SandboxMode
) -> None:
    async with hostile_pool(sandboxes, mode, builtin_models, "exit_after_ready") as (pool, sandbox):
        model = builtin_models.mlp.model_id
        await pool.warm(model)
        started = time.monotonic()
        with pytest.raises((JobTimedOut, WorkerCrashed)):  # whichever came first
            await pool.run(model, mlp_input(), timeout_s=3.0)
        await asyncio.sleep(3.0 - (time.monotonic() - started))  # the lane left to itself
        # Three seconds of a sandbox that quits at once: 0.25 + 0.5 + 1 + 2 s of backoff lets
        # a handful start (before: one every ~0.1 s, without end, with or without jobs).
        assert time.monotonic() - started < 5
        assert len(sandbox.spawned) <= 6


@pytest.mark.parametrize("mode", MODES)
async def test_stderr_flood_while_idle_is_read_at_a_bounded_rate(
    sandboxes: dict[SandboxMode, Sandbox], builtin_models: BuiltinModels, mode: SandboxMode
) -> None:
    async with hostile_pool(sandboxes, mode, builtin_models, "stderr_flood_forever") as (pool, _):
        model = builtin_models.mlp.model_id
        await pool.warm(model)
        worker = pool.lanes()[model].workers()[0]
        started, read = time.monotonic(), worker.stderr_bytes_read
        await asyncio.sleep(2.0)  # the worker writes as fast as it can, the node reads at its rate
        seconds = time.monotonic() - started
        # Before: hundreds of MB a second, 73% of a node core spent reading them.
        assert worker.stderr_bytes_read - read <= STDERR_BURST_BYTES + (seconds + 1) * STDERR_BYTES_PER_S
        assert len(worker.stderr_tail()) <= 4096


@pytest.mark.parametrize("mode", MODES)
async def test_request_ids_wrap_instead_of_breaking_the_header(
    sandboxes: dict[SandboxMode, Sandbox], builtin_models: BuiltinModels, mode: SandboxMode
) -> None:
    async with hostile_pool(sandboxes, mode, builtin_models, "honest") as (pool, sandbox):
        model = builtin_models.mlp.model_id
        await pool.warm(model)
        worker = pool.lanes()[model].workers()[0]
        worker._next_id = 2**32 - 1  # four billion batches on: the last id the header can carry
        for seed in range(3):
            assert (await pool.run(model, mlp_input(seed=seed))).output
        assert worker._next_id == 3
        assert len(sandbox.spawned) == 1


@pytest.mark.parametrize("mode", MODES)
async def test_worker_stderr_does_not_reach_another_clients_error(
    sandboxes: dict[SandboxMode, Sandbox], builtin_models: BuiltinModels, mode: SandboxMode
) -> None:
    async with hostile_pool(sandboxes, mode, builtin_models, "leak_then_crash") as (pool, _):
        model = builtin_models.mlp.model_id
        await pool.warm(model)
        assert (await pool.run(model, _input_with_mark(1, "secret"))).output  # client A
        with pytest.raises(WorkerCrashed, match="worker died while running the job") as raised:
            await pool.run(model, mlp_input(seed=2))  # client B
        assert "secret" not in str(raised.value)  # before: A's input bytes, in B's error


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        ("gen_wrong_id", "which is not in flight"),
        ("gen_answer_twice", "which is not in flight"),
        ("gen_token_flood", "streamed more than 4194304 characters"),
    ],
)
async def test_generation_worker_breaking_the_protocol_is_killed_and_replaced(
    sandboxes: dict[SandboxMode, Sandbox], hf_models: HfModels, behaviour: str, error: str
) -> None:
    """A generation model's worker answers many requests on one socket, each by its id: one that
    answers a request not in flight, twice, or streams past the output limit is killed, and the
    requests it held fail at once with a clear error, never hang."""
    mode = preferred_mode()
    async with hostile_pool(sandboxes, mode, hf_models, behaviour) as (pool, sandbox):  # type: ignore[arg-type]
        model = hf_models.gpt2.model_id
        await pool.warm(model)
        request = json.dumps({"prompt": "hi", "max_tokens": 4}).encode()
        async with asyncio.timeout(30):
            first, second = await asyncio.gather(
                pool.run(model, request), pool.run(model, request), return_exceptions=True
            )
            failures = [r for r in (first, second) if isinstance(r, WorkerCrashed)]
            assert failures, (first, second)
            assert any(error in str(failure) for failure in failures), failures
            await sandbox.spawned[0].wait()  # killed, and a replacement started in its place
            await pool.lanes()[model].profile()
        assert len(sandbox.spawned) >= 2
