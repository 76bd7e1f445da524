"""What a user program (a `.pt2` from `torch.export.save`) may be, decided from its bytes alone.

Workers never call `torch.export.load`: in the pinned torch it unpickles (pickled weights and
constants, `opaque_obj_*` and `custom_obj_*` constants whatever their flags, legacy `model.pt`
files, sample inputs, the 2.7 zip format, each falling back to `weights_only=False`), dlopens
AOTInductor libraries found under `data/aotinductor/`, `eval`s every symbolic shape through
`sympy.sympify`, `exec`s the file's `guards_code`, and generates Python from names the file
chooses. A program here is the archive's JSON graph plus raw little-endian tensors, nothing else:
the store refuses any other member, and the worker's own loader (`program_loader`) reads only
these, checks them again with the same rules, and calls ATen operators by name.

The rules keep one job's data out of another's (a warm worker serves every client): no state
mutation (in-place or `out=` operators, mutated buffers or inputs, batch norm in training mode;
the worker also reseeds the random generator before each batch), no file reads, no operator that
reads or writes where its arguments point without a bounds check (private operators outside a
short list, gradients, sparse and nested layouts), no uninitialized memory (the `empty` family
and `resize`, refused outright rather than trusting a fill that only the deterministic profile
turns on), and exactly the inputs and outputs the manifest declares, all tensors.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from node.executor.errors import ProgramRefused, UnsafeModelFile

# Element sizes of the archive's ScalarType codes (torch/_export/serde/schema.py).
DTYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 2, 7: 4, 8: 8, 12: 1, 13: 2, 28: 2, 34: 4, 35: 8}
_STRIDED = 7
_ROOT = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_FIXED_MEMBERS = frozenset(
    {
        "archive_format",
        "archive_version",
        "byteorder",
        ".data/version",
        ".data/serialization_id",
        "models/model.json",
        "data/weights/model_weights_config.json",
        "data/constants/model_constants_config.json",
        "data/sample_inputs/model.pt",  # pickled example inputs: scanned, never loaded
    }
)
_TENSOR_MEMBER = re.compile(r"^data/(weights/weight|constants/tensor)_[0-9]{1,6}$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,199}$")
_ATEN_TARGET = re.compile(
    r"^torch\.ops\.aten\.((?!__)[A-Za-z_][A-Za-z0-9_]*)\.((?!__)[A-Za-z_][A-Za-z0-9_]*)$"
)
SYM_TARGETS = frozenset(
    [f"_operator.{name}" for name in ("eq", "ne", "le", "ge", "lt", "gt", "neg", "pos", "mul", "add")]
    + [f"_operator.{name}" for name in ("sub", "floordiv", "mod", "pow", "truediv", "and_", "or_")]
    + ["math.trunc"]
    + [f"torch.sym_{name}" for name in ("not", "int", "float", "ite", "max", "min", "sqrt")]
)
# Operators that return memory nobody wrote: refused, so a job never sees a previous job's bytes.
_UNINITIALIZED = frozenset({"resize", "resize_as", "_resize_output"})
# Functional by name, yet they write to an argument (running statistics, noise) or hold state.
_STATEFUL = frozenset(
    {
        "_native_batch_norm_legit",
        "native_batch_norm",
        "_batch_norm_with_update",
        "rrelu_with_noise",
        "_fused_moving_avg_obs_fq_helper",
        "record_stream",
    }
)
_FILE_IO = frozenset({"from_file"})
# Page-locked host memory is pinned by the GPU driver, outside what the sandbox's limits count.
_PINNING = frozenset({"pin_memory"})
# Devices a program may name: the lane's own (cpu, or its one GPU, cuda:0 inside the sandbox).
_DEVICE_TYPES = frozenset({"cpu", "cuda"})
# Private operators skip the checks their public callers make (`_reshape_alias` takes any strides
# without a bounds check, `_sparse_coo_tensor_unsafe` any indices): only those torch.export writes
# for inference, each checked here like its public twin, may appear.
_PRIVATE_ALLOWED = frozenset(
    {
        "_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "_assert_scalar", "_assert_tensor_metadata",
        "_cdist_forward", "_embedding_bag", "_fft_c2c", "_fft_c2r", "_fft_r2c", "_local_scalar_dense",
        "_log_softmax", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
        "_pdist_forward", "_reshape_copy", "_safe_softmax", "_softmax", "_to_copy", "_unsafe_index",
        "_unsafe_masked_index", "_unsafe_view", "_upsample_bilinear2d_aa", "_upsample_nearest_exact1d",
        "_upsample_nearest_exact2d", "_upsample_nearest_exact3d", "_weight_norm_interface",
        "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_flash_attention", "_scaled_dot_product_cudnn_attention",
    }
)  # fmt: skip
# Public operators that trust the indices, offsets or lengths they are given, so a crafted
# argument reads or writes outside a tensor: gradients scattered by index (`*_backward`), sparse and
# nested layouts built from offsets, `segment_reduce(unsafe=True)`, pooling from given samples.
_UNCHECKED_WORDS = frozenset({"backward", "sparse", "nested", "mkldnn", "padded"})
_UNCHECKED = frozenset({"segment_reduce", "set", "fractional_max_pool2d", "fractional_max_pool3d"})
# Composite norms that update their running statistics in place when this flag is set.
_TRAINING_FLAGS = {
    "batch_norm": "training",
    "_batch_norm_impl_index": "training",
    "cudnn_batch_norm": "training",
    "miopen_batch_norm": "training",
    "instance_norm": "use_input_stats",
}
_VALUE_KINDS = frozenset(
    {
        "as_none", "as_int", "as_float", "as_bool", "as_string", "as_ints", "as_floats", "as_bools",
        "as_strings", "as_scalar_type", "as_memory_format", "as_layout", "as_device",
    }
)  # fmt: skip
_SYM_KINDS = frozenset({"as_sym_int", "as_sym_float", "as_sym_bool"})
_SYM_LIST_KINDS = frozenset({"as_sym_ints", "as_sym_floats", "as_sym_bools"})
# The sympy expressions torch.export writes for symbolic shapes; torch.export.load would hand
# anything else to sympify, which evaluates it as Python.
_SYMPY_WORDS = frozenset(
    {
        "Symbol", "Integer", "Rational", "Float", "True", "False", "positive", "integer", "real",
        "nonnegative", "finite", "Max", "Min", "Mod", "FloorDiv", "CeilDiv", "ModularIndexing",
        "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt", "TruncToInt", "Eq", "Ne", "Lt", "Le",
        "Gt", "Ge", "And", "Or", "Not", "oo", "IntTrueDiv", "FloatTrueDiv", "PowByNatural", "Mul", "Add",
        "Pow", "StrictLessThan", "LessThan", "StrictGreaterThan", "GreaterThan", "Equality", "Unequality",
        "Abs", "Piecewise", "ITE", "BooleanTrue", "BooleanFalse", "zoo", "nan", "Identity", "ToFloat",
        "TruncToFloat", "RoundToInt", "RoundDecimal", "LShift", "RShift", "FloatPow", "Where",
    }
)  # fmt: skip
_EXPR_TOKEN = re.compile(
    r"\s*(?:([A-Za-z_][A-Za-z0-9_]*)|([0-9]+(?:\.[0-9]+)?)|('[a-z]{1,8}[0-9]{1,9}')|(\*\*|[-+*/%(),=<>!]))"
)
_SYMBOL = re.compile(r"^[a-z]{1,8}[0-9]{1,9}$")
_GUARD_TOKEN = re.compile(
    r"\s*(?:L(?:\[(?:'[A-Za-z_][A-Za-z0-9_]{0,99}'|[0-9]{1,6})\])+"
    r"|\.(?:size|stride)\(\)\[[0-9]{1,2}\]|\.storage_offset\(\)"
    r"|[0-9]{1,19}|==|!=|<=|>=|//|[-+*%<>()]|(?:and|or|not)\b)"
)


@dataclass(frozen=True)
class TensorRecord:
    """A weight or constant stored raw: `member` holds its storage, the rest says how to view it."""

    member: str
    dtype: int
    sizes: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int


@dataclass(frozen=True)
class ProgramArchive:
    """The parts of a `.pt2` a worker uses: its graph, signature, and raw tensor members."""

    graph: dict[str, Any]
    signature: dict[str, Any]
    tensors: dict[str, TensorRecord]  # parameter, buffer or constant name -> record
    members: dict[str, bytes]  # tensor member path (without the root folder) -> bytes

    def user_inputs(self) -> list[str]:
        return [
            spec["user_input"]["arg"]["as_tensor"]["name"]
            for spec in self.signature["input_specs"]
            if "user_input" in spec
        ]

    def user_outputs(self) -> list[str]:
        return [spec["user_output"]["arg"]["as_tensor"]["name"] for spec in self.signature["output_specs"]]

    def state_inputs(self) -> list[tuple[str, str]]:
        """(graph input name, tensor record name) for each parameter, buffer and constant."""
        found = []
        for spec in self.signature["input_specs"]:
            for kind, key in _STATE_SPECS.items():
                if kind in spec:
                    found.append((spec[kind]["arg"]["name"], spec[kind][key]))
        return found


_STATE_SPECS = {
    "parameter": "parameter_name",
    "buffer": "buffer_name",
    "tensor_constant": "tensor_constant_name",
}


def read_program(data: bytes, *, max_unpacked: int) -> ProgramArchive:
    """Parse a `.pt2`, refusing every member torch could unpickle, import or execute."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise UnsafeModelFile(f"model file is a corrupt zip archive: {exc}") from exc
    infos = archive.infolist()
    if sum(info.file_size for info in infos) > max_unpacked or len(infos) > 10_000:
        raise UnsafeModelFile(f"archive unpacks to more than {max_unpacked} bytes or 10000 files")
    names = [info.filename for info in infos]
    if len(set(names)) != len(names):
        raise UnsafeModelFile("archive holds two members of the same name")
    roots = {name.partition("/")[0] for name in names}
    if len(roots) != 1 or not _ROOT.match(roots.pop()):
        raise UnsafeModelFile(
            "archive members must share one plain top-level folder, as torch.export.save writes"
        )
    members: dict[str, bytes] = {}
    for info in infos:
        relative = info.filename.partition("/")[2]
        if relative not in _FIXED_MEMBERS and not _TENSOR_MEMBER.match(relative):
            raise UnsafeModelFile(
                f"archive member {relative!r} is not part of a plain exported program "
                "(pickled or custom-object constants, AOTInductor libraries, legacy or extra files "
                "are refused: loading them can run code)",
                hint="export with torch.export.export(...) and save with torch.export.save(ep, 'model.pt2')",
            )
        members[relative] = archive.read(info)
    for required in ("archive_format", "models/model.json", "data/weights/model_weights_config.json"):
        if required not in members:
            raise UnsafeModelFile(f"archive has no {required}: not a torch.export (.pt2) archive")
    if not members.get("data/sample_inputs/model.pt", b"PK\x03\x04").startswith(b"PK\x03\x04"):
        raise UnsafeModelFile("the sample inputs are a bare pickle, not a torch.save archive")
    if members["archive_format"].strip() != b"pt2" or members.get("byteorder", b"little") != b"little":
        raise UnsafeModelFile("archive is not a little-endian torch.export (.pt2) archive")
    tensors = {
        **_tensor_records(members, "data/weights/model_weights_config.json", "data/weights/"),
        **_tensor_records(members, "data/constants/model_constants_config.json", "data/constants/"),
    }
    model = _json(members["models/model.json"], "models/model.json")
    try:
        graph_module = model["graph_module"]
        graph, signature = graph_module["graph"], graph_module["signature"]
        if not isinstance(graph, dict) or not isinstance(signature, dict):
            raise TypeError("graph and signature must be objects")
    except (KeyError, TypeError) as exc:
        raise UnsafeModelFile(f"models/model.json is not an exported program: {exc}") from exc
    _check_guards(model.get("guards_code", []))
    _check_expressions(model)
    tensor_data = {relative: blob for relative, blob in members.items() if _TENSOR_MEMBER.match(relative)}
    return ProgramArchive(graph=graph, signature=signature, tensors=tensors, members=tensor_data)


