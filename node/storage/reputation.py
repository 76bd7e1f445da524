"""Providers' reputation as this client learnt it: jobs, spot checks, fraud records, exclusion.

The client keeps the current values in memory (`node.client.reputation`) and writes each change
through here, so an exclusion outlives a restart."""

from __future__ import annotations

from sqlalchemy import select

from node.domain.records import ProviderReputation
from node.storage.errors import InvalidRecord
from node.storage.models import ReputationRow
from node.storage.session import Transactions, retry_on_conflict
from node.storage.validation import checked_address
from node.types import Address

# A reason is a sentence for `node peers`, not a document.
MAX_REASON_CHARS = 500
_COUNTS = ("jobs_seen", "checks_passed", "checks_failed", "fraud_records_seen", "rechecks_due")


class ReputationRepository:
    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    def save(self, reputation: ProviderReputation) -> ProviderReputation:
        """Store `reputation` as the provider's current one (replacing any before it)."""
        address = checked_address("address", reputation.address)
        for name in _COUNTS:
            value = getattr(reputation, name)
            if not isinstance(value, int) or value < 0:
                raise InvalidRecord(f"{name} must be a non-negative integer, got {value!r}")
        if len(reputation.excluded_reason) > MAX_REASON_CHARS:
            raise InvalidRecord(f"an exclusion reason is at most {MAX_REASON_CHARS} characters")
        return retry_on_conflict(lambda: self._save(address, reputation))

    def _save(self, address: Address, reputation: ProviderReputation) -> ProviderReputation:
        with self._tx.write() as session:
            row = session.get(ReputationRow, address, with_for_update=True)
            if row is None:
                row = ReputationRow(address=address)
                session.add(row)
            for name in (*_COUNTS, "excluded", "excluded_reason"):
                setattr(row, name, getattr(reputation, name))
            row.updated_at = self._tx.clock()
            return _reputation(row)

    def get(self, address: Address) -> ProviderReputation | None:
        address = checked_address("address", address)
        with self._tx.read() as session:
            row = session.get(ReputationRow, address)
            return None if row is None else _reputation(row)

    def all(self) -> tuple[ProviderReputation, ...]:
        with self._tx.read() as session:
            rows = session.scalars(select(ReputationRow).order_by(ReputationRow.address))
            return tuple(_reputation(r) for r in rows)


def _reputation(row: ReputationRow) -> ProviderReputation:
    return ProviderReputation(
        address=Address(row.address),
        jobs_seen=row.jobs_seen,
        checks_passed=row.checks_passed,
        checks_failed=row.checks_failed,
        fraud_records_seen=row.fraud_records_seen,
        rechecks_due=row.rechecks_due,
        excluded=row.excluded,
        excluded_reason=row.excluded_reason,
    )
