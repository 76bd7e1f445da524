"""Attacks by a model author and by clients against each other: a `.pt2` that tries to run code when
loaded (one per path the pinned torch's loader offers), and programs that try to carry one client's
data to another. Each is refused when the model is installed, and again by the worker's loader
when forced past the store, inside the pool's sandbox in every mode that works here."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
import sandbox_attacks as attacks
from executor_support import (
    CODE_PATHS,
    IN_SANDBOX_MARKER,
    BuiltinModels,
    executor_settings,
    mlp_input,
    plant_object_constant,
    preferred_mode,
    rewrite_program,
    run_attack,
    working_modes,
)
from safetensors.numpy import save
from safetensors.torch import load

from node.executor.errors import WorkerCrashed
from node.executor.manifest import MANIFEST_FILE, ModelManifest, TensorSpec
from node.executor.pool import ExecutorPool
from node.executor.sandbox import SandboxMode
from node.executor.sandbox_mode import create_sandbox
from node.executor.store import PROGRAM_FILE, ModelStore

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]
MODES = working_modes()
SPEC = (TensorSpec(name="x", dtype="F32", shape=(None, 4)),)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def pool(builtin_models: BuiltinModels) -> AsyncIterator[ExecutorPool]:
    settings = executor_settings(builtin_models.store.root, max_batch=8, max_batch_wait_ms=20.0)
    async with ExecutorPool(settings, builtin_models.store) as pool:
        yield pool


def force_into_store(store: ModelStore, program: Path, *, name: str, batchable: bool = False) -> str:
    """Put a program where the store keeps models without `install`: the checks it never passed."""
    manifest = ModelManifest(
        name=name,
        format="torch_export",
        files={PROGRAM_FILE: hashlib.sha256(program.read_bytes()).hexdigest()},
        inputs=SPEC,
        outputs=("y",),
        batchable=batchable,
    )
    model_dir = store.root / manifest.model_id
    model_dir.mkdir()
    (model_dir / PROGRAM_FILE).write_bytes(program.read_bytes())
    (model_dir / MANIFEST_FILE).write_bytes(manifest.canonical_bytes())
    for entry in (model_dir, *model_dir.iterdir()):
        entry.chmod(0o755 if entry.is_dir() else 0o644)
    return manifest.model_id


def rows(data: bytes, name: str) -> set[tuple[float, ...]]:
    return {tuple(row) for row in load(data)[name].tolist()}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def loader_verdicts(
    builtin_models: BuiltinModels, exploits: dict[str, Path]
) -> AsyncIterator[dict[SandboxMode, dict[str, dict[str, object]]]]:
    """Each exploit handed straight to the worker's loader, then to torch's, in each sandbox mode."""
    settings = executor_settings(builtin_models.store.root)
    fds = {name: os.open(path, os.O_RDONLY) for name, path in exploits.items()}
    verdicts = {}
    try:
        for mode in dict.fromkeys((SandboxMode.ROOT_USERNS, preferred_mode())):
            sandbox = await create_sandbox(settings, mode)
            try:
                script = attacks.LOAD_EXPLOITS.replace("FILES", repr(fds)).replace(
                    "MARKER", repr(IN_SANDBOX_MARKER)
                )
                outcome = await run_attack(
                    sandbox, settings, script, pass_fds=tuple(fds.values()), timeout_s=120
                )
            finally:
                if sandbox.cgroups is not None:
                    sandbox.cgroups.close()
            assert outcome.verdict is not None, outcome.stderr[-3000:]
            verdicts[mode] = outcome.verdict
    finally:
        for fd in fds.values():
            os.close(fd)
    yield verdicts  # type: ignore[misc]


@pytest.mark.parametrize("path", sorted(CODE_PATHS))
@pytest.mark.parametrize("mode", MODES)
async def test_worker_loader_runs_no_code_from_a_program_forced_past_the_store(
    loader_verdicts: dict[SandboxMode, dict[str, dict[str, object]]], mode: SandboxMode, path: str
) -> None:
    verdict = loader_verdicts[mode][path]
    assert verdict["refused"] in ("UnsafeModelFile", "ProgramRefused"), verdict
    assert verdict["payload_ran"] is False
    # The attack is real: torch's own loader runs it, or only the forced weights-only load stops it.
    assert verdict["torch_ran_it"] is (CODE_PATHS[path][1] == "runs")


async def test_cannot_take_over_a_warm_worker_with_a_program_forced_past_the_store(
    pool: ExecutorPool, builtin_models: BuiltinModels, clean_program: Path, tmp_path: Path
) -> None:
    # The red team's payload: unpickled while loading, it replaces the worker's batch function so
    # that every later job's input is its own. It writes to stderr first: the crash report shows it.
    takeover = (
        "import sys; sys.stderr.write('payload-ran\\n'); "
        "sys.modules['__main__']._run_batch = lambda *args: [b'stolen'] * len(args[1])"
    )
    evil = rewrite_program(
        clean_program, tmp_path / "takeover.pt2", lambda m: plant_object_constant(m, "opaque_obj", takeover)
    )
    model_id = force_into_store(builtin_models.store, evil, name="takeover")
    with pytest.raises(WorkerCrashed, match="opaque_obj") as refused:
        await pool.run(model_id, bytes(save({"x": np.ones((2, 4), dtype=np.float32)})))
    assert "payload-ran" not in str(refused.value)
    assert (await pool.run(builtin_models.mlp.model_id, mlp_input())).output


@pytest.mark.parametrize(
    "program", ["remembering", "remembering_functional", "uninitialized", "out_of_bounds"]
)
async def test_forced_program_that_passes_data_between_jobs_never_serves_a_job(
    pool: ExecutorPool,
    builtin_models: BuiltinModels,
    tenant_programs: dict[str, Path],
    program: str,
) -> None:
    model_id = force_into_store(builtin_models.store, tenant_programs[program], name=f"forced-{program}")
    secret = bytes(save({"x": np.full((2, 4), 7.0, dtype=np.float32)}))
    probe = bytes(save({"x": np.zeros((2, 4), dtype=np.float32)}))
    for client, data in (("0xAlice", secret), ("0xMallory", probe)):
        with pytest.raises(WorkerCrashed, match="ProgramRefused"):
            await pool.run(model_id, data, client=client)
    assert (await pool.run(builtin_models.mlp.model_id, mlp_input())).output


async def test_user_program_never_batches_two_clients_jobs(
    pool: ExecutorPool, builtin_models: BuiltinModels, tenant_programs: dict[str, Path]
) -> None:
    manifest = builtin_models.store.import_exported_program(
        tenant_programs["rolling"], name="rolling", inputs=SPEC, outputs=("y",), batchable=True
    )
    await pool.warm(manifest.model_id)
    clients = ["0xAlice", "0xBob", "0xAlice", "0xBob", "0xAlice", "0xBob", "0xAlice", "0xBob"]
    inputs = [
        bytes(save({"x": np.full((2, 4), 10 * i + (1 if c == "0xAlice" else 2), dtype=np.float32)}))
        for i, c in enumerate(clients)
    ]
    results = await asyncio.gather(
        *(pool.run(manifest.model_id, data, client=c) for data, c in zip(inputs, clients, strict=True))
    )
    for client, result in zip(clients, results, strict=True):
        own = set().union(*(rows(d, "x") for d, c in zip(inputs, clients, strict=True) if c == client))
        assert rows(result.output, "y") <= own  # rolled rows, but only ever its own client's
    assert max(r.profile.batch_size for r in results) > 2  # one client's jobs still batch


async def test_jobs_without_a_client_are_never_batched_through_a_user_program(
    pool: ExecutorPool, builtin_models: BuiltinModels, tenant_programs: dict[str, Path]
) -> None:
    manifest = builtin_models.store.import_exported_program(
        tenant_programs["rolling"], name="rolling", inputs=SPEC, outputs=("y",), batchable=True
    )
    inputs = [bytes(save({"x": np.full((2, 4), i, dtype=np.float32)})) for i in range(6)]
    results = await asyncio.gather(*(pool.run(manifest.model_id, data) for data in inputs))
    for data, result in zip(inputs, results, strict=True):
        assert result.profile.batch_size == 2
        assert rows(result.output, "y") == rows(data, "x")


async def test_builtin_models_still_batch_across_clients(
    pool: ExecutorPool, builtin_models: BuiltinModels
) -> None:
    inputs = [mlp_input(2, seed=i) for i in range(12)]
    results = await asyncio.gather(
        *(pool.run(builtin_models.mlp.model_id, d, client=f"0x{i:040x}") for i, d in enumerate(inputs))
    )
    assert max(r.profile.batch_size for r in results) > 2


async def test_random_draws_do_not_depend_on_earlier_jobs(
    pool: ExecutorPool, builtin_models: BuiltinModels, tenant_programs: dict[str, Path]
) -> None:
    manifest = builtin_models.store.import_exported_program(
        tenant_programs["random"], name="random", inputs=SPEC, outputs=("y",)
    )
    data = bytes(save({"x": np.zeros((2, 4), dtype=np.float32)}))
    first = await pool.run(manifest.model_id, data, client="0xAlice")
    await pool.run(manifest.model_id, bytes(save({"x": np.zeros((64, 4), dtype=np.float32)})), client="0xBob")
    again = await pool.run(manifest.model_id, data, client="0xAlice")
    assert first.output == again.output  # a fresh generator per job: Bob's draws left no trace
