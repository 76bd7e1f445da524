"""Verified results kept in memory for watchers: bounded by count and by bytes, oldest out first."""

from __future__ import annotations

from node.client.recent import RecentResults
from node.storage import StoredReceipt
from node.types import Address, Hash32, ResultReceipt


def stored(n: int) -> StoredReceipt:
    receipt = ResultReceipt(
        job_id=Hash32(bytes([n]) * 32),
        model_id=Hash32(b"\x01" * 32),
        input_hash=Hash32(b"\x02" * 32),
        output_hash=Hash32(b"\x03" * 32),
        profile_hash=Hash32(b"\x04" * 32),
        provider=Address("0x" + "ab" * 20),
    )
    return StoredReceipt(receipt, b"\x05" * 65, 0.0)


def test_can_find_a_result_until_newer_ones_push_it_out() -> None:
    recent = RecentResults(max_results=2, max_bytes=1000)
    for n in (1, 2, 3):
        recent.put(stored(n), bytes([n]) * 10)
    assert recent.get(stored(1).receipt.job_id) is None
    assert recent.get(stored(3).receipt.job_id) == (stored(3), b"\x03" * 10)


def test_cannot_hold_more_output_bytes_than_its_bound() -> None:
    recent = RecentResults(max_results=100, max_bytes=25)
    recent.put(stored(1), b"a" * 10)
    recent.put(stored(2), b"b" * 10)
    recent.put(stored(3), b"c" * 10)
    assert recent.get(stored(1).receipt.job_id) is None
    assert recent.get(stored(2).receipt.job_id) is not None
    recent.put(stored(4), b"d" * 26)  # larger than the whole bound: never kept
    assert recent.get(stored(4).receipt.job_id) is None
    recent.forget(stored(3).receipt.job_id)
    assert recent.get(stored(3).receipt.job_id) is None
