"""Load and run a user program in the worker without `torch.export.load` (imports torch).

The archive is read with `program_rules` (raw tensors and JSON only: nothing is unpickled,
imported, evaluated or generated as code), checked against the same rules as at install plus the
ATen schemas (no operator that writes to an argument), and run by walking its nodes and calling
each ATen operator directly.
"""

from __future__ import annotations

import argparse
import json
import math
import operator
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from node.executor.errors import ProgramRefused, UnsafeModelFile
from node.executor.pickle_scan import check_exported_program
from node.executor.program_interface import program_interface
from node.executor.program_rules import ProgramArchive, TensorRecord, check_program, read_program

_DTYPES = {
    1: torch.uint8, 2: torch.int8, 3: torch.int16, 4: torch.int32, 5: torch.int64, 6: torch.float16,
    7: torch.float32, 8: torch.float64, 12: torch.bool, 13: torch.bfloat16, 28: torch.uint16,
    34: torch.uint32, 35: torch.uint64,
}  # fmt: skip
_LAYOUTS = {7: torch.strided}
_MEMORY_FORMATS = {
    1: torch.contiguous_format,
    2: torch.channels_last,
    3: torch.channels_last_3d,
    4: torch.preserve_format,
}
_SYM_FUNCTIONS: dict[str, Callable[..., Any]] = {
    **{f"_operator.{name}": getattr(operator, name) for name in ("eq", "ne", "le", "ge", "lt", "gt")},
    **{f"_operator.{name}": getattr(operator, name) for name in ("neg", "pos", "mul", "add", "sub")},
    **{f"_operator.{name}": getattr(operator, name) for name in ("floordiv", "mod", "pow", "truediv")},
    "_operator.and_": operator.and_,
    "_operator.or_": operator.or_,
    "math.trunc": math.trunc,
    "torch.sym_not": torch.sym_not,
    "torch.sym_int": torch.sym_int,
    "torch.sym_float": torch.sym_float,
    "torch.sym_ite": torch.sym_ite,
    "torch.sym_max": torch.sym_max,
    "torch.sym_min": torch.sym_min,
    "torch.sym_sqrt": torch.sym_sqrt,
}
_ATEN_PREFIX = "torch.ops.aten."
Step = Callable[[dict[str, Any]], None]