def check_program(program: ProgramArchive, *, inputs: int, outputs: int) -> None:
    """Raise `ProgramRefused` unless the graph is a pure function of its inputs, shaped as declared."""
    try:
        _check_signature(program, inputs=inputs, outputs=outputs)
        defined = {name for name, _ in program.state_inputs()} | set(program.user_inputs())
        for node in _list(program.graph.get("nodes"), "graph nodes"):
            _check_node(node, defined)
        for name in program.user_outputs():
            if name not in defined:
                raise ProgramRefused(f"output {name!r} is not computed by the graph")
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        raise ProgramRefused(f"the program's graph is malformed: {type(exc).__name__}: {exc}") from exc


def _check_signature(program: ProgramArchive, *, inputs: int, outputs: int) -> None:
    for spec in _list(program.signature.get("input_specs"), "input specs"):
        kind = _only_key(spec)
        if kind == "user_input":
            if _only_key(spec[kind]["arg"]) != "as_tensor":
                raise ProgramRefused("every user input must be a tensor (no constant inputs)")
            _name(spec[kind]["arg"]["as_tensor"]["name"])
        elif kind in _STATE_SPECS:
            _name(spec[kind]["arg"]["name"])
            if spec[kind][_STATE_SPECS[kind]] not in program.tensors:
                raise ProgramRefused(f"{kind} {spec[kind][_STATE_SPECS[kind]]!r} has no stored tensor")
        else:
            raise ProgramRefused(f"program input of kind {kind!r} is not allowed (only tensors and state)")
    for spec in _list(program.signature.get("output_specs"), "output specs"):
        kind = _only_key(spec)
        if kind != "user_output":
            raise ProgramRefused(
                f"the program writes to its state or inputs ({kind}): one job could pass data to the next",
                hint="export a model that only computes its outputs (no buffer or input mutation)",
            )
        if _only_key(spec[kind]["arg"]) != "as_tensor":
            raise ProgramRefused("every program output must be a tensor")
    if len(program.user_inputs()) != inputs:
        raise ProgramRefused(
            f"the program takes {len(program.user_inputs())} inputs, its manifest declares {inputs}"
        )
    if len(program.user_outputs()) != outputs:
        raise ProgramRefused(
            f"the program returns {len(program.user_outputs())} outputs, its manifest declares {outputs}"
        )


