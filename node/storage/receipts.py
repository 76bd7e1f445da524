"""Signed result receipts, one per (job, provider). A second, different receipt from the same
provider for the same job is kept out and reported: it is evidence of equivocation.

A receipt is kept under the job it was attached to; the id it signs may differ (a client's voucher
job is signed under its id in the voucher namespace) and is kept beside it."""

from __future__ import annotations

import dataclasses

from sqlalchemy import Connection, bindparam, insert, select

from node.domain.records import StoredReceipt
from node.storage.errors import ConflictingReceipt, UnknownJob
from node.storage.models import RECEIPTS, AnyRow, JobRow, ReceiptRow
from node.storage.session import Transactions, retry_on_conflict
from node.storage.validation import check_hash, check_signature, checked_address
from node.types import Address, Hash32, ResultReceipt


class ReceiptRepository:
    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    def save(self, receipt: ResultReceipt, signature: bytes) -> StoredReceipt:
        """Store a receipt for a stored job; storing the same receipt again returns the first."""
        receipt = checked_receipt(receipt, signature)
        return retry_on_conflict(lambda: self._save(receipt, signature))

    def _save(self, receipt: ResultReceipt, signature: bytes) -> StoredReceipt:
        with self._tx.write() as session:
            if session.get(JobRow, receipt.job_id) is None:
                raise UnknownJob(
                    f"no job {receipt.job_id.hex()} is stored for this receipt",
                    hint="store the job before its receipt",
                )
            return save_receipt(session.connection(), receipt, signature, self._tx.clock())

    def get(self, job_id: Hash32, provider: Address) -> StoredReceipt | None:
        check_hash("job id", job_id)
        provider = checked_address("provider", provider)
        with self._tx.read() as session:
            row = session.get(ReceiptRow, (job_id, provider))
            return None if row is None else _stored(row)

    def for_job(self, job_id: Hash32) -> tuple[StoredReceipt, ...]:
        """Every receipt stored for a job (one per provider that returned a result), oldest first."""
        check_hash("job id", job_id)
        with self._tx.read() as session:
            rows = session.scalars(
                select(ReceiptRow).where(ReceiptRow.job_id == job_id).order_by(ReceiptRow.stored_at)
            ).all()
            return tuple(_stored(r) for r in rows)


_SELECT_RECEIPT = select(RECEIPTS).where(
    RECEIPTS.c.job_id == bindparam("job_id"), RECEIPTS.c.provider == bindparam("provider")
)
_INSERT_RECEIPT = insert(RECEIPTS)


def save_receipt(
    connection: Connection,
    receipt: ResultReceipt,
    signature: bytes,
    now: float,
    *,
    job_id: Hash32 | None = None,
) -> StoredReceipt:
    """Store a checked receipt in the caller's transaction, under `job_id` (the job must exist;
    by default the id the receipt signs)."""
    job_id = receipt.job_id if job_id is None else job_id
    existing = connection.execute(
        _SELECT_RECEIPT, {"job_id": job_id, "provider": receipt.provider}
    ).one_or_none()
    if existing is not None:
        stored = _stored(existing)
        if stored.receipt == receipt and stored.signature == signature:
            return stored
        raise ConflictingReceipt(
            f"provider {receipt.provider} already signed a different receipt for job {receipt.job_id.hex()}",
            hint="both receipts are evidence of equivocation; the first one is kept",
        )
    connection.execute(
        _INSERT_RECEIPT,
        {
            "job_id": job_id,
            "signed_job_id": None if job_id == receipt.job_id else receipt.job_id,
            "provider": receipt.provider,
            "model_id": receipt.model_id,
            "input_hash": receipt.input_hash,
            "output_hash": receipt.output_hash,
            "profile_hash": receipt.profile_hash,
            "signature": signature,
            "stored_at": now,
        },
    )
    return StoredReceipt(receipt=receipt, signature=signature, stored_at=now)


def checked_receipt(receipt: ResultReceipt, signature: bytes) -> ResultReceipt:
    for name in ("job_id", "model_id", "input_hash", "output_hash", "profile_hash"):
        check_hash(name, getattr(receipt, name))
    check_signature(signature)
    return dataclasses.replace(receipt, provider=checked_address("provider", receipt.provider))


def _stored(row: ReceiptRow | AnyRow) -> StoredReceipt:
    receipt = ResultReceipt(
        job_id=Hash32(row.job_id if row.signed_job_id is None else row.signed_job_id),
        model_id=Hash32(row.model_id),
        input_hash=Hash32(row.input_hash),
        output_hash=Hash32(row.output_hash),
        profile_hash=Hash32(row.profile_hash),
        provider=Address(row.provider),
    )
    return StoredReceipt(receipt=receipt, signature=row.signature, stored_at=row.stored_at)
