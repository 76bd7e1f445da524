"""Executor test support: a store of built-in models generated here (no downloads), test limits, inputs."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save

from node.config import ExecutorSettings
from node.executor.builtin_models import write_builtin
from node.executor.manifest import ModelManifest
from node.executor.sandbox import SandboxMode
from node.executor.store import ModelStore

# Small enough that a runaway job hits a limit fast, large enough for torch to import and run.
TEST_LIMITS = {
    "worker_memory_bytes": int(1.5 * 2**30),
    "tmpfs_bytes": 16 * 2**20,
    "max_processes": 32,
    "worker_cpu_seconds": 300,
    "job_timeout_s": 60.0,
    "max_input_bytes": 4 * 2**20,
}


def executor_settings(store_dir: Path, **overrides: object) -> ExecutorSettings:
    return ExecutorSettings.model_validate({"model_dir": store_dir, **TEST_LIMITS, **overrides})


@dataclass(frozen=True)
class BuiltinModels:
    store: ModelStore
    mlp: ModelManifest
    classifier: ModelManifest
    lm: ModelManifest
    heavy: ModelManifest  # an MLP slow enough (~0.3 s a job) to be caught mid-run


@pytest.fixture(scope="session")
def builtin_models() -> Iterator[BuiltinModels]:
    root = Path(tempfile.mkdtemp(prefix="gpunode-models-"))
    staging = Path(tempfile.mkdtemp(prefix="gpunode-gen-"))
    try:
        store = ModelStore(root / "store", capacity_bytes=2**30)

        def make(architecture: str, name: str | None = None, **config: int) -> ModelManifest:
            out = staging / (name or architecture)
            write_builtin(architecture, out, name=name, **config)
            return store.import_dir(out)

        yield BuiltinModels(
            store=store,
            mlp=make("mlp"),
            classifier=make("transformer_classifier"),
            lm=make("causal_lm"),
            heavy=make("mlp", "heavy-mlp", in_features=1024, hidden=2048, out_features=8, layers=3),
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)


def mlp_input(rows: int = 2, seed: int = 0, features: int = 64) -> bytes:
    rng = np.random.default_rng(seed)
    return bytes(save({"input": rng.standard_normal((rows, features), dtype=np.float32)}))


def token_input(rows: int = 2, length: int = 16, seed: int = 0, vocab: int = 512) -> bytes:
    rng = np.random.default_rng(seed)
    return bytes(save({"input_ids": rng.integers(0, vocab, size=(rows, length), dtype=np.int64)}))


class _RunsCode:
    """Unpickling this runs a shell command: the classic malicious model file."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, (self.command,))


def malicious_pickle(command: str = "touch /tmp/pwned") -> bytes:
    import pickle

    return pickle.dumps({"weights": _RunsCode(command)})


