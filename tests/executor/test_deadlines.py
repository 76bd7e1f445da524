"""The provider's job timeout is a ceiling: whatever deadline a caller sends, a job never gets more."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from executor_support import executor_settings

from node.executor.errors import JobTimedOut
from node.executor.pool import ExecutorPool
from node.executor.store import ModelStore


@pytest.mark.parametrize(
    ("asked", "granted"),
    [(None, 60.0), (3600.0, 60.0), (math.inf, 60.0), (math.nan, 60.0), (0.5, 0.5), (60.0, 60.0)],
)
def test_a_callers_deadline_may_shorten_the_job_timeout_never_extend_it(
    tmp_path: Path, asked: float | None, granted: float
) -> None:
    pool = ExecutorPool(executor_settings(tmp_path), ModelStore(tmp_path / "store", capacity_bytes=2**20))
    assert pool.job_timeout(asked) == granted


@pytest.mark.parametrize("asked", [0.0, -1.0, -math.inf])
def test_cannot_send_a_deadline_already_passed(tmp_path: Path, asked: float) -> None:
    pool = ExecutorPool(executor_settings(tmp_path), ModelStore(tmp_path / "store", capacity_bytes=2**20))
    with pytest.raises(JobTimedOut, match="deadline passed"):
        pool.job_timeout(asked)
