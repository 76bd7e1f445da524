"""scripts/sim_verification.py runs the spot-check sampler, the scheduler and the dispute rules in
a simulated market and prints the figures the verification issue names; in a short run cheating
still loses and no honest provider is slashed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "sim_verification.py"
RATES = {"0.001", "0.01", "0.1"}


def test_can_print_the_figures_and_make_cheating_lose() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--providers", "50", "--clients", "2", "--jobs", "4000", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(figures) >= {
        "spot_check_share",
        "extra_compute",
        "jobs_to_detect_99pct",
        "cheater_profit_wei",
        "honest_slashed",
    }
    assert figures["honest_slashed"] == 0
    assert figures["market"]["honest_excluded"] == 0
    assert set(figures["jobs_to_detect_99pct"]) == RATES
    assert figures["jobs_to_detect_99pct"]["0.01"] <= 5000
    assert all(profit < 0 for profit in figures["cheater_profit_wei"].values())
    # Lazy providers (zeros, cached outputs) are wrong on every job: all caught within the run.
    caught, lazy = figures["market"]["lazy_caught"].split("/")
    assert caught == lazy
    # A short run pays the newcomer boost on every pair of client and provider: bounded still.
    assert 0 < figures["extra_compute"] < 0.2


def test_cannot_simulate_a_market_too_small_to_say_anything() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--providers", "5", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "at least 20 providers" in done.stderr
