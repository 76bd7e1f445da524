"""What a user program may be, checked when it is installed: no file that runs code when torch
loads it (one per code path in the pinned torch's loader), no state carried between jobs, no
uninitialized memory, inputs and outputs exactly as the manifest declares them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from executor_support import (
    CODE_PATHS,
    DEVICE_OPERATORS,
    UNCHECKED_OPERATORS,
    _add_constant,
    _raw_meta,
    rewrite_program,
    with_operator,
)

from node.executor.errors import ProgramRefused, UnsafeModelFile
from node.executor.manifest import TensorSpec
from node.executor.store import ModelStore

SPEC = (TensorSpec(name="x", dtype="F32", shape=(None, 4)),)


@pytest.mark.parametrize("path", sorted(CODE_PATHS))
def test_cannot_install_a_program_that_runs_code_when_loaded(
    exploits: dict[str, Path], tmp_path: Path, path: str
) -> None:
    store = ModelStore(tmp_path / "store", capacity_bytes=2**30)
    with pytest.raises(
        UnsafeModelFile, match=r"run (arbitrary )?code|not a torch.export|pickle|execute|shape"
    ):
        store.import_exported_program(exploits[path], name="evil", inputs=SPEC, outputs=("y",))
    assert store.models() == []
    assert not os.path.exists(f"/tmp/pwned-{path}")


@pytest.mark.parametrize(
    ("program", "reason"),
    [
        ("remembering", r"aten.copy_.default writes into an existing tensor"),
        ("remembering_functional", r"writes to its state or inputs \(buffer_mutation\)"),
        ("uninitialized", r"aten.empty_like.default returns uninitialized memory"),
        ("out_of_bounds", r"aten._reshape_alias.default is a private operator"),
    ],
)
def test_cannot_install_a_program_that_passes_data_between_jobs(
    tenant_programs: dict[str, Path], tmp_path: Path, program: str, reason: str
) -> None:
    store = ModelStore(tmp_path / "store", capacity_bytes=2**30)
    with pytest.raises(ProgramRefused, match=reason):
        store.import_exported_program(tenant_programs[program], name=program, inputs=SPEC, outputs=("y",))
    assert store.models() == []


def test_can_install_a_program_that_only_computes(tenant_programs: dict[str, Path], tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store", capacity_bytes=2**30)
    manifest = store.import_exported_program(
        tenant_programs["rolling"], name="rolling", inputs=SPEC, outputs=("y",), batchable=True
    )
    assert store.verify(manifest.model_id) == manifest


def test_cannot_install_a_program_whose_inputs_or_outputs_differ_from_its_manifest(
    clean_program: Path, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "store", capacity_bytes=2**30)
    with pytest.raises(ProgramRefused, match="returns 1 outputs, its manifest declares 2"):
        store.import_exported_program(clean_program, name="two", inputs=SPEC, outputs=("y", "z"))
    two_inputs = (*SPEC, TensorSpec(name="w", dtype="F32", shape=(None, 4)))
    with pytest.raises(ProgramRefused, match="takes 1 inputs, its manifest declares 2"):
        store.import_exported_program(clean_program, name="two", inputs=two_inputs, outputs=("y",))
    assert store.models() == []


def test_cannot_install_an_operator_that_writes_to_its_arguments(
    tenant_programs: dict[str, Path], tmp_path: Path
) -> None:
    # No trailing underscore, no `out` overload: only the ATen schema says `sort.values` writes.
    def retarget(members: dict[str, bytes]) -> None:
        members["models/model.json"] = members["models/model.json"].replace(
            b"torch.ops.aten.roll.default", b"torch.ops.aten.sort.values"
        )

    forged = rewrite_program(tenant_programs["rolling"], tmp_path / "forged.pt2", retarget)
    store = ModelStore(tmp_path / "store", capacity_bytes=2**30)
    with pytest.raises(ProgramRefused, match=r"aten.sort.values writes to its argument"):
        store.import_exported_program(forged, name="forged", inputs=SPEC, outputs=("y",))
    assert store.models() == []


@pytest.mark.parametrize("target", sorted(UNCHECKED_OPERATORS))
def test_cannot_install_an_operator_that_reads_or_writes_outside_its_tensors(
    tenant_programs: dict[str, Path], tmp_path: Path, target: str
) -> None:
    forged = with_operator(
        tenant_programs["rolling"], tmp_path / "forged.pt2", target, UNCHECKED_OPERATORS[target]
    )
    store = ModelStore(tmp_path / "store", capacity_bytes=2**30)
    with pytest.raises(ProgramRefused, match=r"private operator|trusts the indices or offsets"):
        store.import_exported_program(forged, name="forged", inputs=SPEC, outputs=("y",))
    assert store.models() == []


def test_unchecked_operators_are_a_real_way_to_read_other_memory() -> None:
    # What the rule stops: 4 stored floats viewed as a million, every other one from the heap.
    peek = (
        "import torch; x = torch.zeros(4); "
        "print(torch.ops.aten._reshape_alias.default(x, [1 << 16], [1]).numel())"
    )
    out = subprocess.run(
        [sys.executable, "-c", peek], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split() == [str(1 << 16)]


@pytest.mark.parametrize("target", sorted(DEVICE_OPERATORS))
def test_cannot_install_an_operator_that_pins_memory_or_names_another_device(
    tenant_programs: dict[str, Path], tmp_path: Path, target: str
) -> None:
    forged = with_operator(
        tenant_programs["rolling"], tmp_path / "forged.pt2", target, DEVICE_OPERATORS[target]
    )
    store = ModelStore(tmp_path / "store", capacity_bytes=2**30)
    with pytest.raises(ProgramRefused, match=r"pins host memory|is not the job's own device"):
        store.import_exported_program(forged, name="forged", inputs=SPEC, outputs=("y",))
    assert store.models() == []


def test_cannot_install_a_tensor_whose_shape_promises_more_than_its_bytes(
    clean_program: Path, tmp_path: Path
) -> None:
    # No bytes stored, four TiB declared: the loader would have filled the gap with zeros.
    ghost = {"path_name": "tensor_9", "use_pickle": False, "tensor_meta": _raw_meta(1 << 40, dtype=7)}
    forged = rewrite_program(
        clean_program, tmp_path / "ghost.pt2", lambda m: _add_constant(m, "ghost", ghost, b"")
    )
    store = ModelStore(tmp_path / "store", capacity_bytes=2**30)
    with pytest.raises(UnsafeModelFile, match=r"tensor 'ghost' reaches outside its 0 stored bytes"):
        store.import_exported_program(forged, name="ghost", inputs=SPEC, outputs=("y",))
    assert store.models() == []


@pytest.mark.parametrize(
    ("member", "key"),
    [("models/model.json", b"graph_module"), ("data/weights/model_weights_config.json", b"config")],
)
def test_installing_a_json_bomb_costs_the_node_no_memory(
    clean_program: Path, tmp_path: Path, member: str, key: bytes
) -> None:
    # 24 MB of `{},`: eight million dicts, ~700 MB as Python objects. Before, the node parsed it in
    # its own process (the pickle scan reads every config); now only the checking subprocess does.
    def bomb(members: dict[str, bytes]) -> None:
        members[member] = b'{"' + key + b'": [' + b"{}," * (8 << 20) + b"{}]}"

    forged = rewrite_program(clean_program, tmp_path / "bomb.pt2", bomb)
    install = (
        "import sys; from pathlib import Path; from node.executor.manifest import TensorSpec\n"
        "from node.executor.store import ModelStore\n"
        "spec = (TensorSpec(name='x', dtype='F32', shape=(None, 4)),)\n"
        "store = ModelStore(Path(sys.argv[1]), capacity_bytes=2**30)\n"
        "try:\n"
        "    store.import_exported_program(Path(sys.argv[2]), name='bomb', inputs=spec, outputs=('y',))\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__)\n"
        # This process's own peak (ru_maxrss would count the forking parent's pages too).
        "peak = [line for line in open('/proc/self/status') if line.startswith('VmHWM')][0]\n"
        "print(int(peak.split()[1]) // 1024)\n"
    )
    argv = [sys.executable, "-c", install, str(tmp_path / "store"), str(forged)]
    refused, peak_mib = subprocess.run(
        argv, capture_output=True, text=True, check=True, timeout=300
    ).stdout.split()
    assert refused == "UnsafeModelFile"
    assert int(peak_mib) < 300
