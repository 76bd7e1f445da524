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


class _RunsPython:
    """Unpickling this runs Python source (no shell needed, so it works in any sandbox)."""

    def __init__(self, source: str) -> None:
        self.source = source

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (self.source,))


def marker_source(marker: str) -> str:
    """Python that leaves `marker` behind: the proof that a payload ran."""
    return f"open({marker!r}, 'w').close()"


def python_pickle(source: str) -> bytes:
    import pickle

    return pickle.dumps({"weights": _RunsPython(source)}, protocol=2)


def rewrite_program(clean: Path, path: Path, edit: Any) -> Path:
    """`clean` with its members (named without the root folder) changed by `edit(members)`; an
    edit that returns a dict replaces the whole archive with it (names taken as they are)."""
    import zipfile

    with zipfile.ZipFile(clean) as src:
        root = src.namelist()[0].partition("/")[0]
        members = {name.partition("/")[2]: src.read(name) for name in src.namelist()}
    replaced = edit(members)
    named = (
        replaced if isinstance(replaced, dict) else {f"{root}/{name}": data for name, data in members.items()}
    )
    with zipfile.ZipFile(path, "w") as dst:
        for name, data in named.items():
            dst.writestr(name, data)
    return path


def _edit_json(members: dict[str, bytes], name: str, change: Any) -> None:
    import json

    tree = json.loads(members[name])
    change(tree)
    members[name] = json.dumps(tree).encode()


def _add_constant(members: dict[str, bytes], fqn: str, entry: dict[str, object], data: bytes) -> None:
    config = "data/constants/model_constants_config.json"
    _edit_json(members, config, lambda tree: tree.setdefault("config", {}).__setitem__(fqn, entry))
    members[f"data/constants/{entry['path_name']}"] = data


def _raw_meta(size: int, dtype: int = 1) -> dict[str, object]:
    return {
        "dtype": dtype,
        "sizes": [{"as_int": size}],
        "requires_grad": False,
        "device": {"type": "cpu", "index": None},
        "strides": [{"as_int": 1}],
        "storage_offset": {"as_int": 0},
        "layout": 7,
    }


def plant_object_constant(members: dict[str, bytes], prefix: str, source: str) -> None:
    """A constant named like an object (`opaque_obj_*`, `custom_obj_*`) holding a pickle that runs
    `source`, flagged as a plain tensor (no `use_pickle`): torch unpickles it by its name alone."""
    payload = python_pickle(source)
    entry = {
        "path_name": f"{prefix}_0",
        "is_param": False,
        "use_pickle": False,
        "tensor_meta": _raw_meta(len(payload)),
    }
    _add_constant(members, "evil", entry, payload)


def _object_constant(prefix: str) -> Any:
    return lambda members, marker: plant_object_constant(members, prefix, marker_source(marker))


def _pickled_tensor_constant(members: dict[str, bytes], marker: str) -> None:
    entry = {"path_name": "tensor_9", "is_param": False, "use_pickle": True, "tensor_meta": _raw_meta(1, 7)}
    _add_constant(members, "evil", entry, python_pickle(marker_source(marker)))


def _pickled_weight(members: dict[str, bytes], marker: str) -> None:
    config = "data/weights/model_weights_config.json"
    _edit_json(members, config, lambda tree: tree["config"]["linear.weight"].__setitem__("use_pickle", True))
    members["data/weights/weight_0"] = python_pickle(marker_source(marker))


def _planted_file(name: str) -> Any:
    def plant(members: dict[str, bytes], marker: str) -> None:
        members[name] = python_pickle(marker_source(marker))

    return plant


def _legacy_zip_format(members: dict[str, bytes], marker: str) -> dict[str, bytes]:
    return {
        "version": b"8.20",
        "serialized_exported_program.json": members["models/model.json"],
        "serialized_state_dict.pt": b"",
        "serialized_constants.pt": python_pickle(marker_source(marker)),
        "serialized_example_inputs.pt": b"",
    }


def _aoti_library(members: dict[str, bytes], marker: str) -> None:
    # torch dlopens what it finds here; an ELF constructor would run native code on load.
    members["data/aotinductor/model/model.wrapper.so"] = b"\x7fELF" + marker.encode()


def _sympy_expression(members: dict[str, bytes], marker: str) -> None:
    source = marker_source(marker)
    run = f"sympify.__globals__['__builtins__']['exec']({source!r})"
    evil = f"{run} or Symbol('s77', positive=True, integer=True)"

    def change(tree: dict[str, Any]) -> None:
        tree["graph_module"]["graph"]["tensor_values"]["x"]["sizes"][0]["as_expr"]["expr_str"] = evil

    _edit_json(members, "models/model.json", change)


def _guard_code(members: dict[str, bytes], marker: str) -> None:
    guard = f"__import__('os').close(__import__('os').open({marker!r}, 65)) is None"
    _edit_json(members, "models/model.json", lambda tree: tree.__setitem__("guards_code", [guard]))


# Each way the pinned torch's `torch.export.load` (and `.module()`) can unpickle, import or run
# something from a `.pt2`: name -> (the edit that plants a payload leaving `marker`, what torch's own
# loader does with it inside the sandbox: "runs" it; "weights_only", a `torch.load` that the
# sandbox's TORCH_FORCE_WEIGHTS_ONLY_LOAD stops (outside it, it runs); None, not built here, as a
# working payload would need a compiler or a registered TorchScript class).
CODE_PATHS: dict[str, tuple[Any, str | None]] = {
    "opaque_object_constant": (_object_constant("opaque_obj"), "runs"),
    "custom_object_constant": (_object_constant("custom_obj"), None),
    "pickled_tensor_constant": (_pickled_tensor_constant, "weights_only"),
    "pickled_weight": (_pickled_weight, "weights_only"),
    "legacy_weights_file": (_planted_file("data/weights/model.pt"), "weights_only"),
    "legacy_constants_file": (_planted_file("data/constants/model.pt"), "weights_only"),
    "raw_pickle_sample_inputs": (_planted_file("data/sample_inputs/model.pt"), "weights_only"),
    "legacy_zip_format": (_legacy_zip_format, "weights_only"),
    "aotinductor_library": (_aoti_library, None),
    "sympy_expression": (_sympy_expression, "runs"),
    "guard_code": (_guard_code, "runs"),
}


