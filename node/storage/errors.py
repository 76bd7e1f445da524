"""Storage faults, each under `StorageError` so the API maps them in one place."""

from __future__ import annotations

from node.errors import StorageError


class DatabaseUnavailable(StorageError):
    """The database could not be opened, reached or migrated."""


class RecordNotFound(StorageError):
    """A record the caller named does not exist."""


class UnknownJob(RecordNotFound):
    """No job with this id is stored."""


class UnknownProvider(RecordNotFound):
    """No provider with this address is known."""


class DuplicateRecord(StorageError):
    """A record with this key is already stored, with different contents."""


class InvalidRecord(StorageError):
    """A value cannot be stored as given (wrong length, negative amount, …)."""


class StaleJobVersion(StorageError):
    """Someone else moved the job since the caller read it; re-read and decide again."""


class StaleVoucher(StorageError):
    """A voucher does not raise the cumulative amount already stored for its client and provider."""


class ConflictingReceipt(DuplicateRecord):
    """A provider signed a second, different receipt for the same job (evidence of equivocation)."""
