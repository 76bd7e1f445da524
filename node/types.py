"""Frozen value types shared by every layer. No I/O here."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from typing import NewType

from eth_utils.address import to_checksum_address

Address = NewType("Address", str)  # checksummed 0x… Ethereum address
Hash32 = NewType("Hash32", bytes)  # 32 raw bytes

ZERO_HASH = Hash32(b"\x00" * 32)


def sha256(data: bytes) -> Hash32:
    return Hash32(hashlib.sha256(data).digest())


@lru_cache(maxsize=4096)
def checksum_address(value: str | bytes) -> Address:
    """`value` (hex, any case, or 20 raw bytes) checksummed. A node sees the same few accounts on
    every job (its peers, their signers): each spelling is keccak-hashed once, in a bounded cache."""
    return Address(to_checksum_address(value))


@dataclass(frozen=True, slots=True)
class ResultReceipt:
    """What a provider signs (EIP-712 `ResultReceipt`) when it returns a job's result.

    `output_hash` is sha256 of the output bytes, computed outside the sandbox; `profile_hash`
    commits to the execution profile (torch version, threads, CPU capability, batch) so a re-run
    can reproduce the output.
    """

    job_id: Hash32
    model_id: Hash32
    input_hash: Hash32
    output_hash: Hash32
    profile_hash: Hash32
    provider: Address


@dataclass(frozen=True, slots=True)
class Voucher:
    """EIP-712 `Voucher`: the cumulative amount (wei) `client` owes `provider` so far."""

    client: Address
    provider: Address
    cumulative_amount: int


@dataclass(frozen=True, slots=True)
class FetchTerms:
    """A provider's terms for models it does not hold yet, fetched over the overlay: at most
    `max_bytes` of files; the first job costs `price_per_job_wei` plus `cold_start_price_wei`."""

    max_bytes: int
    price_per_job_wei: int
    cold_start_price_wei: int

    @property
    def first_job_wei(self) -> int:
        return self.price_per_job_wei + self.cold_start_price_wei