def program_exploiting(path_name: str, clean: Path, out: Path, marker: str) -> Path:
    """`clean` made to leave `marker` behind when loaded through the loader path `path_name`."""
    plant = CODE_PATHS[path_name][0]
    return rewrite_program(clean, out, lambda members: plant(members, marker))


def _export(module: Any, path: Path, features: int = 4) -> Path:
    import torch

    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(module, (torch.randn(2, features),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    return path


def remembering_program(path: Path) -> Path:
    """Returns the input of the job before: copies each input into a buffer (a cross-job channel)."""
    import torch

    class Remembers(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("last", torch.zeros(2, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            previous = self.last.clone()
            self.last.copy_(x[:2])
            return previous + 0 * x[:2]

    return _export(Remembers(), path)


def rolling_program(path: Path) -> Path:
    """Hands each row the row before it: in a batch mixing clients, one client gets another's rows."""
    import torch

    class Rolls(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.roll(x, 1, 0)

    return _export(Rolls(), path)


def uninitialized_program(path: Path) -> Path:
    """Returns memory it never wrote: whatever the allocator hands back, a previous job's included."""
    import torch

    class Uninitialized(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.empty_like(x)

    return _export(Uninitialized(), path)


IN_SANDBOX_MARKER = "/tmp/pwned-{}"  # inside a sandbox, its private /tmp: what a payload would leave


@pytest.fixture(scope="session")
def clean_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return exported_program(tmp_path_factory.mktemp("clean") / "small.pt2")


@pytest.fixture(scope="session")
def exploits(clean_program: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One `.pt2` per loader code path, each leaving `IN_SANDBOX_MARKER` if its payload runs."""
    out = tmp_path_factory.mktemp("exploits")
    return {
        name: program_exploiting(name, clean_program, out / f"{name}.pt2", IN_SANDBOX_MARKER.format(name))
        for name in CODE_PATHS
    }


@pytest.fixture(scope="session")
def tenant_programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Programs that would carry one job's data into another's, and one (rolling) that is legal."""
    import torch

    out = tmp_path_factory.mktemp("tenants")
    remembering = remembering_program(out / "remembering.pt2")
    functional = out / "remembering_functional.pt2"
    rolling = rolling_program(out / "rolling.pt2")
    torch.export.save(torch.export.load(str(remembering)).run_decompositions({}), str(functional))
    return {
        "remembering": remembering,
        "remembering_functional": functional,
        "rolling": rolling,
        "random": random_program(out / "random.pt2"),
        "uninitialized": uninitialized_program(out / "uninitialized.pt2"),
        "out_of_bounds": with_operator(
            rolling,
            out / "out_of_bounds.pt2",
            "_reshape_alias.default",
            UNCHECKED_OPERATORS["_reshape_alias.default"],
        ),
    }


def with_operator(program: Path, path: Path, target: str, inputs: dict[str, Any]) -> Path:
    """`program` (one node, reading `x`) with that node calling `target` on `inputs` (name -> arg)."""

    def change(tree: dict[str, Any]) -> None:
        node = tree["graph_module"]["graph"]["nodes"][0]
        node["target"] = f"torch.ops.aten.{target}"
        node["inputs"] = [{"name": name, "arg": arg, "kind": 1} for name, arg in inputs.items()]

    return rewrite_program(program, path, lambda members: _edit_json(members, "models/model.json", change))


X = {"as_tensor": {"name": "x"}}
# Operators that read or write where their arguments point, with no bounds check: each reads (or
# scatters into) memory around `x`, in a warm worker the bytes of earlier jobs.
UNCHECKED_OPERATORS = {
    "_reshape_alias.default": {"self": X, "size": {"as_ints": [1 << 20]}, "stride": {"as_ints": [1]}},
    "segment_reduce.default": {
        "data": X, "reduce": {"as_string": "sum"}, "lengths": X, "unsafe": {"as_bool": True}
    },
    "max_pool2d_with_indices_backward.default": {"grad_output": X, "self": X, "indices": X},
    "embedding_dense_backward.default": {"grad_output": X, "indices": X, "num_weights": {"as_int": 4}},
    "_sparse_coo_tensor_with_dims_and_tensors.default": {
        "sparse_dim": {"as_int": 1}, "indices": X, "values": X
    },
    "_nested_view_from_buffer.default": {"self": X, "nested_size": X, "nested_strides": X, "offsets": X},
}  # fmt: skip
# Operators that reach past the sandbox's limits or its one device.
DEVICE_OPERATORS = {
    "pin_memory.default": {"self": X},
    "_to_copy.default": {"self": X, "pin_memory": {"as_bool": True}},
    "to.device": {
        "self": X, "device": {"as_device": {"type": "cuda", "index": 1}}, "dtype": {"as_scalar_type": 7}
    },
    "clone.default": {"self": X, "device": {"as_device": {"type": "privateuseone", "index": None}}},
}  # fmt: skip


def random_program(path: Path) -> Path:
    """Draws random numbers: a generator that carried on from job to job would carry state too."""
    import torch

    class Draws(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.rand_like(x)

    return _export(Draws(), path)
