"""What an exported program takes and returns, read from its graph (pure, no torch).

`torch.export` records every user input's name, dtype and sizes (a number, or a symbol for a
dimension exported as dynamic); the manifest of a `.pt2` model is derived from them, and a
declaration that says otherwise is refused before the model is installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from node.executor.errors import ProgramRefused
from node.executor.manifest import TensorSpec
from node.executor.program_rules import ProgramArchive

# torch._export.serde.schema.ScalarType → the safetensors dtype a job's tensor carries.
SCALAR_TYPES = {
    1: "U8",
    2: "I8",
    3: "I16",
    4: "I32",
    5: "I64",
    6: "F16",
    7: "F32",
    8: "F64",
    12: "BOOL",
    13: "BF16",
    28: "U16",
    34: "U32",
    35: "U64",
}


@dataclass(frozen=True, slots=True)
class ProgramInterface:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[str, ...]
    # Every input and output has a dynamic first dimension: jobs can share a batch along it.
    batchable: bool


def program_interface(program: ProgramArchive) -> ProgramInterface:
    """The program's inputs (name, dtype, shape with None for a dynamic dimension) and default
    output names: `output` for one, `output_0`… for several."""
    values = program.graph.get("tensor_values", {})
    try:
        inputs = tuple(_spec(name, values[name]) for name in program.user_inputs())
        # Only user outputs: any other kind is refused by `check_program`, with its own reason.
        output_metas = [
            values[spec["user_output"]["arg"]["as_tensor"]["name"]]
            for spec in program.signature.get("output_specs", [])
            if "user_output" in spec
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise ProgramRefused(f"the program does not describe its inputs and outputs: {exc}") from exc
    count = len(output_metas)
    outputs = ("output",) if count == 1 else tuple(f"output_{i}" for i in range(count))
    leading = [spec.shape[:1] for spec in inputs] + [_shape(m)[:1] for m in output_metas]
    batchable = bool(inputs) and all(dims == (None,) for dims in leading)
    return ProgramInterface(inputs, outputs, batchable)


def disagreements(declared: tuple[TensorSpec, ...], program: ProgramInterface) -> list[str]:
    """How a declaration of the inputs differs from the program's own; empty when it agrees.

    Inputs are matched in order, so a declared name is the one jobs use (a rename, not a
    disagreement). A fixed size for a dimension the program exported as dynamic is a narrowing the
    owner may choose; any other difference of dtype or shape would make every job fail."""
    problems = []
    if len(declared) != len(program.inputs):
        return [f"the program takes {len(program.inputs)} inputs, {len(declared)} were declared"]
    for mine, theirs in zip(declared, program.inputs, strict=True):
        if mine.dtype != theirs.dtype:
            problems.append(f"input {mine.name!r} is {theirs.dtype} in the program, not {mine.dtype}")
        if len(mine.shape) != len(theirs.shape) or any(
            t is not None and m != t for m, t in zip(mine.shape, theirs.shape, strict=True)
        ):
            problems.append(
                f"input {mine.name!r} has shape {_show(theirs.shape)} in the program, not {_show(mine.shape)}"
            )
    return problems


def _spec(name: str, meta: dict[str, Any]) -> TensorSpec:
    dtype = SCALAR_TYPES.get(int(meta["dtype"]))
    if dtype is None:
        raise ProgramRefused(f"input {name!r} has a dtype jobs cannot carry (ScalarType {meta['dtype']})")
    return TensorSpec(name=name, dtype=dtype, shape=_shape(meta))


def _shape(meta: dict[str, Any]) -> tuple[int | None, ...]:
    return tuple(int(size["as_int"]) if "as_int" in size else None for size in meta["sizes"])


def _show(shape: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("*" if d is None else str(d) for d in shape) + "]"