def _check_node(node: dict[str, Any], defined: set[str]) -> None:
    target = node["target"]
    if not isinstance(target, str):
        raise ProgramRefused("a graph node's target must be a string")
    if target not in SYM_TARGETS:
        match = _ATEN_TARGET.match(target)
        if match is None:
            raise ProgramRefused(
                f"operator {target!r} is not an ATen operator (custom, higher-order and Python "
                "operators are refused)"
            )
        _check_aten(match.group(1), match.group(2), node)
    for item in _list(node["inputs"], "node inputs"):
        _check_input(item["arg"], defined)
    for output in _list(node["outputs"], "node outputs"):
        for name in _output_names(output):
            if name in defined:
                raise ProgramRefused(f"value {name!r} is defined twice")
            defined.add(name)


def _check_aten(name: str, overload: str, node: dict[str, Any]) -> None:
    op = f"aten.{name}.{overload}"
    if name.endswith("_") or overload == "out" or overload.endswith("_out") or overload.startswith("out"):
        raise ProgramRefused(
            f"{op} writes into an existing tensor: a program may not mutate its state or inputs",
            hint="export a functional graph: ep.run_decompositions({}) turns in-place ops into pure ones",
        )
    if "empty" in name.split("_") or name in _UNINITIALIZED:
        raise ProgramRefused(
            f"{op} returns uninitialized memory, which could hold a previous job's data",
            hint="use zeros/full/zeros_like instead",
        )
    if name.startswith("_") and name not in _PRIVATE_ALLOWED:
        raise ProgramRefused(
            f"{op} is a private operator: it skips the bounds checks public operators make",
            hint="export with torch.export.export, whose graphs use public operators",
        )
    if name in _UNCHECKED or _UNCHECKED_WORDS & set(name.split("_")):
        raise ProgramRefused(
            f"{op} trusts the indices or offsets it is given: it could read or write outside "
            "its tensors (another job's data in a warm worker)"
        )
    pinned = any(item["name"] == "pin_memory" and item["arg"] == {"as_bool": True} for item in node["inputs"])
    if name in _PINNING or pinned:
        raise ProgramRefused(f"{op} pins host memory, which the sandbox's memory limit does not bound")
    if name in _FILE_IO:
        raise ProgramRefused(f"{op} reads files: a program computes from its inputs and weights only")
    if name in _STATEFUL and overload not in ("no_stats", "functional"):
        raise ProgramRefused(f"{op} updates state that outlives the job")
    if name in _TRAINING_FLAGS:
        args = {item["name"]: item["arg"] for item in node["inputs"]}
        stats = args.get("running_mean", {"as_none": True})
        if _only_key(stats) != "as_none" and args.get(_TRAINING_FLAGS[name]) != {"as_bool": False}:
            raise ProgramRefused(
                f"{op} in training mode updates its running statistics",
                hint="call model.eval() before torch.export.export",
            )


