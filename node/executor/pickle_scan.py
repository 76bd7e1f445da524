"""Refuse model files that could run code when loaded, checked on the node before any worker sees them.

A pickle can call any importable function. `.pt2` archives from `torch.export.save` keep a few
pickled parts (sample inputs, some constants) that `torch.export.load` would unpickle, falling back
to full unpickling when the safe loader refuses. Every pickle in an archive, nested archives
included, must reference only tensor-rebuilding globals. This is the first check only: torch also
unpickles members by their names whatever their flags, and evaluates or executes parts of the JSON,
so `program_rules` refuses every member but raw tensors and JSON, and workers never call
`torch.export.load` (`program_loader`).
"""

from __future__ import annotations

import io
import json
import pickletools
import zipfile
from collections.abc import Iterator

from node.executor.errors import UnsafeModelFile

_SAFE_GLOBALS = frozenset(
    {
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._utils", "_rebuild_tensor"),
        ("collections", "OrderedDict"),
        ("torch", "Size"),
        ("torch", "device"),
        ("torch.storage", "UntypedStorage"),
    }
)
_STORAGE_SUFFIX = "Storage"
_ZIP_MAGIC = b"PK\x03\x04"
_MAX_NESTING = 2
_MAX_MEMBERS = 10_000
_STRING_OPS = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING"}
)


def check_exported_program(data: bytes, *, max_unpacked: int) -> None:
    """Raise `UnsafeModelFile` unless `data` is a `.pt2` archive whose pickles are all tensor data."""
    if looks_like_pickle(data):
        raise UnsafeModelFile(
            "model file is a raw pickle, which can run arbitrary code when loaded",
            hint="export the model with torch.export.export(...) and torch.export.save(ep, 'model.pt2')",
        )
    archive = _open_zip(data, "model file")
    names = archive.namelist()
    if not any(name.endswith("/archive_format") and archive.read(name).strip() == b"pt2" for name in names):
        raise UnsafeModelFile(
            "model file is a zip but not a torch.export (.pt2) archive (torch.save checkpoints are pickles)",
            hint="export the model with torch.export.save(ep, 'model.pt2')",
        )
    _check_archive(archive, max_unpacked=max_unpacked, depth=0)


def looks_like_pickle(data: bytes) -> bool:
    # Protocol 2+ pickles (every torch.save since 2017) start with the PROTO opcode.
    return data[:1] == b"\x80"


def _open_zip(data: bytes, what: str) -> zipfile.ZipFile:
    if not data.startswith(_ZIP_MAGIC):
        raise UnsafeModelFile(f"{what} is not a zip archive", hint="use a .pt2 file from torch.export.save")
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise UnsafeModelFile(f"{what} is a corrupt zip archive: {exc}") from exc


def _check_archive(archive: zipfile.ZipFile, *, max_unpacked: int, depth: int) -> None:
    infos = archive.infolist()
    if len(infos) > _MAX_MEMBERS or sum(info.file_size for info in infos) > max_unpacked:
        raise UnsafeModelFile(f"archive unpacks to more than {max_unpacked} bytes or {_MAX_MEMBERS} files")
    pickled = _pickled_members(archive)
    for info in infos:
        member = archive.read(info)
        if member.startswith(_ZIP_MAGIC):
            if depth >= _MAX_NESTING:
                raise UnsafeModelFile(f"archive member {info.filename} nests archives too deeply")
            _check_archive(_open_zip(member, info.filename), max_unpacked=max_unpacked, depth=depth + 1)
        elif info.filename.endswith(".pkl") or info.filename in pickled:
            _check_pickle(member, info.filename)


def _pickled_members(archive: zipfile.ZipFile) -> set[str]:
    """Weights and constants a `.pt2` stores pickled, as its `*_config.json` files declare them."""
    pickled = set()
    for name in archive.namelist():
        if not name.endswith("_config.json"):
            continue
        try:
            entries = json.loads(archive.read(name)).get("config", {})
        except (ValueError, AttributeError) as exc:
            raise UnsafeModelFile(f"{name} is not a valid archive config: {exc}") from exc
        folder = name.rpartition("/")[0]
        for entry in entries.values() if isinstance(entries, dict) else []:
            if (
                isinstance(entry, dict)
                and entry.get("use_pickle")
                and isinstance(entry.get("path_name"), str)
            ):
                pickled.add(f"{folder}/{entry['path_name']}")
    return pickled


def _check_pickle(data: bytes, where: str) -> None:
    for module, name in _globals(data, where):
        if (module, name) in _SAFE_GLOBALS or (module == "torch" and name.endswith(_STORAGE_SUFFIX)):
            continue
        raise UnsafeModelFile(
            f"{where} references {module}.{name}, which could run code when unpickled",
            hint="only tensors may be pickled inside a model archive; re-export the model",
        )


def _globals(data: bytes, where: str) -> Iterator[tuple[str, str]]:
    # (op name, string argument) of recent ops, memo stores skipped: STACK_GLOBAL's operands must be
    # the two string literals right before it, never values fetched from the memo.
    recent: list[tuple[str, str]] = []
    try:
        for op, arg, _pos in pickletools.genops(data):
            if op.name in _MEMO_STORES:
                continue
            if op.name in ("GLOBAL", "INST"):
                module, _, name = str(arg).partition(" ")
                yield module, name
            elif op.name == "STACK_GLOBAL":
                if len(recent) < 2 or not all(prev in _STRING_OPS for prev, _ in recent[-2:]):
                    raise UnsafeModelFile(f"{where}: STACK_GLOBAL with a computed name")
                yield recent[-2][1], recent[-1][1]
            recent = [*recent[-1:], (op.name, str(arg))]
    except (ValueError, EOFError) as exc:  # pickletools' way of saying the stream is malformed
        raise UnsafeModelFile(f"{where} is a malformed pickle: {exc}") from exc


_MEMO_STORES = frozenset({"MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"})
