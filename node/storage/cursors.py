"""Chain cursors: the last block each chain follower has fully processed, by follower name."""

from __future__ import annotations

from node.storage.errors import InvalidRecord
from node.storage.models import ChainCursorRow
from node.storage.session import Transactions, retry_on_conflict
from node.storage.validation import check_block


class ChainCursorRepository:
    """Implements the chain follower's `CursorStore`: `load(name) -> int | None`, `save(name, block)`."""

    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    def load(self, name: str) -> int | None:
        with self._tx.read() as session:
            row = session.get(ChainCursorRow, name)
            return None if row is None else row.block

    def save(self, name: str, block: int) -> None:
        """Set the cursor; it may move back (a reorg rewinds the follower)."""
        if not isinstance(name, str) or not 0 < len(name) <= 64:
            raise InvalidRecord(f"a cursor name must be 1 to 64 characters, got {name!r}")
        check_block(block)
        retry_on_conflict(lambda: self._save(name, block))

    def _save(self, name: str, block: int) -> None:
        now = self._tx.clock()
        with self._tx.write() as session:
            row = session.get(ChainCursorRow, name, with_for_update=True)
            if row is None:
                session.add(ChainCursorRow(name=name, block=block, updated_at=now))
            else:
                row.block = block
                row.updated_at = now
