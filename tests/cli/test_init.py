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


def test_two_homes_on_one_machine_get_different_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    monkeypatch.setenv("GPUNODE_KEY_PASSWORD", "pw")
    monkeypatch.delenv("GPUNODE_CONFIG", raising=False)
    loaded = []
    with socket.socket() as squatter:
        # Something already listens on the API's default port: init picks another one.
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            squatter.bind(("127.0.0.1", 50051))
            squatter.listen()
        except OSError:
            pass  # taken already: the same situation
        for name in ("provider", "client"):
            monkeypatch.setenv("GPUNODE_HOME", str(tmp_path / name))
            result = runner.invoke(app, ["init", "--json"])
            assert result.exit_code == 0, result.output
            settings = load_settings(tmp_path / name / "config.toml")
            loaded.append(settings)
            # The next init sees this home's ports as taken, as a running node would hold them.
            port = int(settings.api.listen.rsplit(":", 1)[1])
            assert port != 50051
    assert loaded[0].p2p.listen[0].startswith("/ip4/0.0.0.0/tcp/")
    assert loaded[0].p2p.mdns is True


def test_init_takes_ports_bootstrap_and_announce(home: Path) -> None:
    peer = "/ip4/192.0.2.7/tcp/4001/p2p/16Uiu2HAmBB5EdcAj6cBZTmzjfNbo93SVPZ8Axtey39n7RZvYSq5c"
    args = ["init", "--p2p-port", "4100", "--api-port", "50100", "--http-port", "8100", "--bootstrap", peer]
    result = runner.invoke(app, [*args, "--announce", "/dns4/gpu.example.org/tcp/4100", "--json"])
    assert result.exit_code == 0, result.output
    settings = load_settings(home / "config.toml")
    assert settings.p2p.listen == ["/ip4/0.0.0.0/tcp/4100"]
    assert settings.api.listen == "127.0.0.1:50100"
    assert settings.http.listen == "127.0.0.1:8100"
    assert settings.p2p.bootstrap == [peer]
    assert settings.p2p.announce == ["/dns4/gpu.example.org/tcp/4100"]


def test_cannot_init_with_a_bootstrap_address_without_peer_id(home: Path) -> None:
    result = runner.invoke(app, ["init", "--bootstrap", "/ip4/192.0.2.7/tcp/4001"])
    assert result.exit_code != 0
    assert "p2p.bootstrap" in str(result.exception)
    assert not home.exists() or not (home / "config.toml").exists()


def test_init_without_a_password_leaves_nothing_behind(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPUNODE_KEY_PASSWORD")
    result = runner.invoke(app, ["init", "--provider"], input="\n")
    assert result.exit_code != 0
    assert not (home / "config.toml").exists()
    assert not (home / "keystore.json").exists()
    again = runner.invoke(app, ["init", "--provider"], input="pw\npw\n")
    assert again.exit_code == 0, again.output
    assert "gpunode provider register" in again.output


def test_inits_next_steps_are_commands_the_cli_has() -> None:
    from node.cli.init_cmd import next_steps

    for provider in (True, False):
        for step in next_steps(provider=provider, rpc_url="http://127.0.0.1:8545"):
            words = step.split("#")[0].split()
            assert words[0] == "gpunode"
            assert runner.invoke(app, [*words[1:], "--help"]).exit_code == 0, step