def _check_input(arg: dict[str, Any], defined: set[str]) -> None:
    kind = _only_key(arg)
    value = arg[kind]
    if kind == "as_tensor":
        _use(value["name"], defined)
    elif kind == "as_tensors":
        for item in _list(value, kind):
            _use(item["name"], defined)
    elif kind == "as_optional_tensors":
        for item in _list(value, kind):
            if _only_key(item) == "as_tensor":
                _use(item["as_tensor"]["name"], defined)
            elif _only_key(item) != "as_none":
                raise ProgramRefused(f"unexpected {_only_key(item)} in optional tensors")
    elif kind in _SYM_KINDS:
        _check_sym(value, defined)
    elif kind in _SYM_LIST_KINDS:
        for item in _list(value, kind):
            _check_sym(item, defined)
    elif kind == "as_device":
        if value.get("type") not in _DEVICE_TYPES or value.get("index") not in (None, 0):
            raise ProgramRefused(f"device {str(value)[:80]} is not the job's own device")
    elif kind not in _VALUE_KINDS:
        raise ProgramRefused(
            f"argument of kind {kind!r} is not allowed (graphs, objects and operators are refused)"
        )


def _check_sym(value: dict[str, Any], defined: set[str]) -> None:
    kind = _only_key(value)
    if kind == "as_name":
        _use(value[kind], defined)
    elif kind not in ("as_int", "as_float", "as_bool"):
        raise ProgramRefused(f"symbolic argument of kind {kind!r} is not allowed")


