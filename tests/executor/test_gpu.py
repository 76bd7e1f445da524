"""The CUDA path: a sandboxed worker on the GPU, bound to its own device nodes only."""

from __future__ import annotations

import pytest
import torch
from executor_support import BuiltinModels, executor_settings, mlp_input
from safetensors.torch import load

from node.executor.inventory import take_inventory
from node.executor.pool import ExecutorPool

pytestmark = pytest.mark.gpu


async def test_can_inventory_gpus_with_nvml() -> None:
    inventory = await take_inventory(benchmark=True, matmul_size=1024, repeats=3)
    gpus = [d for d in inventory.devices if d.kind == "cuda"]
    assert len(gpus) == torch.cuda.device_count()
    assert all(g.compute_capability and g.memory_bytes > 0 for g in gpus)
    assert {b.device for b in inventory.benchmarks} == {g.device for g in gpus}


async def test_can_run_a_job_on_the_gpu_in_the_sandbox(builtin_models: BuiltinModels) -> None:
    settings = executor_settings(builtin_models.store.root, worker_memory_bytes=64 * 2**30)
    async with ExecutorPool(settings, builtin_models.store, device="cuda:0") as pool:
        cpu = ExecutorPool(settings, builtin_models.store)
        result = await pool.run(builtin_models.mlp.model_id, mlp_input(4))
        assert result.profile.device.startswith("cuda:0")
        async with cpu:
            reference = await cpu.run(builtin_models.mlp.model_id, mlp_input(4))
    torch.testing.assert_close(
        load(result.output)["output"], load(reference.output)["output"], rtol=1e-3, atol=1e-3
    )
