"""`gpunode devnet`, the README's main command: a whole marketplace runs, settles and adds up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from node.devnet import DevnetOptions, run_devnet

pytestmark = pytest.mark.integration


async def test_can_run_a_marketplace_over_every_payment_path(tmp_path: Path) -> None:
    lines: list[str] = []
    options = DevnetOptions(providers=2, jobs=4, dapp_jobs=1, home=tmp_path)
    summary = await run_devnet(options, lines.append)

    assert summary.ok, summary.problems
    assert summary.completed == summary.jobs == 5
    assert summary.by_path == {"escrow": 2, "voucher": 2, "dapp": 1}
    assert summary.receipts_verified == 4
    assert summary.market_balance_wei == summary.market_owed_wei
    assert sum(p.jobs_served for p in summary.provider_summaries) == 5
    for provider in summary.provider_summaries:
        assert provider.paid_wei == provider.earned_wei == provider.jobs_served * options.price_wei
        assert provider.advertised_items_per_s is not None
        assert provider.advertised_items_per_s > 0
    assert summary.gas_per_job["escrow"] > 0
    assert summary.gas_per_job["voucher"] > 0
    assert any("advert reached the client" in line for line in lines)
    # The homes were kept because one was given: every node left its database behind.
    assert (tmp_path / "client" / "gpunode.db").is_file()


async def test_can_pay_for_the_clients_spot_checks_and_count_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every job spot-checked, each is run again on the other provider and paid for: the
    providers' pay still adds up to exactly the jobs they ran, re-runs included."""
    monkeypatch.setenv("GPUNODE_CLIENT__SPOT_CHECK_SHARE", "1")
    lines: list[str] = []
    options = DevnetOptions(providers=2, jobs=4, dapp_jobs=0, home=tmp_path)
    summary = await run_devnet(options, lines.append)

    assert summary.ok, summary.problems
    assert summary.spot_checks == 4
    assert summary.completed == 4
    assert sum(p.jobs_served for p in summary.provider_summaries) == 8
    for provider in summary.provider_summaries:
        assert provider.paid_wei == provider.earned_wei == provider.jobs_served * options.price_wei
    assert summary.market_balance_wei == summary.market_owed_wei
    assert any("spot checks" in line for line in lines)


def test_cannot_run_a_devnet_without_providers() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from node.cli.main import main; main()", "devnet", "--providers", "0"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "--providers" in done.stderr


def test_can_print_the_summary_as_json(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from node.cli.main import main; main()",
            "devnet",
            "--providers",
            "1",
            "--jobs",
            "2",
            "--dapp-jobs",
            "0",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["ok"] is True
    assert summary["completed"] == 2
    assert summary["market_balance_wei"] == summary["market_owed_wei"]
    assert summary["max_share_vs_equal"] == 1.0  # one provider served every job
