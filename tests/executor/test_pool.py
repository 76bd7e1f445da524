"""The warm pool end to end: real bwrap sandboxes, real torch in workers, outputs checked bit for bit."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
import torch
from executor_support import (
    BuiltinModels,
    executor_settings,
    exported_program,
    exported_program_with_state,
    mlp_input,
    token_input,
    working_modes,
)
from safetensors.numpy import save
from safetensors.torch import load, load_file
from safetensors.torch import save as save_torch

from node.errors import ExecutorError
from node.executor.builtin_models import build
from node.executor.errors import (
    InputTooLarge,
    InvalidInput,
    JobTimedOut,
    UnknownModel,
    WorkerCrashed,
)
from node.executor.manifest import ModelManifest, TensorSpec
from node.executor.pool import ExecutorPool
from node.executor.sandbox import SandboxMode
from node.executor.store import PROGRAM_FILE
from node.types import sha256

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def pool(builtin_models: BuiltinModels) -> AsyncIterator[ExecutorPool]:
    settings = executor_settings(builtin_models.store.root, max_batch=8, max_batch_wait_ms=5.0)
    async with ExecutorPool(settings, builtin_models.store) as pool:
        yield pool


def in_process(manifest: ModelManifest, store_root: Path, data: bytes) -> bytes:
    """The same model and input in this process's torch, under the worker's deterministic profile."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    model_dir = store_root / manifest.model_id
    if manifest.format == "builtin":
        assert manifest.architecture is not None
        module = build(manifest.architecture, dict(manifest.config))
        module.load_state_dict(load_file(str(model_dir / "weights.safetensors")))
        with torch.inference_mode():
            outputs = module.eval()(**load(data))
    else:
        program = torch.export.load(str(model_dir / PROGRAM_FILE)).module()
        with torch.inference_mode():
            result = program(*load(data).values())
        outputs = dict(zip(manifest.outputs, result if isinstance(result, tuple) else (result,), strict=True))
    return bytes(save_torch({k: v.contiguous() for k, v in outputs.items()}))


@pytest.mark.parametrize(
    ("model", "data"),
    [
        ("mlp", mlp_input(3)),
        ("classifier", token_input(2, 24)),
        ("lm", token_input(1, 32, seed=5)),
        ("lm", token_input(8, 128, seed=7)),  # 2 MiB of logits: the memfd path, read off the event loop
    ],
)
async def test_can_run_builtin_models_bit_identical_to_in_process_torch(
    pool: ExecutorPool, builtin_models: BuiltinModels, model: str, data: bytes
) -> None:
    manifest: ModelManifest = getattr(builtin_models, model)
    result = await pool.run(manifest.model_id, data)
    assert result.output == in_process(manifest, builtin_models.store.root, data)
    assert result.output_hash == sha256(result.output)
    assert result.input_hash == sha256(data)
    assert result.model_id.hex() == manifest.model_id
    profile = result.profile
    assert (profile.threads, profile.deterministic, profile.device) == (1, True, "cpu")
    assert profile.batch_size == load(data)[manifest.inputs[0].name].shape[0]
    assert profile.torch_version == torch.__version__


