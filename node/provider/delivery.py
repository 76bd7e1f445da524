"""Delivering an escrowed job's result on-chain: the result counts as delivered only once the
chain holds it.

`serve_escrowed` is the whole of an escrowed job, the same for a client's job sent over the
overlay, a dApp's job and a job resumed after a restart: run it within the room its on-chain
deadline leaves, keep the output (a client that lost the stream asks for it again), claim it if it
is not claimed yet, put the result on chain, record it delivered. It runs to the end whoever waits
on it: an unfinished claim costs the provider stake. A job only this provider may claim (a
client's, which names it) is run before it is claimed: an input the model refuses, or a client
that takes its escrow back meanwhile, then costs compute, never stake.

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
from node.errors import ChainError, ExecutorError, TransactionReverted
from node.jobstore.blobs import JobBlobs
from node.logging import get_logger
from node.provider.runner import JobRunner, SignedResult
from node.storage import JobRecord
from node.types import Hash32, ResultReceipt

log = get_logger(__name__)

# Waits between tries while the chain does not answer; the last one repeats until the deadline.
SUBMIT_RETRY_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
# Room kept before an escrowed job's on-chain deadline to put the result on chain (with retries):
# the run is cut short to leave it, and a job due sooner than this plus `MIN_RUN_S` is not taken.
SUBMIT_ROOM_S = 60.0
MIN_RUN_S = 1.0


@dataclass(frozen=True, slots=True)
class Escrowed:
    """A claimed escrowed job: its terms, its on-chain deadline on this node's clock (the chain's
    clock may run apart from it, as on a development chain whose time was moved), and whether its
    result must carry the output."""

    terms: JobTerms
    deadline: float
    output_on_chain: bool = False
    claimed: bool = True

    @staticmethod
    def due_in(
        terms: JobTerms, room_s: float, *, output_on_chain: bool = False, claimed: bool = True
    ) -> Escrowed:
        return Escrowed(terms, time.time() + room_s, output_on_chain, claimed)


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


async def _claim(market: JobMarket, job_id: Hash32, sender: LocalAccount) -> str | None:
    """Claim the job; None once this provider holds it (a claim whose answer was lost counts)."""
    try:
        await market.claim_job(job_id, sender=sender)
        return None
    except ChainError as exc:
        try:
            onchain = await market.job(job_id)
        except ChainError:
            return f"claiming the escrowed job failed: {exc}"
        held = onchain.provider is not None and onchain.provider.lower() == sender.address.lower()
        if held and onchain.status is ChainJobStatus.CLAIMED:
            return None
        return f"the escrowed job could not be claimed (it is {onchain.status.name}): {exc}"


async def _holds_result(market: JobMarket, terms: JobTerms) -> bool:
    try:
        onchain = await market.job(terms.job_id)
    except ChainError:
        return False
    return onchain.status is ChainJobStatus.SUBMITTED


@dataclass(frozen=True, slots=True)
class Served:
    """An escrowed job's end: its signed result (on chain), or why there is none."""

    result: SignedResult | None
    failure: str | None = None
    code: str = "execution"


async def serve_escrowed(
    runner: JobRunner,
    market: JobMarket,
    blobs: JobBlobs,
    record: JobRecord,
    job_input: bytes,
    escrow: Escrowed,
    *,
    signed: SignedResult | None = None,
) -> Served:
    """Run an escrowed job (unless `signed` holds its result already), claim it unless
    `escrow.claimed`, and put the result on chain. The run gets the room the on-chain deadline
    leaves, whatever the client said: once claimed, only the chain's deadline counts."""
    job_id = escrow.terms.job_id
    if signed is None:
        room = escrow.deadline - SUBMIT_ROOM_S - time.time()
        try:
            signed = await runner.run(record, job_input, timeout_s=max(0.1, room))
        except ExecutorError as exc:
            return Served(None, str(exc))
        # Kept until the job is paid: a client whose stream broke asks for the result again.
        await blobs.put(signed.output)
    if not escrow.claimed:
        lost = await _claim(market, job_id, runner.key.account)
        if lost is not None:
            log.warning("escrow_claim_lost", job_id=job_id.hex(), reason=lost)
            await runner.undelivered(job_id, lost)
            return Served(None, lost, "claim_failed")
    refused = await submit_result(
        market,
        escrow.terms,
        signed.receipt,
        signed.signature,
        output=signed.output if escrow.output_on_chain else b"",
        sender=runner.key.account,
        deadline=escrow.deadline,
    )
    if refused is not None:
        log.error("result_submission_failed", job_id=job_id.hex(), error=refused.reason)
        await runner.undelivered(job_id, refused.reason)
        return Served(None, refused.reason, "submission_failed")
    await runner.delivered(job_id)
    log.info("escrowed_result_submitted", job_id=job_id.hex())
    return Served(signed)
