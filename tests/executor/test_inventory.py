"""Device inventory and start-up benchmark, probed in a torch subprocess."""

from __future__ import annotations

import os

import pytest

from node.executor.inventory import take_inventory


async def test_can_list_the_cpu_as_a_device_and_benchmark_it() -> None:
    inventory = await take_inventory(benchmark=True, matmul_size=256, repeats=3)
    assert inventory.torch_version.startswith("2.")
    cpu = [d for d in inventory.devices if d.kind == "cpu"]
    if not cpu:
        pytest.skip("a GPU is present: the CPU is listed only when there is none")
    assert cpu[0].device == "cpu"
    assert cpu[0].memory_bytes == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert cpu[0].healthy
    (figures,) = inventory.benchmarks
    assert figures.device == "cpu"
    assert figures.matmul_gflops > 0
    assert figures.latency_ms_p50 > 0
    assert figures.throughput_items_per_s == pytest.approx(figures.batch / figures.latency_ms_p50 * 1000)


async def test_can_list_devices_without_benchmarking() -> None:
    inventory = await take_inventory(benchmark=False)
    assert inventory.devices
    assert inventory.benchmarks == ()
