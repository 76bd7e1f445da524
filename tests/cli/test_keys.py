"""`gpunode keys new` and `gpunode keys show`, driven through typer's CliRunner."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from node.chain.keys import unlock_keystore
from node.cli.keys import app
from node.errors import KeyStoreError

GPUNODE = Path(sys.executable).parent / "gpunode"
PASSWORD_ENV = {"GPUNODE_KEY_PASSWORD": "hunter2"}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No config file from the developer's home leaks into these tests."""
    monkeypatch.setenv("GPUNODE_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.delenv("GPUNODE_KEY_PASSWORD", raising=False)


def test_can_create_a_keystore_with_the_password_from_env(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    result = runner.invoke(app, ["new", "--keystore", str(path), "--json"], env=PASSWORD_ENV)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = unlock_keystore(path, "hunter2")
    assert summary == {
        "address": key.address,
        "public_key": "0x" + key.public_key_compressed.hex(),
        "keystore": str(path),
    }


def test_can_create_a_keystore_with_a_prompted_password(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    result = runner.invoke(app, ["new", "--keystore", str(path)], input="s3cret\ns3cret\n")
    assert result.exit_code == 0, result.output
    key = unlock_keystore(path, "s3cret")
    assert key.address in result.stdout
    assert "s3cret" not in result.stdout


def test_cannot_create_a_keystore_when_the_confirmation_differs(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    result = runner.invoke(app, ["new", "--keystore", str(path)], input="one\ntwo\n")
    assert result.exit_code != 0
    assert "do not match" in result.output
    assert not path.exists()


def test_can_show_the_key_in_a_keystore(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    created = runner.invoke(app, ["new", "--keystore", str(path), "--json"], env=PASSWORD_ENV)
    shown = runner.invoke(app, ["show", "--keystore", str(path), "--json"], env=PASSWORD_ENV)
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout) == json.loads(created.stdout)
    human = runner.invoke(app, ["show", "--keystore", str(path)], input="hunter2\n")
    assert human.exit_code == 0, human.output
    assert json.loads(created.stdout)["address"] in human.stdout


def test_cannot_overwrite_a_keystore_without_force(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    first = runner.invoke(app, ["new", "--keystore", str(path), "--json"], env=PASSWORD_ENV)
    original = path.read_bytes()
    again = runner.invoke(app, ["new", "--keystore", str(path), "--json"], env=PASSWORD_ENV)
    assert isinstance(again.exception, KeyStoreError)
    assert "--force" in str(again.exception)
    assert path.read_bytes() == original
    forced = runner.invoke(app, ["new", "--keystore", str(path), "--force", "--json"], env=PASSWORD_ENV)
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.stdout)["address"] != json.loads(first.stdout)["address"]


def test_cannot_show_a_keystore_with_a_wrong_password(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    runner.invoke(app, ["new", "--keystore", str(path)], env=PASSWORD_ENV)
    result = runner.invoke(app, ["show", "--keystore", str(path)], env={"GPUNODE_KEY_PASSWORD": "nope"})
    assert isinstance(result.exception, KeyStoreError)
    assert "wrong password" in str(result.exception)


def test_can_take_the_keystore_path_and_password_variable_from_settings(
    runner: CliRunner, tmp_path: Path
) -> None:
    path = tmp_path / "from-config.json"
    config = tmp_path / "config.toml"
    config.write_text(f'[keys]\nkeystore = "{path}"\npassword_env = "MY_NODE_PASSWORD"\n')
    env = {"GPUNODE_CONFIG": str(config), "MY_NODE_PASSWORD": "pw"}
    result = runner.invoke(app, ["new", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert unlock_keystore(path, "pw").address == json.loads(result.stdout)["address"]


def test_cannot_show_a_missing_keystore_from_the_command_line(tmp_path: Path) -> None:
    """Through the real console entry point: one red line and exit status 1, no traceback."""
    env = {**os.environ, "GPUNODE_CONFIG": str(tmp_path / "absent.toml"), **PASSWORD_ENV}
    completed = subprocess.run(
        [str(GPUNODE), "keys", "show", "--keystore", str(tmp_path / "none.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 1, completed.stderr
    assert "no keystore at" in completed.stderr
    assert "gpunode keys new" in completed.stderr
    assert "Traceback" not in completed.stderr