async def test_can_run_an_exported_program(
    pool: ExecutorPool, builtin_models: BuiltinModels, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = exported_program(tmp_path_factory.mktemp("pt2") / "small.pt2")
    spec = (TensorSpec(name="x", dtype="F32", shape=(None, 4)),)
    manifest = builtin_models.store.import_exported_program(path, name="small", inputs=spec, outputs=("y",))
    data = bytes(save({"x": np.arange(12, dtype=np.float32).reshape(3, 4)}))
    result = await pool.run(manifest.model_id, data)
    assert result.output == in_process(manifest, builtin_models.store.root, data)


async def test_can_run_an_exported_program_with_state_and_two_outputs(
    pool: ExecutorPool, builtin_models: BuiltinModels, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = exported_program_with_state(tmp_path_factory.mktemp("pt2") / "stateful.pt2")
    spec = (TensorSpec(name="x", dtype="F32", shape=(None, 3, 10)),)
    store = builtin_models.store
    manifest = store.import_exported_program(
        path, name="stateful", inputs=spec, outputs=("features", "total")
    )
    data = bytes(save({"x": np.linspace(-1, 1, 60, dtype=np.float32).reshape(2, 3, 10)}))
    result = await pool.run(manifest.model_id, data)
    assert set(load(result.output)) == {"features", "total"}
    assert result.output == in_process(manifest, store.root, data)


async def test_can_batch_concurrent_jobs_without_mixing_them_up(
    pool: ExecutorPool, builtin_models: BuiltinModels
) -> None:
    inputs = [mlp_input(2, seed=i) for i in range(16)]
    results = await asyncio.gather(*(pool.run(builtin_models.mlp.model_id, data) for data in inputs))
    assert max(r.profile.batch_size for r in results) > 2  # some jobs shared a batch
    for data, result in zip(inputs, results, strict=True):
        alone = load(in_process(builtin_models.mlp, builtin_models.store.root, data))["output"]
        torch.testing.assert_close(load(result.output)["output"], alone, rtol=1e-5, atol=1e-5)


async def test_cannot_send_an_oversize_input_and_nothing_reaches_a_worker(
    pool: ExecutorPool, builtin_models: BuiltinModels
) -> None:
    await pool.run(builtin_models.mlp.model_id, mlp_input())
    worker = pool.lanes()[builtin_models.mlp.model_id].workers()[0]
    sent_before = worker.batches_run
    huge = mlp_input(rows=pool.settings.max_input_bytes // 256 + 1)
    with pytest.raises(InputTooLarge, match="over the limit"):
        await pool.run(builtin_models.mlp.model_id, huge)
    assert worker.batches_run == sent_before
    assert (await pool.run(builtin_models.mlp.model_id, mlp_input())).output


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (bytes(save({"wrong": np.zeros((1, 64), np.float32)})), "takes tensors"),
        (bytes(save({"input": np.zeros((1, 64), np.float64)})), "wants F32"),
        (bytes(save({"input": np.zeros((1, 63), np.float32)})), "wants F32"),
        (b"\x00" * 16, "runs past the end|not JSON|not a JSON object"),
    ],
)
async def test_cannot_send_input_that_does_not_fit_the_model(
    pool: ExecutorPool, builtin_models: BuiltinModels, data: bytes, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        await pool.run(builtin_models.mlp.model_id, data)
    # The same check, without running anything: what a provider asks before claiming a job.
    with pytest.raises(InvalidInput, match=message):
        await pool.check_input(builtin_models.mlp.model_id, data)
    await pool.check_input(builtin_models.mlp.model_id, mlp_input())


async def test_cannot_run_an_unknown_model(pool: ExecutorPool) -> None:
    with pytest.raises(UnknownModel, match="not in the store"):
        await pool.run("00" * 32, mlp_input())


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.full((1, 8), 10_000, np.int64), r"outside \[0, 512\)"),
        (np.full((1, 8), -1, np.int64), r"outside \[0, 512\)"),
        (np.zeros((1, 200), np.int64), "takes 128 at most"),
        (np.zeros((1, 0), np.int64), "at least one of each"),
    ],
)
async def test_bad_token_ids_fail_alone_before_batching_and_cost_no_run(
    pool: ExecutorPool, builtin_models: BuiltinModels, bad: np.ndarray, message: str
) -> None:
    lm = builtin_models.lm.model_id
    await pool.run(lm, token_input(1, 8))
    worker = pool.lanes()[lm].workers()[0]
    runs = worker.batches_run
    honest = [token_input(1, 8, seed=i) for i in range(17)]
    outcomes = await asyncio.gather(
        pool.run(lm, bytes(save({"input_ids": bad}))),
        *(pool.run(lm, d) for d in honest),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], InvalidInput)
    assert re.search(message, str(outcomes[0]))
    for data, outcome in zip(honest, outcomes[1:], strict=True):
        assert not isinstance(outcome, BaseException)
        torch.testing.assert_close(
            load(outcome.output)["logits"],
            load(in_process(builtin_models.lm, builtin_models.store.root, data))["logits"],
            rtol=1e-5,
            atol=1e-5,
        )
    # 17 honest jobs in batches of at most 8: 3 runs. Before, the model refused the bad ids inside
    # a batch, and every job of that batch ran again alone: 3 + 8.
    assert worker.batches_run - runs <= 3
    assert [w.pid for w in pool.lanes()[lm].workers()] == [worker.pid]


async def test_killed_worker_fails_its_job_clearly_and_is_replaced(
    pool: ExecutorPool, builtin_models: BuiltinModels
) -> None:
    heavy = builtin_models.heavy.model_id
    await pool.warm(heavy)
    lane = pool.lanes()[heavy]
    worker = lane.workers()[0]
    job = asyncio.ensure_future(pool.run(heavy, mlp_input(256, features=1024)))
    await worker.running.wait()
    os.killpg(worker.pid, signal.SIGKILL)
    with pytest.raises(WorkerCrashed, match="worker died while running the job"):
        await job
    result = await pool.run(heavy, mlp_input(1, features=1024))
    assert result.output
    assert [w.pid for w in lane.workers()] != [worker.pid]


async def test_job_over_its_deadline_fails_at_it_and_its_worker_stays_warm(
    pool: ExecutorPool, builtin_models: BuiltinModels
) -> None:
    heavy = builtin_models.heavy.model_id
    await pool.warm(heavy)
    worker = pool.lanes()[heavy].workers()[0]
    with pytest.raises(JobTimedOut, match=r"limit of 0\.05 s"):
        await pool.run(heavy, mlp_input(512, features=1024), timeout_s=0.05)
    # Only the provider's job_timeout_s kills a worker; a caller's deadline ends its own wait.
    assert (await pool.run(heavy, mlp_input(1, features=1024))).output
    assert worker.alive
    assert pool.lanes()[heavy].workers() == [worker]


