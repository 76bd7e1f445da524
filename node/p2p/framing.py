"""Length-prefixed frames: an unsigned varint (as libp2p protocols use) then the payload."""

from __future__ import annotations

from node.errors import ProtocolViolation

# A varint of at most 5 bytes covers every frame size below 2**35; ours stay far below that.
MAX_VARINT_BYTES = 5
# Job requests and results inline inputs/outputs up to this; larger data goes through blobs.
DEFAULT_MAX_FRAME = 8 * 2**20


def encode_varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varints encode non-negative integers only")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(buf: bytes | bytearray, start: int = 0) -> tuple[int, int] | None:
    """(value, bytes consumed) of the varint at `start`, or None when `buf` holds only part of it."""
    value = 0
    for i in range(MAX_VARINT_BYTES):
        if start + i >= len(buf):
            return None
        byte = buf[start + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, i + 1
    raise ProtocolViolation(f"frame length prefix longer than {MAX_VARINT_BYTES} bytes")


def encode_frame(payload: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    if len(payload) > max_frame:
        raise ProtocolViolation(
            f"frame of {len(payload)} bytes exceeds the {max_frame}-byte limit",
            hint="send large inputs and outputs as blobs",
        )
    return encode_varint(len(payload)) + payload
