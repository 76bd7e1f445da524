"""The tensor wire format: well-formed safetensors payloads pass, every malformed one gets a clear error."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save

from node.executor.errors import InputTooLarge, InvalidInput
from node.executor.json_depth import too_deep
from node.executor.wire import MAX_HEADER_BYTES, parse_payload


def _raw(header: dict[str, object], body: bytes) -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + body


def test_can_parse_named_tensors() -> None:
    data = save({"b": np.zeros((3, 4), np.float32), "a": np.ones((3,), np.int64)})
    payload = parse_payload(data, max_bytes=len(data))
    assert [(t.name, t.dtype, t.shape) for t in payload.tensors] == [("a", "I64", (3,)), ("b", "F32", (3, 4))]
    assert payload.batch_rows == 3
    assert payload.size == len(data)


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=4),
    dtype=st.sampled_from([np.float32, np.float16, np.int64, np.int32, np.uint8, np.bool_]),
)
def test_can_parse_any_safetensors_payload(shape: list[int], dtype: type) -> None:
    data = save({"x": np.zeros(shape, dtype=dtype)})
    payload = parse_payload(data, max_bytes=len(data))
    assert payload.tensors[0].shape == tuple(shape)


def test_cannot_send_more_than_the_limit() -> None:
    data = save({"x": np.zeros((1024,), np.float32)})
    with pytest.raises(InputTooLarge, match="over the limit"):
        parse_payload(data, max_bytes=len(data) - 1)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too short"),
        (struct.pack("<Q", 10**9) + b"{}", "runs past the end"),
        (struct.pack("<Q", 3) + b"{x}", "not JSON"),
        (_raw([], b""), "not a JSON object"),  # type: ignore[arg-type]
        (_raw({}, b""), "no tensors"),
        (_raw({"x": {"dtype": "PICKLE", "shape": [1], "data_offsets": [0, 1]}}, b"\0"), "unsupported dtype"),
        (_raw({"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4), "shape"),
        (_raw({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4), "fall outside"),
        (_raw({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4), "do not match"),
        (
            _raw(
                {
                    "x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                    "y": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                },
                b"\0" * 4,
            ),
            "overlap",
        ),
        (_raw({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8), "longer than"),
        (_raw({"x": "nope"}, b""), "not an object"),
        (struct.pack("<Q", 5) + b" {}  ", "not a JSON object"),
        (_raw({"x": {"dtype": "F32", "shape": [2**63], "data_offsets": [0, 4]}}, b"\0" * 4), "shape"),
        (_raw({"__metadata__": {"k": 1}, "x": {}}, b""), "__metadata__ must map names to strings"),
    ],
)
def test_cannot_send_malformed_payloads(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_payload(data, max_bytes=2**20)


def _header_only(header: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # Each once raised RecursionError or ValueError, not InvalidInput, after parsing it all.
        (_header_only(b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), "nests too deeply"),
        (_header_only(b'{"x": {"shape": [' + b"9" * 5000 + b"]}}"), "not valid safetensors JSON"),
        (_header_only(b'{"x": 1, "x": 2}'), "appears twice"),
        (_header_only(b'{"x": NaN}'), "NaN is not JSON"),
    ],
)
def test_cannot_send_a_header_that_breaks_the_json_parser(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_payload(data, max_bytes=2**20)


def test_cannot_send_a_huge_header_and_it_is_refused_before_parsing() -> None:
    # 64 MiB of header once kept the event loop busy for 1.2 s before it was refused.
    header = b'{"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "pad": "' + b"a" * 2**26 + b'"}'
    with pytest.raises(InvalidInput, match=f"over the limit of {MAX_HEADER_BYTES}"):
        parse_payload(_header_only(header) + b"\0" * 4, max_bytes=2**27)


def test_deep_nesting_is_refused_even_where_the_recursion_limit_was_raised() -> None:
    # With a raised limit json.loads recursed until the C stack overflowed: the node segfaulted.
    code = (
        "import struct, sys; sys.setrecursionlimit(10**7)\n"
        "from node.executor.wire import parse_payload\n"
        "from node.executor.errors import InvalidInput\n"
        "h = b'{\"x\": ' + b'[' * 100000 + b']' * 100000 + b'}'\n"
        "try:\n"
        "    parse_payload(struct.pack('<Q', len(h)) + h, max_bytes=2**20)\n"
        "except InvalidInput as e:\n"
        "    print(e.message)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "input header nests too deeply")


@pytest.mark.parametrize(
    ("raw", "deep"),
    [
        (b'{"a": {"shape": [1, 2]}, "__metadata__": {"k": "v"}}', False),
        (b'{"a": {"shape": [[1]]}}', True),
        (b'{"a": "[[[[[[{{{{"}', False),  # brackets inside strings do not count
        (b'{"a": "\\"[[[[["}', False),
        (b"{[}", True),  # unbalanced
    ],
)
def test_nesting_depth_is_found_outside_strings(raw: bytes, deep: bool) -> None:
    assert too_deep(raw, 3) is deep
