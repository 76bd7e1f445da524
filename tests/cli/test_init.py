"""`gpunode init`: a home with a config that loads and a key that unlocks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from node.chain.keys import unlock_keystore
from node.cli.main import _register_groups, app
from node.config import load_settings

runner = CliRunner()
_register_groups()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GPUNODE_HOME", str(tmp_path / "node"))
    monkeypatch.setenv("GPUNODE_KEY_PASSWORD", "correct horse")
    monkeypatch.delenv("GPUNODE_CONFIG", raising=False)
    return tmp_path / "node"


def test_can_init_a_provider_home(home: Path) -> None:
    result = runner.invoke(app, ["init", "--provider", "--rpc-url", "http://127.0.0.1:8545", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    settings = load_settings(home / "config.toml")
    assert settings.chain.rpc_url == "http://127.0.0.1:8545"
    assert settings.provider.enabled is True
    assert settings.keys.keystore == home / "keystore.json"
    assert unlock_keystore(settings.keys.keystore, "correct horse").address == summary["address"]


def test_cannot_init_over_an_existing_config_without_force(home: Path) -> None:
    assert runner.invoke(app, ["init", "--json"]).exit_code == 0
    config = (home / "config.toml").read_text()
    first_key = (home / "keystore.json").read_bytes()
    again = runner.invoke(app, ["init", "--provider"])
    assert again.exit_code != 0
    assert "already exists" in str(again.exception)
    assert (home / "config.toml").read_text() == config
    forced = runner.invoke(app, ["init", "--provider", "--force", "--json"])
    assert forced.exit_code == 0, forced.output
    # The key is kept: re-initialising never throws away an account that may hold funds.
    assert (home / "keystore.json").read_bytes() == first_key
