"""An escrow-paid attempt's on-chain terms, which the paying client and its settlement both rebuild.

Each attempt is its own on-chain job. Its salt is derived from the client's job id and the
attempt's number, so its terms (and id) can be rebuilt from the database alone — after a restart
a second `requestJob` for the same attempt reverts with `JobExists` instead of paying twice.
"""

from __future__ import annotations

from node.chain.market import JobTerms, voucher_job_id
from node.chain.registry import ZERO_ADDRESS
from node.domain.records import JobRecord
from node.domain.state import PaymentPath
from node.types import Address, Hash32

# Attempts per job are numbered 0..255 inside the salt.
MAX_ATTEMPTS = 256


def escrow_salt(job_id: Hash32, attempt: int) -> int:
    return (int.from_bytes(job_id[:24], "big") << 8) | attempt


def escrow_terms(client: Address, record: JobRecord, attempt: int) -> JobTerms:
    """The on-chain terms of `attempt` (0-based) of a client's escrow-paid job."""
    return JobTerms(
        requester=client,
        model_id=record.model_id,
        input_hash=record.input_hash,
        callback=Address(ZERO_ADDRESS),
        salt=escrow_salt(record.job_id, attempt),
    )


def receipt_job_id(client: Address, record: JobRecord, attempt: int) -> Hash32:
    """The job id the provider's receipt names: the attempt's on-chain id for escrow; for a voucher
    job, the client's id in the voucher namespace (`voucher_job_id`), the same for every attempt."""
    if record.status.payment is PaymentPath.ESCROW:
        return escrow_terms(client, record, attempt).job_id
    return voucher_job_id(client, record.job_id)