def load_program(
    data: bytes, *, inputs: int, outputs: int, device: str
) -> Callable[..., tuple[torch.Tensor, ...]]:
    """A callable taking the user inputs in order and returning the outputs in order."""
    program, steps = _checked(data, inputs=inputs, outputs=outputs)
    state = {
        name: _tensor(program, program.tensors[record]).to(device) for name, record in program.state_inputs()
    }
    user_inputs, user_outputs = program.user_inputs(), program.user_outputs()

    def run(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # The generator's state is state too: a job's draws must not depend on the jobs before it.
        torch.manual_seed(0)
        values: dict[str, Any] = dict(state)
        values.update(zip(user_inputs, args, strict=True))
        for step in steps:
            step(values)
        return tuple(values[name] for name in user_outputs)

    return run


def _checked(data: bytes, *, inputs: int, outputs: int) -> tuple[ProgramArchive, list[Step]]:
    program = read_program(data, max_unpacked=8 * max(len(data), 2**20))
    check_program(program, inputs=inputs, outputs=outputs)
    return program, [_step(node) for node in program.graph["nodes"]]


def main(argv: list[str]) -> int:
    """`python -m node.executor.program_loader FILE --inputs N --outputs M`: the store's check at
    install (the pickle scan, then the worker's own check minus running anything); prints the
    refusal as JSON, exits 1."""
    parser = argparse.ArgumentParser()
    parser.add_argument("program", type=Path)
    parser.add_argument("--inputs", type=int, help="declared inputs (default: the program's)")
    parser.add_argument("--outputs", type=int, help="declared outputs (default: the program's)")
    args = parser.parse_args(argv)
    try:
        data = args.program.read_bytes()
        check_exported_program(data, max_unpacked=8 * max(len(data), 2**20))
        found = program_interface(read_program(data, max_unpacked=8 * max(len(data), 2**20)))
        inputs = len(found.inputs) if args.inputs is None else args.inputs
        outputs = len(found.outputs) if args.outputs is None else args.outputs
        _checked(data, inputs=inputs, outputs=outputs)
    except (UnsafeModelFile, ProgramRefused) as exc:
        error = {"error": type(exc).__name__, "message": exc.message, "hint": exc.hint}
        sys.stdout.write(json.dumps(error) + "\n")
        return 1
    interface = {
        "inputs": [spec.model_dump(mode="json") for spec in found.inputs],
        "outputs": list(found.outputs),
        "batchable": found.batchable,
    }
    sys.stdout.write(json.dumps({"interface": interface}) + "\n")
    return 0


def _tensor(program: ProgramArchive, record: TensorRecord) -> torch.Tensor:
    dtype = _DTYPES[record.dtype]
    blob = program.members[record.member]
    if not blob:
        return torch.zeros(record.sizes, dtype=dtype)
    flat = torch.frombuffer(bytearray(blob), dtype=dtype)
    return torch.as_strided(flat, record.sizes, record.strides, record.offset)


def _step(node: dict[str, Any]) -> Step:
    target: str = node["target"]
    bind = _binder(node["outputs"])
    if target in _SYM_FUNCTIONS:
        function = _SYM_FUNCTIONS[target]
        arguments = [item["arg"] for item in node["inputs"]]

        def call_sym(values: dict[str, Any]) -> None:
            bind(values, function(*(_value(arg, values) for arg in arguments)))

        return call_sym
    op = _aten(target)
    positional, keyword = _placement(op, node)

    def call_op(values: dict[str, Any]) -> None:
        args = [_value(arg, values) for arg in positional]
        kwargs = {name: _value(arg, values) for name, arg in keyword.items()}
        bind(values, op(*args, **kwargs))

    return call_op


def _aten(target: str) -> torch._ops.OpOverload:
    name, _, overload = target.removeprefix(_ATEN_PREFIX).partition(".")
    try:
        op = getattr(getattr(torch.ops.aten, name), overload)
    except (AttributeError, RuntimeError) as exc:
        raise ProgramRefused(f"operator {target} does not exist in torch {torch.__version__}") from exc
    if not isinstance(op, torch._ops.OpOverload):
        raise ProgramRefused(f"{target} is not an ATen operator")
    writes = [
        arg.name for arg in op._schema.arguments if arg.alias_info is not None and arg.alias_info.is_write
    ]
    if writes or op._schema.is_mutable:
        raise ProgramRefused(f"{target} writes to its argument(s) {writes}: a program may not mutate state")
    return op


def _placement(op: torch._ops.OpOverload, node: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """Positional and keyword arguments by the operator's schema, as torch's deserializer does."""
    given = {item["name"]: item for item in node["inputs"]}
    unknown = set(given) - {arg.name for arg in op._schema.arguments}
    if unknown:
        raise ProgramRefused(f"{node['target']} has no argument(s) {sorted(unknown)}")
    positional: list[Any] = []
    keyword: dict[str, Any] = {}
    for arg in op._schema.arguments:
        item = given.get(arg.name)
        if item is None:
            if not arg.has_default_value() and not arg.kwarg_only:
                raise ProgramRefused(f"{node['target']} is missing its argument {arg.name!r}")
            continue
        if item.get("kind") == 1 or (item.get("kind") != 2 and not arg.kwarg_only and not keyword):
            positional.append(item["arg"])
        else:
            keyword[arg.name] = item["arg"]
    return positional, keyword


def _value(arg: dict[str, Any], values: dict[str, Any]) -> Any:
    kind, value = next(iter(arg.items()))
    if kind == "as_tensor":
        return values[value["name"]]
    if kind == "as_tensors":
        return [values[item["name"]] for item in value]
    if kind == "as_optional_tensors":
        return [values[item["as_tensor"]["name"]] if "as_tensor" in item else None for item in value]
    if kind in ("as_sym_int", "as_sym_float", "as_sym_bool"):
        return _sym(value, values)
    if kind in ("as_sym_ints", "as_sym_floats", "as_sym_bools"):
        return [_sym(item, values) for item in value]
    if kind == "as_none":
        return None
    if kind == "as_scalar_type":
        return _DTYPES[value]
    if kind == "as_layout":
        return _LAYOUTS[value]
    if kind == "as_memory_format":
        return _MEMORY_FORMATS[value]
    if kind == "as_device":
        return torch.device(value["type"], value.get("index"))
    if kind == "as_floats":
        return [_float(item) for item in value]
    if kind in ("as_ints", "as_bools", "as_strings"):
        return list(value)
    if kind == "as_float":
        return _float(value)
    return value  # as_int, as_bool, as_string


def _float(value: float | str) -> float:
    # JSON has no infinities or NaN: torch writes them as "Infinity", "-Infinity", "NaN".
    if isinstance(value, str) and value not in ("Infinity", "-Infinity", "NaN"):
        raise ProgramRefused(f"float argument {value[:40]!r} is not a number")
    return float(value)


def _sym(value: dict[str, Any], values: dict[str, Any]) -> Any:
    kind, inner = next(iter(value.items()))
    if kind == "as_name":
        return values[inner]
    return _float(inner) if kind == "as_float" else inner


def _binder(outputs: list[dict[str, Any]]) -> Callable[[dict[str, Any], Any], None]:
    """Stores an operator's result under the names its node gives: one value, or one per item."""
    if len(outputs) == 1 and "as_tensors" not in outputs[0]:
        only = _output_names(outputs[0])
        return lambda values, result: values.update(zip(only, (result,), strict=True))
    names = [_output_names(output) for output in outputs]
    nested = len(outputs) == 1  # a single list output (split, unbind): the result is the list

    def bind_many(values: dict[str, Any], result: Any) -> None:
        for item_names, item in zip(names, [result] if nested else result, strict=True):
            values.update(zip(item_names, item if isinstance(item, (list, tuple)) else (item,), strict=True))

    return bind_many


def _output_names(output: dict[str, Any]) -> list[str]:
    """The names an output binds; a `None` output binds a throwaway name."""
    kind, value = next(iter(output.items()))
    if kind == "as_tensor":
        return [str(value["name"])]
    if kind == "as_tensors":
        return [str(item["name"]) for item in value]
    if kind in ("as_sym_int", "as_sym_float", "as_sym_bool"):
        return [str(value["as_name"])]
    if kind == "as_none":
        return [" none"]  # never a valid identifier, so never read back
    raise ProgramRefused(f"node output of kind {kind!r} is not supported")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
