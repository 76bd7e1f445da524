"""scripts/sim_scheduling.py runs the node's scheduler in a simulated market and prints the
figures the scheduling issue names; in a short run the targets it meets still hold, and lying
providers do not capture the market."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "sim_scheduling.py"
LOADS = {"0.5", "0.8", "0.95"}


def run_sim(*args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--jobs", "2000", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(figures, dict)
    return figures


def test_can_print_the_figures_against_the_ideal_and_meet_the_mean_and_share_targets() -> None:
    figures = run_sim()
    per_load = {
        "mean_latency_vs_ideal",
        "p99_latency_vs_ideal",
        "messages_per_job",
        "refusals_per_job",
        "queued_share",
        "queued_share_ideal",
    }
    assert set(figures) == per_load | {
        "idle_while_queued",
        "idle_while_queued_ideal",
        "max_share_equal_providers",
    }
    for key in per_load:
        assert isinstance(figures[key], dict)
        assert set(figures[key]) == LOADS  # type: ignore[arg-type]
    mean, p99 = figures["mean_latency_vs_ideal"], figures["p99_latency_vs_ideal"]
    assert isinstance(mean, dict)
    assert isinstance(p99, dict)
    assert all(0.8 <= float(v) < 3 for v in (*mean.values(), *p99.values()))
    # Measured in this run: 1.26, 0.86 and 0.94 (mean); 1.44, 1.40 and 1.32 (p99).
    assert float(mean["0.8"]) <= 1.0
    assert all(float(v) <= 1.4 for v in mean.values())
    assert all(float(v) <= 2.0 for v in p99.values())
    # Three holds: a request, at most a "queued" and a "ready" or a refusal each, and a give-up
    # for each of the two not taken; then the job, its acceptance and its result: at most 14.
    # About 11.5 are sent.
    messages, refusals = figures["messages_per_job"], figures["refusals_per_job"]
    assert isinstance(messages, dict)
    assert isinstance(refusals, dict)
    assert all(6.0 <= float(v) <= 14.0 for v in messages.values())
    assert all(0.0 <= float(v) <= 0.1 for v in refusals.values())
    # ±25% is the target at the default size (10,000 jobs). Here the slow providers, which the
    # ideal leaves idle at 80% load, get a few jobs each, and chance alone moves the busiest of
    # fifteen such shares by up to +90% (1.27 in this run); the faster classes stay within ±15%.
    # A herd or a lock-in moves a share by far more.
    assert 1.0 <= float(figures["max_share_equal_providers"]) <= 1.8
    assert 0.0 <= float(figures["idle_while_queued"]) <= 1.0  # type: ignore[arg-type]
    assert 0.0 <= float(figures["idle_while_queued_ideal"]) <= 1.0  # type: ignore[arg-type]


def test_can_count_only_the_time_a_provider_idles_while_a_no_faster_one_queues() -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    from sim_scheduling import IdleWhileQueued

    counted = IdleWhileQueued((10.0, 20.0))
    fast, slow = 1000.0, 4000.0
    # Each call gives the states that held since the call before.
    counted.account(12.0, [(fast, False, False)])  # nobody queues
    counted.account(13.0, [(fast, True, False), (fast, False, True)])  # an equal one idles: 1 s
    counted.account(15.0, [(fast, True, False), (slow, False, True)])  # only a slower one idles
    counted.account(16.0, [(slow, True, False), (fast, False, True)])  # a faster one idles: 1 s
    counted.account(18.0, [(fast, True, False), (fast, False, False)])  # nobody idles
    counted.account(25.0, [(fast, True, False), (fast, False, True)])  # up to the window's end: 2 s
    assert counted.seconds == 4.0
    assert counted.share == 0.4


def test_can_count_a_job_whose_holds_all_wait_as_waiting() -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    from sim_scheduling import IdleWhileQueued

    counted = IdleWhileQueued((0.0, 10.0))
    fast, slow = 1000.0, 4000.0
    # No provider queue, but a job whose every hold waits (the fastest holder fast): an equally
    # fast provider idling meanwhile counts (1 s); a slower one idling does not.
    counted.account(1.0, [(fast, False, True)], [fast])
    counted.account(2.0, [(slow, False, True)], [fast])
    counted.account(3.0, [(fast, False, True)], [])
    assert counted.seconds == 1.0


def test_cannot_capture_the_simulated_market_by_lying_about_load() -> None:
    # Three slow providers advertise 64 free slots and 1 ms a job and report every job as
    # starting at once while queueing it: each gets less than an equal share of the jobs.
    figures = run_sim("--liars", "3")
    assert float(figures["liar_share_vs_equal"]) < 1.0  # type: ignore[arg-type]


def test_cannot_run_with_a_bad_configuration() -> None:
    for args in (["--jobs", "10"], ["--liars", "99"]):
        done = subprocess.run(
            [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 2
        assert "must be" in done.stderr
