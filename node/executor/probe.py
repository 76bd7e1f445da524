"""Device inventory and start-up benchmark, run as `python -m node.executor.probe` (imports torch).

Prints one JSON object on stdout; `node.executor.inventory` starts it and parses the result, so
the node process itself never imports torch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from node.executor.builtin_models import DEFAULT_CONFIGS, WEIGHTS_FILE, build, write_builtin


def cuda_devices() -> list[dict[str, Any]]:
    if not torch.cuda.is_available():
        return []
    nvml = _nvml_details()
    devices = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        devices.append(
            {
                "kind": "cuda",
                "index": index,
                "name": props.name,
                "memory_bytes": props.total_memory,
                "compute_capability": f"{props.major}.{props.minor}",
                **nvml.get(index, {"driver": None, "healthy": True, "health_detail": "NVML not available"}),
            }
        )
    return devices


def _nvml_details() -> dict[int, dict[str, Any]]:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no driver library, or no NVIDIA driver loaded: torch's view is all we have
        return {}
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        details = {}
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            temperature = pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
            healthy, detail = temperature < 90, f"{temperature} C"
            try:
                uncorrected = pynvml.nvmlDeviceGetTotalEccErrors(
                    handle, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC
                )
                healthy, detail = (
                    healthy and uncorrected == 0,
                    f"{detail}, {uncorrected} uncorrected ECC errors",
                )
            except pynvml.NVMLError:
                pass
            details[index] = {"driver": str(driver), "healthy": healthy, "health_detail": detail}
        return details
    finally:
        pynvml.nvmlShutdown()


def cpu_device() -> dict[str, Any]:
    name = "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return {
        "kind": "cpu",
        "index": 0,
        "name": name,
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "compute_capability": torch.backends.cpu.get_cpu_capability(),
        "driver": None,
        "healthy": True,
        "health_detail": f"{os.cpu_count()} logical cores",
    }


def _timed(fn: Any, device: str, repeats: int) -> list[float]:
    fn()  # warm-up: first calls pay for kernel selection and allocation
    times = []
    for _ in range(repeats):
        if device != "cpu":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        fn()
        if device != "cpu":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    return times


def benchmark(device: str, *, size: int, batch: int, repeats: int) -> dict[str, Any]:
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    matmul_s = min(_timed(lambda: a @ b, device, repeats))
    # The reference model is the built-in MLP exactly as a store holds it, so its model id can
    # stand beside the figures in an advert.
    with tempfile.TemporaryDirectory() as scratch:
        manifest = write_builtin("mlp", Path(scratch))
        weights = load_file(str(Path(scratch) / WEIGHTS_FILE))
    model = build("mlp", DEFAULT_CONFIGS["mlp"])
    model.load_state_dict(weights)
    model.eval().to(device)
    x = torch.randn(batch, DEFAULT_CONFIGS["mlp"]["in_features"], device=device)
    with torch.inference_mode():
        latencies = _timed(lambda: model(x), device, repeats)
    p50 = statistics.median(latencies)
    return {
        "device": device,
        "matmul_gflops": 2 * size**3 / matmul_s / 1e9,
        "reference_model": "builtin:mlp",
        "reference_model_id": manifest.model_id,
        "batch": batch,
        "latency_ms_p50": p50 * 1000,
        "throughput_items_per_s": batch / p50,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--benchmark", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    devices = cuda_devices() or [cpu_device()]
    figures = []
    if args.benchmark:
        targets = [f"cuda:{d['index']}" for d in devices if d["kind"] == "cuda"] or ["cpu"]
        figures = [benchmark(t, size=args.size, batch=args.batch, repeats=args.repeats) for t in targets]
    out = {"torch_version": torch.__version__, "devices": devices, "benchmarks": figures}
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
