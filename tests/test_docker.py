"""The provider image and the compose file lint clean (no Docker engine is needed for either)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_provider_dockerfile_lints_clean() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run(
        [str(hadolint), str(ROOT / "docker/provider.Dockerfile")], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_file_parses() -> None:
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.fail("docker-compose is missing: run `bash scripts/dev.sh setup`")
    done = subprocess.run(
        [compose, "-f", str(ROOT / "docker/compose.yaml"), "config", "--services"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) == {
        "anvil",
        "deploy",
        "provider1",
        "provider2",
        "client",
        "prometheus",
        "grafana",
    }


def test_grafana_dashboard_charts_only_metrics_a_node_exports() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from node.metrics import GPU_METRICS, NodeMetrics

    families = text_string_to_metric_families(NodeMetrics().export().decode())
    exported = {family.name for family in families if not family.name.endswith("_created")}
    exported |= set(GPU_METRICS)
    dashboard = json.loads((ROOT / "docker/grafana/dashboards/gpunode.json").read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    charted = {
        re.sub(r"_(bucket|total)$", "", name) for q in queries for name in re.findall(r"gpunode_\w+", q)
    }
    assert charted
    assert charted <= exported, charted - exported
    # Every family a node exports has a chart.
    assert exported <= charted, exported - charted


def test_entrypoint_runs_only_commands_that_exist() -> None:
    from typer.testing import CliRunner

    from node.cli.main import _register_groups, app

    _register_groups()
    script = (ROOT / "docker/entrypoint.sh").read_text()
    commands = set(re.findall(r"gpunode ([a-z]+ [a-z]+)", script))
    assert {
        "keys import",
        "contracts deploy",
        "provider register",
        "provider start",
        "node start",
    } <= commands
    for command in sorted(commands):
        result = CliRunner().invoke(app, [*command.split(), "--help"])
        assert result.exit_code == 0, f"gpunode {command}: {result.output}"