def _output_names(output: dict[str, Any]) -> Iterator[str]:
    kind = _only_key(output)
    value = output[kind]
    if kind == "as_tensor":
        yield _name(value["name"])
    elif kind == "as_tensors":
        for item in _list(value, kind):
            yield _name(item["name"])
    elif kind in _SYM_KINDS:
        if _only_key(value) != "as_name":
            raise ProgramRefused("a symbolic output must be named")
        yield _name(value["as_name"])
    elif kind != "as_none":
        raise ProgramRefused(f"node output of kind {kind!r} is not allowed")


def _check_guards(guards: Any) -> None:
    """Guards are Python that `.module()` would exec: only shape comparisons like torch writes
    (`L['img'].size()[0] == L['ids'].size()[0]`) pass; workers never run them either way."""
    if not isinstance(guards, list):
        raise UnsafeModelFile("the program's guards are not a list")
    for guard in guards:
        if not isinstance(guard, str) or not _tokens_all(_GUARD_TOKEN, guard):
            raise UnsafeModelFile(
                f"the program carries guard code {str(guard)[:80]!r}, Python that torch.export would "
                "execute, beyond shape comparisons",
                hint="export without custom guards",
            )


def _tokens_all(token: re.Pattern[str], text: str) -> bool:
    position = 0
    while position < len(text):
        match = token.match(text, position)
        if match is None or match.end() == position:
            return False
        position = match.end()
    return True


