"""Checks on values before they are written, each failing with an `InvalidRecord` that names the field."""

from __future__ import annotations

import re

from node.storage.errors import InvalidRecord
from node.types import Address, checksum_address

MAX_UINT256 = 2**256 - 1
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def check_hash(name: str, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != 32:
        shown = len(value) if isinstance(value, bytes) else type(value).__name__
        raise InvalidRecord(f"{name} must be 32 bytes, got {shown}")


def check_signature(value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != 65:
        shown = len(value) if isinstance(value, bytes) else type(value).__name__
        raise InvalidRecord(f"a signature must be 65 bytes (r || s || v), got {shown}")


def check_wei(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_UINT256:
        raise InvalidRecord(f"{name} must be a whole number of wei between 0 and 2**256-1, got {value!r}")


def checked_address(name: str, value: str) -> Address:
    """The address in checksummed form, so one account is one key whatever case it arrived in."""
    if not isinstance(value, str) or not _ADDRESS.fullmatch(value):
        raise InvalidRecord(f"{name} must be a 0x-prefixed 20-byte hex address, got {value!r}")
    return checksum_address(value)


def check_block(value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise InvalidRecord(f"a block number must be a non-negative integer, got {value!r}")