@pytest.mark.parametrize("mode", working_modes())
async def test_every_sandbox_mode_gives_the_same_output(
    pool: ExecutorPool, builtin_models: BuiltinModels, mode: SandboxMode
) -> None:
    from node.executor.sandbox_mode import create_sandbox

    settings = executor_settings(builtin_models.store.root)
    sandbox = await create_sandbox(settings, mode)
    data = mlp_input(4, seed=9)
    try:
        async with ExecutorPool(settings, builtin_models.store, sandbox=sandbox) as other:
            result = await other.run(builtin_models.mlp.model_id, data)
            pids = [w.pid for lane in other.lanes().values() for w in lane.workers()]
    finally:
        assert sandbox.cgroups is not None
        sandbox.cgroups.close()
    assert result.output == (await pool.run(builtin_models.mlp.model_id, data)).output
    for pid in pids:  # closing the pool ends its workers
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_can_run_without_a_sandbox_for_development(
    pool: ExecutorPool, builtin_models: BuiltinModels
) -> None:
    settings = executor_settings(builtin_models.store.root, sandbox="none")
    data = mlp_input(2, seed=3)
    async with ExecutorPool(settings, builtin_models.store) as bare:
        assert bare.sandbox.mode is SandboxMode.NONE
        result = await bare.run(builtin_models.mlp.model_id, data)
    with pytest.raises(ExecutorError, match="not running"):
        await bare.run(builtin_models.mlp.model_id, data)
    assert result.output == (await pool.run(builtin_models.mlp.model_id, data)).output


async def test_cancelled_job_does_not_block_the_lane(
    pool: ExecutorPool, builtin_models: BuiltinModels
) -> None:
    heavy = builtin_models.heavy.model_id
    await pool.warm(heavy)
    busy = asyncio.ensure_future(pool.run(heavy, mlp_input(64, features=1024)))
    queued = asyncio.ensure_future(pool.run(heavy, mlp_input(64, features=1024, seed=1)))
    await asyncio.sleep(0)
    queued.cancel()
    assert (await busy).output
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert (await pool.run(heavy, mlp_input(1, features=1024))).output


async def test_pinned_cpu_capability_is_recorded_in_the_profile(
    pool: ExecutorPool, builtin_models: BuiltinModels
) -> None:
    settings = executor_settings(builtin_models.store.root, cpu_capability="default")
    data = mlp_input(3, seed=4)
    async with ExecutorPool(settings, builtin_models.store) as pinned:
        result = await pinned.run(builtin_models.mlp.model_id, data)
    default = await pool.run(builtin_models.mlp.model_id, data)
    assert result.profile.cpu_capability == "DEFAULT"
    assert default.profile.cpu_capability != "DEFAULT"
    assert result.profile.hash() != default.profile.hash()  # a receipt tells the two runs apart
    torch.testing.assert_close(
        load(result.output)["output"], load(default.output)["output"], rtol=1e-4, atol=1e-4
    )


async def test_model_that_cannot_load_gets_a_clear_error(
    pool: ExecutorPool, builtin_models: BuiltinModels
) -> None:
    store = builtin_models.store
    good = builtin_models.mlp
    # Weights of one shape under a manifest that promises another: only torch, in the worker, can tell.
    wrong = ModelManifest.model_validate(
        {**good.model_dump(), "name": "mismatched", "config": {**good.config, "hidden": 128}}
    )
    store.install(wrong, {"weights.safetensors": store.path(good.model_id) / "weights.safetensors"})
    with pytest.raises(WorkerCrashed, match=r"exited before it was ready(.|\n)*size mismatch"):
        await pool.run(wrong.model_id, mlp_input())
    assert (await pool.run(good.model_id, mlp_input())).output


async def test_jobs_arriving_together_for_a_model_that_cannot_load_all_get_its_error(
    pool: ExecutorPool, builtin_models: BuiltinModels
) -> None:
    store = builtin_models.store
    good = builtin_models.mlp
    wrong = ModelManifest.model_validate(
        {**good.model_dump(), "name": "mismatched-together", "config": {**good.config, "hidden": 96}}
    )
    store.install(wrong, {"weights.safetensors": store.path(good.model_id) / "weights.safetensors"})
    outcomes = await asyncio.gather(
        *(pool.run(wrong.model_id, mlp_input(seed=seed)) for seed in range(4)), return_exceptions=True
    )
    # Before: the first job got the real error, the others "the executor is shutting down".
    for outcome in outcomes:
        assert isinstance(outcome, WorkerCrashed)
        assert "size mismatch" in str(outcome)
    assert wrong.model_id not in pool.lanes()
