"""A node home for CLI commands: `$GPUNODE_HOME` under the test's tmp_path, a keystore password in
the environment, and no config file from the developer's machine."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GPUNODE_HOME", str(tmp_path))
    monkeypatch.setenv("GPUNODE_KEY_PASSWORD", "pw")
    monkeypatch.delenv("GPUNODE_CONFIG", raising=False)
    return tmp_path
