"""Chain look-ups on a market job that both sides share: a job's terms, the result put on chain
for it (with its signature), and how it ended."""

from __future__ import annotations

import enum
from typing import Any

from eth_utils.address import to_checksum_address
from hexbytes import HexBytes

from node.chain.market import JobMarket, JobTerms, job_requested_from_log
from node.types import Address, Hash32, ResultReceipt


class ChainOutcome(enum.StrEnum):
    FINALIZED = "finalized"
    REFUNDED = "refunded"


async def _logs_for(market: JobMarket, event: str, job_id: Hash32) -> list[Any]:
    topic = market.contract.events[event]().topic
    return await market.client.get_logs(
        {
            "address": to_checksum_address(market.address),
            "fromBlock": 0,
            "toBlock": "latest",
            "topics": [topic, HexBytes(job_id).to_0x_hex()],
        }
    )


async def find_terms(market: JobMarket, job_id: Hash32) -> JobTerms | None:
    """The terms of an on-chain job, from its `JobRequested` event (jobId is an indexed topic)."""
    requested = market.contract.events.JobRequested()
    for entry in await _logs_for(market, "JobRequested", job_id):
        return job_requested_from_log(requested.process_log(entry)).terms
    return None


async def submitted_receipt(
    market: JobMarket, terms: JobTerms, provider: Address
) -> tuple[ResultReceipt, bytes] | None:
    """The signed receipt put on chain for the job with `terms` (read back from the transaction
    that submitted it), or None while there is none. A result relayed through another contract
    cannot be read back this way and also gives None."""
    submitted = market.contract.events.ResultSubmitted()
    for entry in await _logs_for(market, "ResultSubmitted", terms.job_id):
        args = submitted.process_log(entry)["args"]
        tx = await market.client.transaction(entry["transactionHash"])
        try:
            function, params = market.contract.decode_function_input(tx["input"])
        except ValueError:
            return None
        if function.fn_name != "submitResult":
            return None
        receipt = ResultReceipt(
            job_id=terms.job_id,
            model_id=terms.model_id,
            input_hash=terms.input_hash,
            output_hash=Hash32(bytes(args["outputHash"])),
            profile_hash=Hash32(bytes(args["profileHash"])),
            provider=provider,
        )
        return receipt, bytes(params["signature"])
    return None


async def chain_outcome(market: JobMarket, job_id: Hash32) -> ChainOutcome | None:
    """How an on-chain job ended, or None while it is still live (or was never requested)."""
    if await _logs_for(market, "JobFinalized", job_id):
        return ChainOutcome.FINALIZED
    if await _logs_for(market, "JobRefunded", job_id):
        return ChainOutcome.REFUNDED
    return None
