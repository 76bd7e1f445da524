"""Hugging Face model directories as a model format of the store, checked without torch.

A directory in the Hugging Face layout (`config.json`, `*.safetensors`, `tokenizer.json`, …) is
taken only when nothing in it can run code on load: its weights are safetensors (a pickle checkpoint
anywhere in it — `.bin`, `.pt`, `.ckpt`, … — refuses the whole directory), it holds no Python, its
configs name no remote code (`auto_map`, `trust_remote_code`), its class is one allowed by name,
and its sentence-transformers modules are the standard ones. Only the files a worker loads are
stored, flat; the pooling those modules describe goes into the manifest.

Workers never hand a path to `transformers`: they build the class from the config's values and
load tensors from the safetensors bytes themselves (`hf_runtime`), so what is checked here is all
that is read.
"""

from __future__ import annotations

import json
import re
import struct
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeGuard

from node.errors import ModelStoreError
from node.executor.errors import UnsafeModelFile
from node.executor.files import sha256_file
from node.executor.manifest import MANIFEST_FILE, HfSpec, ModelManifest, Pooling, Quantization, Task
from node.executor.pickle_scan import looks_like_pickle
from node.executor.wire import DTYPE_SIZES

# The allowed classes by name: each with its task and the `model_type` its config must carry.
ARCHITECTURES: dict[str, tuple[Task, str]] = {
    "GPT2LMHeadModel": ("generate", "gpt2"),
    "LlamaForCausalLM": ("generate", "llama"),
    "Qwen2ForCausalLM": ("generate", "qwen2"),
    "BertModel": ("embed", "bert"),
    "RobertaModel": ("embed", "roberta"),
}
# Dynamic int8 quantization replaces torch Linear layers; GPT-2's are Conv1D, left as they are.
QUANTIZABLE = frozenset({"LlamaForCausalLM", "Qwen2ForCausalLM", "BertModel", "RobertaModel"})
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
_OPTIONAL = (
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
)
_SHARD = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")
# Files that are, or may be, pickles or code: one anywhere in the directory refuses it.
_UNSAFE_SUFFIXES = frozenset(
    {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz", ".h5", ".msgpack"}
)
_CODE_SUFFIXES = frozenset({".py", ".pyc", ".pyo", ".so", ".pyd", ".pth"})
_REMOTE_CODE_KEYS = frozenset({"auto_map", "trust_remote_code", "custom_pipelines"})
_JSON_LIMIT = 4 * 2**20  # configs are a few KB; tokenizer.json a few MB at most below
_TOKENIZER_LIMIT = 64 * 2**20
_HEADER_LIMIT = 100 * 2**20
_SENTENCE_MODULES = "sentence_transformers.models."
_STANDARD_MODULES = frozenset({"Transformer", "Pooling", "Normalize"})
_HINT = "serve models saved with save_pretrained(safe_serialization=True) and no custom code"


def is_hf_dir(path: Path) -> bool:
    """A directory in the Hugging Face layout (and not one of our manifest directories)."""
    return path.is_dir() and (path / CONFIG_FILE).is_file() and not (path / MANIFEST_FILE).is_file()


def read_hf_dir(
    source: Path, *, name: str | None = None, quantization: Quantization | None = None
) -> tuple[ModelManifest, dict[str, Path]]:
    """The manifest and the files to store for the Hugging Face model directory `source`;
    `quantization="int8"` makes the variant workers quantize (dynamic int8) as they load it."""
    if not source.is_dir():
        raise ModelStoreError(f"{source} is not a directory")
    _refuse_unsafe_files(source)
    files = {entry.name: entry for entry in _model_files(source)}
    pooling, normalize, max_seq_length = _sentence_pooling(source)
    spec = describe(
        files, pooling=pooling, normalize=normalize, max_length=max_seq_length, quantization=quantization
    )
    default_name = source.resolve().name + (f"-{quantization}" if quantization else "")
    manifest = ModelManifest(
        name=(name or default_name)[:100],
        format="huggingface",
        files={file_name: sha256_file(path) for file_name, path in sorted(files.items())},
        hf=spec,
    )
    return manifest, files


def check_hf_files(manifest: ModelManifest, files: Mapping[str, Path]) -> None:
    """The store's check at install: the files are what `read_hf_dir` takes, and the manifest's
    description is what they say (a hand-written manifest gets no other class or task)."""
    if manifest.hf is None:
        raise ModelStoreError(f"model {manifest.name} is not a Hugging Face model")
    for file_name in files:
        if not _is_model_file(file_name):
            raise UnsafeModelFile(
                f"{file_name} is not a file a Hugging Face model may carry here", hint=_HINT
            )
    derived = describe(
        files,
        pooling=manifest.hf.pooling,
        normalize=manifest.hf.normalize,
        max_length=manifest.hf.context_length,
        quantization=manifest.hf.quantization,
    )
    if derived != manifest.hf:
        raise ModelStoreError(
            f"model {manifest.name}: its manifest says {manifest.hf.model_dump()}, "
            f"its files say {derived.model_dump()}"
        )


def describe(
    files: Mapping[str, Path],
    *,
    pooling: Pooling | None,
    normalize: bool,
    max_length: int | None = None,
    quantization: Quantization | None = None,
) -> HfSpec:
    """Task, class, precision and context length from a model's stored files; `max_length` may only
    shorten the context the config allows (sentence-transformers' `max_seq_length`)."""
    if CONFIG_FILE not in files or TOKENIZER_FILE not in files:
        raise ModelStoreError(
            f"a Hugging Face model needs {CONFIG_FILE} and {TOKENIZER_FILE} (a fast tokenizer)",
            hint="save the tokenizer with save_pretrained from a fast tokenizer",
        )
    config = _json_object(files[CONFIG_FILE], CONFIG_FILE)
    for file_name in ("tokenizer_config.json", "generation_config.json", "special_tokens_map.json"):
        if file_name in files:
            _json_object(files[file_name], file_name)
    _tokenizer_is_data(files[TOKENIZER_FILE])
    architecture, task, model_type = _architecture(config)
    if quantization is not None and architecture not in QUANTIZABLE:
        raise ModelStoreError(
            f"{architecture} has no int8 variant here (its layers are not torch Linear layers)",
            hint=f"quantize one of {', '.join(sorted(QUANTIZABLE))}",
        )
    shards = _weight_files(files)
    precision = _precision([_safetensors_dtypes(files[shard], shard) for shard in shards])
    context = _context_length(config, model_type)
    if max_length is not None and 0 < max_length < context:
        context = max_length
    if task == "embed":
        pooling = pooling or "mean"
    else:
        pooling, normalize = None, False
    return HfSpec(
        task=task,
        architecture=architecture,
        model_type=model_type,
        precision=precision,
        context_length=context,
        pooling=pooling,
        normalize=normalize,
        quantization=quantization,
    )


def _refuse_unsafe_files(source: Path) -> None:
    for entry in sorted(source.rglob("*")):
        if entry.is_symlink():
            raise UnsafeModelFile(f"{entry.relative_to(source)} is a symbolic link", hint=_HINT)
        if not entry.is_file():
            continue
        where = entry.relative_to(source)
        suffix = entry.suffix.lower()
        if suffix in _CODE_SUFFIXES:
            raise UnsafeModelFile(
                f"{where} is code: a model asking to run its own code is refused",
                hint="serve a model of an allowed architecture with no custom code",
            )
        if suffix in _UNSAFE_SUFFIXES:
            raise UnsafeModelFile(f"{where} is a pickle or non-safetensors checkpoint", hint=_HINT)
        if entry.suffix == ".safetensors" or entry.name in (CONFIG_FILE, TOKENIZER_FILE):
            with entry.open("rb") as f:
                head = f.read(4)
            if looks_like_pickle(head) or head.startswith(b"PK"):
                raise UnsafeModelFile(
                    f"{where} is a pickle or zip archive, not what its name says", hint=_HINT
                )


def _model_files(source: Path) -> list[Path]:
    return sorted(entry for entry in source.iterdir() if entry.is_file() and _is_model_file(entry.name))


def _is_model_file(file_name: str) -> bool:
    return (
        file_name in (CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE, WEIGHTS_INDEX, *_OPTIONAL)
        or _SHARD.match(file_name) is not None
    )


def _weight_files(files: Mapping[str, Path]) -> list[str]:
    shards = sorted(name for name in files if _SHARD.match(name))
    if WEIGHTS_FILE in files and not shards:
        return [WEIGHTS_FILE]
    if shards and WEIGHTS_INDEX in files and WEIGHTS_FILE not in files:
        index = _json_object(files[WEIGHTS_INDEX], WEIGHTS_INDEX)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or set(weight_map.values()) != set(shards):
            raise ModelStoreError(f"{WEIGHTS_INDEX} does not name exactly the shards present {shards}")
        return shards
    raise ModelStoreError(
        f"a Hugging Face model's weights are {WEIGHTS_FILE}, or shards with {WEIGHTS_INDEX}",
        hint=_HINT,
    )


def _json_object(path: Path, what: str, limit: int = _JSON_LIMIT) -> dict[str, Any]:
    if path.stat().st_size > limit:
        raise ModelStoreError(f"{what} is larger than {limit} bytes")
    try:
        value = json.loads(path.read_bytes())
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelStoreError(f"{what} is not JSON: {exc}"[:300]) from None
    if not isinstance(value, dict):
        raise ModelStoreError(f"{what} is not a JSON object")
    remote = _REMOTE_CODE_KEYS & set(value)
    if remote or _names_code(value):
        raise UnsafeModelFile(
            f"{what} asks for remote code ({', '.join(sorted(remote)) or 'a module path'}): refused",
            hint="serve a model of an allowed architecture with no custom code",
        )
    return value


def _names_code(config: dict[str, Any]) -> bool:
    """A config whose class names point into a module (`"tokenizer_class": "my_code.Tok"`)."""
    for key in ("tokenizer_class", "processor_class", "feature_extractor_type", "model_type"):
        value = config.get(key)
        if isinstance(value, (list, tuple)):
            value = next((v for v in value if v), None)
        if isinstance(value, str) and ("." in value or "/" in value or "--" in value):
            return True
    return False


def _tokenizer_is_data(path: Path) -> None:
    # tokenizer.json is data for the Rust tokenizers library: a JSON object, nothing to import.
    _json_object(path, TOKENIZER_FILE, limit=_TOKENIZER_LIMIT)


def _architecture(config: dict[str, Any]) -> tuple[str, Task, str]:
    named = config.get("architectures")
    if not isinstance(named, list) or len(named) != 1 or not isinstance(named[0], str):
        raise ModelStoreError(
            f"{CONFIG_FILE} must name exactly one class in architectures, got {named!r}"[:300],
            hint=f"allowed: {', '.join(ARCHITECTURES)}",
        )
    architecture = named[0]
    if architecture not in ARCHITECTURES:
        raise ModelStoreError(
            f"architecture {architecture[:100]!r} is not one this node runs",
            hint=f"allowed: {', '.join(ARCHITECTURES)}",
        )
    task, model_type = ARCHITECTURES[architecture]
    if config.get("model_type") != model_type:
        raise ModelStoreError(
            f"{architecture} needs model_type {model_type!r}, {CONFIG_FILE} says {config.get('model_type')!r}"
        )
    return architecture, task, model_type


def _context_length(config: dict[str, Any], model_type: str) -> int:
    key = "n_positions" if model_type == "gpt2" else "max_position_embeddings"
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 2**20:
        raise ModelStoreError(f"{CONFIG_FILE}: {key} must be a positive integer, got {value!r}"[:200])
    if model_type == "roberta":  # positions start after the padding index
        value -= 2
    return value


def _safetensors_dtypes(path: Path, what: str) -> Counter[str]:
    """Elements per dtype in one safetensors file, read from its header alone."""
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) != 8:
            raise UnsafeModelFile(f"{what} is too short to be safetensors", hint=_HINT)
        (length,) = struct.unpack("<Q", prefix)
        size = path.stat().st_size
        if length > min(_HEADER_LIMIT, size - 8):
            raise UnsafeModelFile(f"{what} is not a safetensors file (header length {length})", hint=_HINT)
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise UnsafeModelFile(
            f"{what} is not a safetensors file (its header is not JSON)", hint=_HINT
        ) from None
    if not isinstance(header, dict):
        raise UnsafeModelFile(f"{what} is not a safetensors file", hint=_HINT)
    header.pop("__metadata__", None)
    counts: Counter[str] = Counter()
    body = size - 8 - length
    for tensor, spec in header.items():
        if not isinstance(spec, dict) or spec.get("dtype") not in DTYPE_SIZES:
            raise ModelStoreError(f"{what}: tensor {tensor[:100]!r} has no dtype this node knows")
        shape, offsets = spec.get("shape"), spec.get("data_offsets")
        if not _int_list(shape) or not _int_list(offsets) or len(offsets) != 2:
            raise ModelStoreError(f"{what}: tensor {tensor[:100]!r} has a malformed shape or offsets")
        elements = 1
        for dim in shape:
            elements *= dim
        if not 0 <= offsets[0] <= offsets[1] <= body or elements * DTYPE_SIZES[spec["dtype"]] != (
            offsets[1] - offsets[0]
        ):
            raise ModelStoreError(f"{what}: tensor {tensor[:100]!r} does not fit its byte range")
        counts[spec["dtype"]] += elements
    if not counts:
        raise ModelStoreError(f"{what} holds no tensors")
    return counts


