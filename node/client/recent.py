"""Results the client verified recently, kept in memory so views of a job read nothing back."""

from __future__ import annotations

from collections import OrderedDict

from node.storage import StoredReceipt
from node.types import Hash32

# Enough for every job in flight at a time, few enough outputs to stay small next to the node.
_MAX_RESULTS = 1024
_MAX_BYTES = 64 * 2**20


class RecentResults:
    """Receipt and output by receipt job id; the oldest fall out first, the database keeps all."""

    def __init__(self, max_results: int = _MAX_RESULTS, max_bytes: int = _MAX_BYTES) -> None:
        self._max_results = max_results
        self._max_bytes = max_bytes
        self._bytes = 0
        self._results: OrderedDict[Hash32, tuple[StoredReceipt, bytes]] = OrderedDict()

    def put(self, receipt: StoredReceipt, output: bytes) -> None:
        if len(output) > self._max_bytes:
            return
        self.forget(receipt.receipt.job_id)
        self._results[receipt.receipt.job_id] = (receipt, output)
        self._bytes += len(output)
        while len(self._results) > self._max_results or self._bytes > self._max_bytes:
            _, (_, dropped) = self._results.popitem(last=False)
            self._bytes -= len(dropped)

    def get(self, receipt_job_id: Hash32) -> tuple[StoredReceipt, bytes] | None:
        return self._results.get(receipt_job_id)

    def forget(self, receipt_job_id: Hash32) -> None:
        found = self._results.pop(receipt_job_id, None)
        if found is not None:
            self._bytes -= len(found[1])
