"""Session-wide test set-up: markers that need hardware, and no child process outliving the run."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

import pytest


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _has_cuda():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


# Spot checks re-run a share of jobs in the background as new paid jobs: tests that count jobs,
# payments or a provider's work must not see extra ones at random. The spot-check tests turn them
# on for the node they check with (set before any node is built, child processes included).
os.environ.setdefault("GPUNODE_CLIENT__SPOT_CHECK_SHARE", "0")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            direct = [int(p) for p in f.read().split()]
    except OSError:
        return []
    return [grand for child in direct for grand in [child, *_children(child)]]


@pytest.fixture(scope="session", autouse=True)
def _kill_leftover_children() -> Iterator[None]:
    """Anvil, PostgreSQL, sandboxed workers: whatever a test started must not outlive the session."""
    yield
    for pid in reversed(_children(os.getpid())):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