def _check_expressions(tree: Any) -> None:
    """Every `expr_str` must be a plain sympy shape expression (torch.export.load would eval it)."""
    for expr in _expr_strings(tree):
        position = 0
        while position < len(expr):
            token = _EXPR_TOKEN.match(expr, position)
            if token is None or token.end() == position:
                raise UnsafeModelFile(f"symbolic shape {expr[:80]!r} is not a plain expression")
            word = token.group(1)
            if word is not None and word not in _SYMPY_WORDS and not _SYMBOL.match(word):
                raise UnsafeModelFile(f"symbolic shape {expr[:80]!r} names {word!r}, not a shape symbol")
            position = token.end()


def _expr_strings(tree: Any) -> Iterator[str]:
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key == "expr_str":
                    if not isinstance(value, str):
                        raise UnsafeModelFile("a symbolic shape is not a string")
                    yield value
                else:
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


def _tensor_records(members: dict[str, bytes], config_name: str, folder: str) -> dict[str, TensorRecord]:
    if config_name not in members:
        return {}
    config = _json(members[config_name], config_name).get("config")
    if not isinstance(config, dict):
        raise UnsafeModelFile(f"{config_name} has no config object")
    records = {}
    for fqn, entry in config.items():
        try:
            if entry["use_pickle"] is not False:
                raise UnsafeModelFile(
                    f"{config_name}: {fqn} is stored pickled, which can run code when loaded",
                    hint="only plain dense tensors may be saved in a program",
                )
            member = folder + entry["path_name"]
            meta = entry["tensor_meta"]
            record = TensorRecord(
                member=member,
                dtype=meta["dtype"],
                sizes=tuple(_static(size) for size in meta["sizes"]),
                strides=tuple(_static(stride) for stride in meta["strides"]),
                offset=_static(meta["storage_offset"]),
            )
        except (KeyError, TypeError) as exc:
            raise UnsafeModelFile(f"{config_name}: entry {fqn!r} is malformed: {exc}") from exc
        _check_record(fqn, record, meta, members)
        records[fqn] = record
    return records


def _check_record(fqn: str, record: TensorRecord, meta: dict[str, Any], members: dict[str, bytes]) -> None:
    if not _TENSOR_MEMBER.match(record.member) or record.member not in members:
        raise UnsafeModelFile(f"tensor {fqn!r} points at {record.member!r}, not a raw tensor member")
    if record.dtype not in DTYPE_SIZES or meta.get("layout") != _STRIDED:
        raise UnsafeModelFile(f"tensor {fqn!r} is not a dense tensor of a supported dtype")
    if (
        len(record.sizes) != len(record.strides)
        or min((*record.sizes, *record.strides, record.offset, 0)) < 0
    ):
        raise UnsafeModelFile(f"tensor {fqn!r} has a malformed shape")
    nbytes = len(members[record.member])
    numel = nbytes // DTYPE_SIZES[record.dtype]
    extent = record.offset + sum(
        (size - 1) * stride for size, stride in zip(record.sizes, record.strides, strict=True)
    )
    # No stored bytes: only a tensor with no elements (else the loader would make zeros of any size).
    if nbytes % DTYPE_SIZES[record.dtype] or (0 not in record.sizes and extent >= numel):
        raise UnsafeModelFile(f"tensor {fqn!r} reaches outside its {nbytes} stored bytes")


def _static(value: Any) -> int:
    if not isinstance(value, dict) or set(value) != {"as_int"} or not isinstance(value["as_int"], int):
        raise UnsafeModelFile("a stored tensor has a symbolic size")
    return int(value["as_int"])


def _json(blob: bytes, where: str) -> dict[str, Any]:
    try:
        parsed = json.loads(blob)
    except (ValueError, RecursionError) as exc:
        raise UnsafeModelFile(f"{where} is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise UnsafeModelFile(f"{where} is not a JSON object")
    return parsed


def _only_key(union: Any) -> str:
    if not isinstance(union, dict) or len(union) != 1:
        raise ProgramRefused(f"expected a one-member union, got {str(union)[:80]}")
    return str(next(iter(union)))


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ProgramRefused(f"{what} must be a list")
    return value


def _name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ProgramRefused(f"value name {str(value)[:80]!r} is not a plain identifier")
    return value


def _use(name: Any, defined: set[str]) -> None:
    if _name(name) not in defined:
        raise ProgramRefused(f"value {name!r} is used before it is computed")
