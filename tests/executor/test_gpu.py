"""The CUDA path: a sandboxed worker on the GPU, bound to its own device nodes only."""

from __future__ import annotations

import json

import pytest
import torch
from executor_support import BuiltinModels, executor_settings, mlp_input
from hf_support import HfModels
from safetensors.torch import load

from node.executor.hf_requests import parse_generation
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


async def test_can_generate_with_an_int8_variant_on_the_gpu_through_torchao(hf_models: HfModels) -> None:
    """On CUDA the int8 variant is quantized by torchao (weight-only) in the sandboxed worker: the
    profile names torchao, and the same seeded request gives the same tokens again."""
    settings = executor_settings(hf_models.store.root, worker_memory_bytes=64 * 2**30)
    request = json.dumps({"prompt": "Hello there", "max_tokens": 8, "temperature": 0.8, "seed": 7}).encode()
    async with ExecutorPool(settings, hf_models.store, device="cuda:0") as pool:
        first = await pool.run(hf_models.llama_int8.model_id, request)
        again = await pool.run(hf_models.llama_int8.model_id, request)
    assert first.profile.device.startswith("cuda:0")
    assert first.profile.quantizer.startswith("torchao-")
    assert parse_generation(first.output).completion_tokens > 0
    assert first.output == again.output
