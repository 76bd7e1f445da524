"""Which sandbox mode applies, and what the node says when none does."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from node.config import ExecutorSettings
from node.executor.errors import SandboxUnavailable
from node.executor.sandbox import Sandbox, SandboxMode
from node.executor.sandbox_mode import detect_mode, runtime_paths, unreadable_by_others


def test_finds_paths_an_unprivileged_uid_cannot_reach() -> None:
    # Not pytest's tmp_path: that sits under a 0700 directory, which would hide everything below.
    root = Path(tempfile.mkdtemp(prefix="gpunode-perm-"))
    try:
        root.chmod(0o755)
        readable = root / "python"
        readable.write_text("")
        readable.chmod(0o644)
        secret = root / "secret"
        secret.write_text("")
        secret.chmod(0o600)
        closed = root / "closed"
        closed.mkdir()
        closed.chmod(0o700)
        (closed / "venv").mkdir()
        assert unreadable_by_others([readable]) == []
        assert unreadable_by_others([readable, secret, closed / "venv"]) == sorted([str(secret), str(closed)])
    finally:
        shutil.rmtree(root)


@pytest.mark.skipif(os.geteuid() != 0, reason="the root modes need root")
async def test_prefers_the_unprivileged_uid_mode_where_the_venv_is_readable() -> None:
    report = await detect_mode(ExecutorSettings())
    if unreadable_by_others(runtime_paths()):
        assert report.mode is SandboxMode.ROOT_USERNS
        assert "not readable by an unprivileged uid" in report.failures[SandboxMode.UNPRIVILEGED_UID]
        assert "readable by other users" in report.fix_hint()
    else:
        assert report.mode is SandboxMode.UNPRIVILEGED_UID
        assert report.failures == {}


async def test_reports_the_none_mode_when_configured() -> None:
    report = await detect_mode(ExecutorSettings(sandbox="none"))
    assert report.mode is SandboxMode.NONE


async def test_says_how_to_fix_a_missing_bubblewrap(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    report = await detect_mode(ExecutorSettings())
    assert report.mode is None
    assert "apt-get install bubblewrap" in report.fix_hint()


def test_cannot_use_root_userns_without_a_pids_cgroup() -> None:
    with pytest.raises(SandboxUnavailable, match="pids cgroup"):
        Sandbox(SandboxMode.ROOT_USERNS, uid_base=2_000_000_000, cgroups=None)
