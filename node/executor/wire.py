"""The tensor wire format jobs carry: safetensors bytes of named tensors.

safetensors is a documented, language-neutral format (8-byte little-endian header length, a JSON
header naming each tensor's dtype, shape and byte range, then the raw little-endian buffer), it
cannot carry code, and it can be checked here without torch. Inputs and outputs use it alike.

The header is read the way the workers' Rust parser reads it, so what the node checked is what the
worker sees: a JSON object (no duplicate keys, no NaN), sizes that fit in 64 bits, string metadata,
and at most `MAX_HEADER_BYTES` of it (64 named tensors need a few KiB), so a hostile header is
refused before any JSON is parsed.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import TypeGuard

from node.executor.errors import InputTooLarge, InvalidInput
from node.executor.json_depth import too_deep

DTYPE_SIZES: dict[str, int] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
_HEADER_LEN = struct.Struct("<Q")
MAX_TENSORS = 64
MAX_RANK = 8
MAX_HEADER_BYTES = 256 * 1024
_MAX_INT = 2**63 - 1
_MAX_DEPTH = 3  # {name: {"shape": [...]}}


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One named tensor of a payload: its dtype (safetensors spelling) and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offsets: tuple[int, int] = (0, 0)  # byte range in the buffer after the header


@dataclass(frozen=True, slots=True)
class TensorPayload:
    """A validated payload: its tensors in name order and the byte size it was read from."""

    tensors: tuple[TensorInfo, ...]
    size: int
    body_start: int = 0  # where the tensors' buffer begins in the payload's bytes

    @property
    def batch_rows(self) -> int:
        """Rows along dim 0, shared by every tensor of a batchable payload."""
        return self.tensors[0].shape[0] if self.tensors and self.tensors[0].shape else 1

    def signature(self) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
        """Everything but dim 0: payloads with equal signatures can be stacked into one batch."""
        return tuple((t.name, t.dtype, t.shape[1:]) for t in self.tensors)


def parse_payload(data: bytes, *, max_bytes: int) -> TensorPayload:
    """Check `data` is one well-formed safetensors payload no larger than `max_bytes`."""
    if len(data) > max_bytes:
        raise InputTooLarge(
            f"input is {len(data)} bytes, over the limit of {max_bytes}",
            hint="send a smaller batch, or raise executor.max_input_bytes on the provider",
        )
    header = _read_header(data)
    body_len = len(data) - _HEADER_LEN.size - _header_length(data)
    tensors = tuple(
        sorted((_tensor_info(name, spec, body_len) for name, spec in header.items()), key=lambda t: t.name)
    )
    if not tensors:
        raise InvalidInput("input holds no tensors", hint="send at least one named tensor")
    _check_ranges(header, body_len)
    return TensorPayload(tensors=tensors, size=len(data), body_start=len(data) - body_len)


def _header_length(data: bytes) -> int:
    return int(_HEADER_LEN.unpack_from(data)[0])


def _read_header(data: bytes) -> dict[str, dict[str, object]]:
    if len(data) < _HEADER_LEN.size:
        raise InvalidInput("input is too short to be a safetensors payload", hint=_FORMAT_HINT)
    length = _header_length(data)
    if length > len(data) - _HEADER_LEN.size:
        raise InvalidInput("input header length runs past the end of the input", hint=_FORMAT_HINT)
    if length > MAX_HEADER_BYTES:
        raise InvalidInput(
            f"input header is {length} bytes, over the limit of {MAX_HEADER_BYTES}",
            hint="name at most 64 tensors, with short names and little metadata",
        )
    raw = data[_HEADER_LEN.size : _HEADER_LEN.size + length]
    if not raw.startswith(b"{"):
        raise InvalidInput("input header is not a JSON object", hint=_FORMAT_HINT)
    if too_deep(raw, _MAX_DEPTH):
        raise InvalidInput("input header nests too deeply", hint=_FORMAT_HINT)
    try:
        header = json.loads(raw, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"input header is not JSON: {exc}", hint=_FORMAT_HINT) from exc
    except RecursionError:
        raise InvalidInput("input header nests too deeply", hint=_FORMAT_HINT) from None
    except ValueError as exc:  # a duplicate key, NaN/Infinity, an integer of thousands of digits
        raise InvalidInput(f"input header is not valid safetensors JSON: {exc}", hint=_FORMAT_HINT) from None
    if not isinstance(header, dict):
        raise InvalidInput("input header is not a JSON object", hint=_FORMAT_HINT)
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise InvalidInput("input __metadata__ must map names to strings", hint=_FORMAT_HINT)
    if len(header) > MAX_TENSORS:
        raise InvalidInput(f"input names {len(header)} tensors, over the limit of {MAX_TENSORS}")
    return header


def _tensor_info(name: str, spec: object, body_len: int) -> TensorInfo:
    if not isinstance(spec, dict):
        raise InvalidInput(f"tensor {name!r}: header entry is not an object", hint=_FORMAT_HINT)
    dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if dtype not in DTYPE_SIZES:
        raise InvalidInput(
            f"tensor {name!r}: unsupported dtype {dtype!r}", hint=f"use one of {sorted(DTYPE_SIZES)}"
        )
    if not _is_int_list(shape, MAX_RANK) or any(d < 0 for d in shape):
        raise InvalidInput(f"tensor {name!r}: shape {shape!r} is not a list of at most {MAX_RANK} sizes")
    if not _is_int_list(offsets, 2) or len(offsets) != 2 or not 0 <= offsets[0] <= offsets[1] <= body_len:
        raise InvalidInput(f"tensor {name!r}: data_offsets {offsets!r} fall outside the input")
    if math.prod(shape) * DTYPE_SIZES[dtype] != offsets[1] - offsets[0]:
        raise InvalidInput(f"tensor {name!r}: shape {shape} and dtype {dtype} do not match its byte range")
    return TensorInfo(name=name, dtype=dtype, shape=tuple(shape), offsets=(offsets[0], offsets[1]))


def _is_int_list(value: object, max_len: int) -> TypeGuard[list[int]]:
    return (
        isinstance(value, list)
        and len(value) <= max_len
        and all(isinstance(v, int) and not isinstance(v, bool) and v <= _MAX_INT for v in value)
    )


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise ValueError("a key appears twice in one object")
    return found


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _check_ranges(header: dict[str, dict[str, object]], body_len: int) -> None:
    """Byte ranges must tile the body exactly, as safetensors writers produce them."""
    # _tensor_info has checked every entry is a two-int list by now.
    ranges: list[tuple[int, int]] = sorted((int(o[0]), int(o[1])) for o in _offsets(header))
    cursor = 0
    for start, end in ranges:
        if start != cursor:
            raise InvalidInput("input tensors overlap or leave gaps in the buffer", hint=_FORMAT_HINT)
        cursor = end
    if cursor != body_len:
        raise InvalidInput("input buffer is longer than its tensors", hint=_FORMAT_HINT)


def _offsets(header: dict[str, dict[str, object]]) -> list[list[int]]:
    return [spec["data_offsets"] for spec in header.values() if _is_int_list(spec["data_offsets"], 2)]


_FORMAT_HINT = "inputs are safetensors bytes, e.g. safetensors.numpy.save({'input': array})"
