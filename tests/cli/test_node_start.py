"""`gpunode node start` refuses to start on settings it cannot run with, saying what to fix."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from node.cli.main import _register_groups, app

runner = CliRunner()
_register_groups()


def test_cannot_start_a_node_without_a_key(home: Path) -> None:
    result = runner.invoke(app, ["node", "start"])
    assert result.exit_code == 1
    assert "keystore" in result.output


def test_cannot_start_a_node_without_contract_addresses(home: Path) -> None:
    assert runner.invoke(app, ["keys", "new", "--json"]).exit_code == 0
    result = runner.invoke(app, ["node", "start"])
    assert result.exit_code == 1
    assert "registry_address" in result.output
    assert "gpunode devnet" in result.output or "deploy" in result.output