def _int_list(value: object) -> TypeGuard[list[int]]:
    return isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    )


def _precision(per_file: list[Counter[str]]) -> str:
    """The dtype most of the floating-point weights are stored in."""
    total: Counter[str] = Counter()
    for counts in per_file:
        total.update({dtype: n for dtype, n in counts.items() if dtype in ("F32", "F16", "BF16", "F64")})
    if not total:
        raise ModelStoreError("the model's weights hold no floating-point tensors")
    return total.most_common(1)[0][0]


def _sentence_pooling(source: Path) -> tuple[Pooling | None, bool, int | None]:
    """Pooling, normalization and the longest input from sentence-transformers' `modules.json`
    and `sentence_bert_config.json`, when there are such files."""
    modules_path = source / "modules.json"
    if not modules_path.is_file():
        return None, False, None
    try:
        modules = json.loads(modules_path.read_bytes())
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ModelStoreError("modules.json is not JSON") from None
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ModelStoreError("modules.json is not a list of modules")
    pooling: Pooling | None = None
    normalize = False
    for module in modules:
        kind = str(module.get("type", ""))
        short = kind.removeprefix(_SENTENCE_MODULES)
        if not kind.startswith(_SENTENCE_MODULES) or short not in _STANDARD_MODULES:
            raise UnsafeModelFile(
                f"modules.json names module {kind[:100]!r}: only Transformer, Pooling and Normalize run here",
                hint="serve a model whose sentence-transformers modules are the standard ones",
            )
        if short == "Normalize":
            normalize = True
        if short == "Pooling":
            pooling = _pooling_mode(source, str(module.get("path", "")))
    max_seq_length = None
    if (source / "sentence_bert_config.json").is_file():
        value = _json_object(source / "sentence_bert_config.json", "sentence_bert_config.json").get(
            "max_seq_length"
        )
        max_seq_length = value if isinstance(value, int) and not isinstance(value, bool) else None
    return pooling, normalize, max_seq_length


def _pooling_mode(source: Path, relative: str) -> Pooling:
    folder = (source / relative).resolve()
    if not folder.is_relative_to(source.resolve()):
        raise UnsafeModelFile(f"modules.json points outside the model directory: {relative[:100]!r}")
    config = _json_object(folder / "config.json", f"{relative}/config.json")
    modes: list[Pooling] = []
    if config.get("pooling_mode_mean_tokens"):
        modes.append("mean")
    if config.get("pooling_mode_cls_token"):
        modes.append("cls")
    if config.get("pooling_mode_max_tokens"):
        modes.append("max")
    if len(modes) != 1 or any(config.get(k) for k in ("pooling_mode_mean_sqrt_len_tokens",)):
        raise ModelStoreError(f"{relative}/config.json must choose exactly one of mean, cls or max pooling")
    return modes[0]
