"""Delivering an escrowed job's result on-chain: the result counts as delivered only once the
chain holds it.

A submission the chain refuses (a revert) is final, unless the chain already holds the result (an
earlier try landed though its answer was lost). A chain that does not answer is tried again, with
growing waits, until the job's on-chain deadline; past it the escrow is the requester's to refund.
While the chain is away its clock cannot be read, so the local clock stands in for it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from node.chain.market import JobMarket, JobTerms
from node.chain.market import JobStatus as ChainJobStatus
from node.errors import ChainError, TransactionReverted
from node.logging import get_logger
from node.types import ResultReceipt

log = get_logger(__name__)

# Waits between tries while the chain does not answer; the last one repeats until the deadline.
SUBMIT_RETRY_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)


@dataclass(frozen=True, slots=True)
class NotSubmitted:
    """The chain never took the result; `reason` says why, for the client and the job's record."""

    reason: str


async def submit_result(
    market: JobMarket,
    terms: JobTerms,
    receipt: ResultReceipt,
    signature: bytes,
    *,
    sender: LocalAccount,
    deadline: float,
    output: bytes = b"",
) -> NotSubmitted | None:
    """Put the signed result on-chain; None once the chain holds it."""
    waits = iter(SUBMIT_RETRY_S)
    tries = 0
    while True:
        tries += 1
        try:
            await market.submit_result(terms, receipt, signature, output=output, sender=sender)
            return None
        except TransactionReverted as exc:
            if await _holds_result(market, terms):
                return None
            return NotSubmitted(f"the chain refused the result: {exc}")
        except ChainError as exc:
            delay = next(waits, SUBMIT_RETRY_S[-1])
            if time.time() + delay >= deadline:
                return NotSubmitted(f"the chain did not take the result before the job's deadline: {exc}")
            log.warning("result_submission_retry", job_id=terms.job_id.hex(), attempt=tries, error=str(exc))
            await asyncio.sleep(delay)


async def _holds_result(market: JobMarket, terms: JobTerms) -> bool:
    try:
        onchain = await market.job(terms.job_id)
    except ChainError:
        return False
    return onchain.status is ChainJobStatus.SUBMITTED
