"""Stored jobs turned into the façade's views."""

from __future__ import annotations

from node.domain.service import AttemptView, JobView, ReceiptView
from node.domain.state import ClientState, JobState, PaymentPath
from node.settlement.terms import receipt_job_id
from node.storage import JobRecord, StoredReceipt
from node.types import Address

_HAS_RESULT = frozenset({ClientState.RESULT, ClientState.VERIFIED, ClientState.SETTLED})


def job_view(
    record: JobRecord,
    *,
    client: Address,
    receipt: StoredReceipt | None = None,
    verified: bool = False,
    output: bytes | None = None,
    price_wei: int | None = None,
) -> JobView:
    status = record.status
    current = status.attempts[-1] if status.attempts else None
    onchain = None
    if status.payment is PaymentPath.ESCROW and status.attempts and status.role.value == "client":
        onchain = receipt_job_id(client, record, len(status.attempts) - 1).hex()
    return JobView(
        job_id=record.job_id.hex(),
        role=status.role,
        model_id=record.model_id.hex(),
        payment=status.payment,
        state=JobState(status.state),
        terminal=status.terminal,
        attempts=tuple(AttemptView(a.provider, a.paid, a.outcome) for a in status.attempts),
        provider=None if current is None else current.provider,
        price_wei=record.price_wei if price_wei is None else price_wei,
        output=output,
        receipt=None if receipt is None else ReceiptView(receipt.receipt, receipt.signature, verified),
        error=status.reason,
        created_at=record.created_at,
        updated_at=record.updated_at,
        onchain_job_id=onchain,
        output_size=None if output is None else len(output),
    )


def has_result(record: JobRecord) -> bool:
    return record.state in _HAS_RESULT
