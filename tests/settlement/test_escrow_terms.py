"""Escrow terms: a restarted node rebuilds each attempt's on-chain job to the same id."""

from __future__ import annotations

from node.chain.market import voucher_job_id
from node.domain.state import JobStatus, PaymentPath, Role
from node.settlement.terms import escrow_salt, escrow_terms, receipt_job_id
from node.storage import JobRecord
from node.types import Address, Hash32


def record(payment: PaymentPath, job_id: bytes = b"\x07" * 32) -> JobRecord:
    return JobRecord(
        job_id=Hash32(job_id),
        model_id=Hash32(b"\x01" * 32),
        input_hash=Hash32(b"\x02" * 32),
        price_wei=10**15,
        client=None,
        deadline=None,
        status=JobStatus.initial(Role.CLIENT, payment),
        version=1,
        created_at=0.0,
        updated_at=0.0,
    )


def test_can_rebuild_the_same_escrow_id_per_attempt() -> None:
    client = Address("0xE57bFE9F44b819898F47BF37E5AF72a0783e1141")
    job = record(PaymentPath.ESCROW)
    ids = {escrow_terms(client, job, attempt).job_id for attempt in range(3)}
    assert len(ids) == 3
    assert escrow_terms(client, job, 1).job_id == escrow_terms(client, job, 1).job_id
    assert escrow_salt(job.job_id, 1) != escrow_salt(Hash32(b"\x08" * 32), 1)
    assert receipt_job_id(client, job, 0) == escrow_terms(client, job, 0).job_id
    # A voucher job's receipt names the job in the voucher namespace, bound to the client.
    voucher_job = record(PaymentPath.VOUCHER)
    assert receipt_job_id(client, voucher_job, 0) == voucher_job_id(client, voucher_job.job_id)
    assert receipt_job_id(client, voucher_job, 0) == receipt_job_id(client, voucher_job, 2)
    assert receipt_job_id(client, voucher_job, 0) != voucher_job.job_id
