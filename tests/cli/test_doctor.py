"""`gpunode doctor`: a table or JSON of checks, exit status 1 when a required one fails."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from node.cli.main import _register_groups, app
from node.executor.sandbox_mode import runtime_paths, unreadable_by_others
from node.logging import get_logger

runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def _commands() -> None:
    if not any(getattr(c, "name", None) == "doctor" for c in app.registered_commands):
        _register_groups()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[executor]\nmodel_dir = "{tmp_path / "models"}"\nmodel_cache_bytes = 1048576\n')
    return path


def test_can_check_this_machine_as_json(config: Path) -> None:
    result = runner.invoke(app, ["doctor", "--json", "--config", str(config)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) == {
        "bubblewrap",
        "user namespaces",
        "seccomp",
        "sandbox mode",
        "cgroups",
        "GPU driver / NVML",
        "model disk",
        "key",
        "chain",
        "p2p port",
        "API port",
    }
    # The node's own set-up is reported, and does not decide whether the machine can serve.
    assert checks["key"]["status"] == "fail"
    assert checks["key"]["fix"] == "gpunode init"
    assert checks["chain"]["status"] == "warn"
    mode = checks["sandbox mode"]
    if unreadable_by_others(runtime_paths()):  # e.g. a checkout under a 0700 directory
        assert mode["status"] == "warn"
        assert mode["detail"].startswith("root-userns")
    else:
        assert (mode["status"], mode["detail"]) == ("ok", "unprivileged-uid")
    assert checks["seccomp"]["status"] == "ok"
    assert checks["model disk"]["status"] == "ok"


def test_can_render_a_table(config: Path) -> None:
    result = runner.invoke(app, ["doctor", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "sandbox mode" in result.output
    assert "ready to serve jobs" in result.output


def test_cannot_pass_without_bubblewrap(
    config: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no bwrap on it
    result = runner.invoke(app, ["doctor", "--json", "--config", str(config)])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    bwrap = next(c for c in report["checks"] if c["name"] == "bubblewrap")
    assert bwrap["status"] == "fail"
    assert "apt-get install bubblewrap" in bwrap["fix"]


def test_says_how_to_fix_a_venv_the_sandbox_uid_cannot_read(
    config: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import node.executor.sandbox_mode as sandbox_mode

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o700)
    monkeypatch.setattr(sandbox_mode, "runtime_paths", lambda: [locked / "python"])
    (locked / "python").touch()
    result = runner.invoke(app, ["doctor", "--json", "--config", str(config)])
    report = json.loads(result.stdout)
    mode = next(c for c in report["checks"] if c["name"] == "sandbox mode")
    assert mode["status"] == "warn"  # root-userns still works here, bounded by a pids cgroup
    assert "root-userns" in mode["detail"]
    assert "readable by other users" in mode["fix"]
    assert any(f"({parent})" in mode["fix"] for parent in locked.parents)
    assert result.exit_code == 0


def test_can_keep_log_lines_off_the_json_report(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import node.cli.doctor as doctor_cli

    checks = doctor_cli.run_checks

    async def logging_checks(settings: Any) -> Any:
        # What a cgroup scope left busy by another process says while the checks run.
        get_logger("node.executor.cgroups").warning(
            "cgroup_not_removed", path="/sys/fs/cgroup/pids/gpunode-1-0", reason="Device or resource busy"
        )
        return await checks(settings)

    monkeypatch.setattr(doctor_cli, "run_checks", logging_checks)
    result = runner.invoke(app, ["doctor", "--json", "--config", str(config)])
    assert json.loads(result.stdout)["checks"]
    assert "cgroup_not_removed" in result.stderr
