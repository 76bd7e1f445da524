"""The benchmark scripts still run and print the figures their issues name (a short run each:
the figures themselves are measured with the scripts' defaults, not here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def run_json(script: str, *args: str, timeout_s: float = 300) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / script), *args, "--json"],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(figures, dict)
    return figures


@pytest.mark.parametrize("nodes", ["process", "shared"])
def test_bench_e2e_prints_overhead_and_throughput(nodes: str) -> None:
    figures = run_json("bench_e2e.py", "--nodes", nodes, "--jobs", "5", "--warmup", "1", "--burst", "5")
    assert set(figures) == {"overhead_p50_ms", "overhead_p99_ms", "jobs_per_s"}
    assert 0 < figures["overhead_p50_ms"] <= figures["overhead_p99_ms"]
    assert figures["jobs_per_s"] > 0


def test_bench_scheduler_prints_decisions_per_second() -> None:
    figures = run_json("bench_scheduler.py", "--providers", "500", "--decisions", "2000")
    assert figures["providers"] == 500
    assert figures["decisions_per_s"] > 0


def test_bench_http_prints_the_http_face_cost() -> None:
    figures = run_json("bench_http.py", "--jobs", "3", "--requests", "6", "--concurrency", "2")
    assert {"chat_stream_ttft_overhead_p50_ms", "http_overhead_p50_ms", "requests_per_s"} <= set(figures)
    assert figures["requests_per_s"] > 0
    assert figures["http_layer_p50_ms"] > 0


def test_bench_blobs_prints_the_cold_start_of_a_fetched_model() -> None:
    figures = run_json("bench_blobs.py", "--mb", "8", "--runs", "1", timeout_s=600)
    parts = ("fetch_s", "verify_s", "install_s", "warm_s")
    assert all(figures[part] >= 0 for part in parts)
    assert figures["cold_start_s"] >= figures["fetch_s"] > 0
    assert figures["transfer_mb_per_s"] > 0