def exported_program(path: Path) -> Path:
    """A small real `.pt2`: relu(linear(x)) with a dynamic batch dimension."""
    import torch

    class Small(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.linear(x))

    torch.manual_seed(0)
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(Small(), (torch.randn(2, 4),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    return path


def exported_program_with_state(path: Path) -> Path:
    """A `.pt2` with buffers, batch-norm statistics, a lifted constant and two outputs."""
    import torch

    class WithState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv1d(3, 4, 3)
            self.norm = torch.nn.BatchNorm1d(4)
            self.weights = torch.tensor([1.0, 2.0, 3.0, 4.0])
            self.register_buffer("scale", torch.full((4,), 0.5))

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            features = self.norm(self.conv(x)).mean(-1) * self.weights * self.scale
            return features, x.sum()

    torch.manual_seed(1)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(WithState().eval(), (torch.randn(2, 3, 10),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    return path


def poisoned_program(clean: Path, path: Path, command: str = "touch /tmp/pwned") -> Path:
    """`clean` with its pickled sample inputs swapped for a pickle that runs `command`."""
    import io
    import zipfile

    with zipfile.ZipFile(clean) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("sample_inputs/model.pt"):
                inner = io.BytesIO()
                with zipfile.ZipFile(io.BytesIO(data)) as old, zipfile.ZipFile(inner, "w") as new:
                    for member in old.infolist():
                        payload = old.read(member)
                        new.writestr(
                            member, malicious_pickle(command) if member.filename.endswith(".pkl") else payload
                        )
                data = inner.getvalue()
            dst.writestr(info, data)
    return path


@dataclass(frozen=True)
class AttackOutcome:
    """How an attacker program ended: its verdict (parsed stdout), exit, and whether the host killed it."""

    verdict: dict[str, object] | None
    returncode: int
    exit: str
    stderr: str
    timed_out: bool
    wall_s: float
    leftover_pids: frozenset[int]


async def run_attack(
    sandbox: object,
    settings: ExecutorSettings,
    script: str,
    *,
    timeout_s: float = 30.0,
    pass_fds: tuple[int, ...] = (),
    slot: int = 1000,
) -> AttackOutcome:
    """Run `script` under the exact recipe the pool's workers get, with the pool's host-side timeout."""
    import asyncio
    import json
    import sys
    import time

    from node.executor.sandbox import Sandbox, SandboxSpec
    from node.executor.worker_handle import describe_exit, limits_from

    assert isinstance(sandbox, Sandbox)
    spec = SandboxSpec(
        argv=[sys.executable, "-B", "-s", "-c", script],
        limits=limits_from(settings),
        pass_fds=pass_fds,
        slot=slot,
    )
    started = time.perf_counter()
    proc = await sandbox.spawn(spec, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    timed_out = False
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.process.communicate()
    except TimeoutError:
        timed_out = True
        proc.kill()
        out, err = b"", b""
    code = await proc.wait()
    wall = time.perf_counter() - started
    lines = out.decode(errors="replace").strip().splitlines()
    verdict = json.loads(lines[-1]) if lines else None
    unprivileged = sandbox.mode == "unprivileged-uid"
    leftovers = await _still_running(_pids_of_uid(sandbox.uid_base + slot)) if unprivileged else frozenset()
    return AttackOutcome(
        verdict, code, describe_exit(code), err.decode(errors="replace"), timed_out, wall, leftovers
    )


async def _still_running(pids: list[int], grace_s: float = 5.0) -> frozenset[int]:
    """The pids that have not exited within `grace_s`: a process killed with its sandbox may still be
    in its exit path for a moment, so each is awaited through a pidfd (readable once it has exited)."""
    import asyncio

    loop = asyncio.get_running_loop()
    left: set[int] = set()
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        exited = loop.create_future()
        loop.add_reader(fd, lambda f=exited: f.done() or f.set_result(None))
        try:
            await asyncio.wait_for(exited, grace_s)
        except TimeoutError:
            left.add(pid)
        finally:
            loop.remove_reader(fd)
            os.close(fd)
    return frozenset(left)


def _pids_of_uid(uid: int) -> list[int]:
    """Live processes of `uid`; zombies (already dead, waiting for the host's init to reap them) are not."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                alive = (entry / "stat").read_text().rpartition(")")[2].split()[0] != "Z"
                if entry.stat().st_uid == uid and alive:
                    found.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return found


def working_modes() -> list[Any]:
    """The root sandbox modes this checkout can use: unprivileged-uid only when others can read the venv."""
    from node.executor.sandbox_mode import runtime_paths, unreadable_by_others

    unreadable = unreadable_by_others(runtime_paths())
    skip = pytest.mark.skip(reason=f"the sandbox uid cannot read {unreadable} (root-userns applies)")
    return [
        pytest.param(SandboxMode.UNPRIVILEGED_UID, marks=[skip] if unreadable else []),
        SandboxMode.ROOT_USERNS,
    ]


def preferred_mode() -> SandboxMode:
    from node.executor.sandbox_mode import runtime_paths, unreadable_by_others

    return SandboxMode.ROOT_USERNS if unreadable_by_others(runtime_paths()) else SandboxMode.UNPRIVILEGED_UID
