"""Strangers who cheat, against real nodes on the embedded chain: a client that spends one deposit
on two providers, and a provider that signs one result on chain and hands the client another.
Each test is the attacker's steps; each attacker loses."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from e2e_support import PRICE_WEI, mlp_input, running_devnet, serve_cheaply

from node.chain.eip712 import sign_receipt, sign_voucher
from node.chain.job_logs import ChainOutcome, chain_outcome, find_terms
from node.chain.keys import NodeKey
from node.chain.market import JobStatus as ChainJobStatus
from node.config import P2PSettings
from node.discovery.dht_records import dht_validators
from node.domain.service import JobSpec
from node.domain.state import AttemptOutcome, JobState, PaymentPath
from node.p2p.host import P2PHost
from node.p2p.job_messages import (
    JobAccepted,
    JobRejected,
    JobRequest,
    JobResponse,
    JobResult,
    OnchainPayment,
    VoucherPayment,
)
from node.p2p.job_protocol import JobClient
from node.settlement.terms import escrow_terms
from node.types import Hash32, ResultReceipt, Voucher, sha256

pytestmark = [pytest.mark.integration]


async def test_cannot_spend_one_deposit_on_two_providers(tmp_path: Path) -> None:
    """The attacker deposits enough for one job, reserves it for one provider, and signs a voucher
    for it to each of two providers, hoping both run the job before either redeems. Only the
    provider the money is reserved for takes it; the other refuses before running anything."""
    async with running_devnet(tmp_path, providers=2) as devnet, AsyncExitStack() as stack:
        attacker = devnet.keys[6]
        market = devnet.market
        first, second = devnet.providers
        await market.reserve(first.key.address, PRICE_WEI, deposit=PRICE_WEI, sender=attacker.account)
        host = await stack.enter_async_context(
            P2PHost.start(attacker, P2PSettings(), dht_validators=dht_validators())
        )
        for provider in (first, second):
            await host.connect(provider.host.addrs[0])
        jobs = JobClient(host)

        def request_for(provider: NodeKey) -> JobRequest:
            voucher = Voucher(attacker.address, provider.address, PRICE_WEI)
            signature = sign_voucher(attacker.private_key, market.domain(), voucher)
            return JobRequest(
                job_id=Hash32(secrets.token_bytes(32)),
                model_id=Hash32(bytes.fromhex(devnet.model_id)),
                input=mlp_input(5),
                payment=VoucherPayment(attacker.address, provider.address, PRICE_WEI, signature),
                max_price_wei=PRICE_WEI,
                deadline_ms=int((time.time() + 60) * 1000),
            )

        served = await jobs.request_job(first.host.peer_id, request_for(first.key))
        refused = await jobs.request_job(second.host.peer_id, request_for(second.key))

        assert isinstance(served, JobResult)
        assert isinstance(refused, JobRejected)
        assert refused.code == "insufficient_deposit"
        assert "reserve for this provider" in refused.reason
        assert second.provider is not None
        assert second.provider.runner.served == 0
        # The reserve pays the provider that ran the job, in full, whenever it redeems.
        assert first.provider is not None
        await first.settlement.settle()
        assert await market.paid(attacker.address, first.key.address) == PRICE_WEI


def equivocating(key: NodeKey, devnet: object) -> object:
    """A provider that claims the escrowed job, puts one result on chain, and hands the client a
    different one, signed too (both would be paid for, were nobody checking)."""
    market = devnet.market  # type: ignore[attr-defined]

    async def handle(peer: str, request: JobRequest) -> AsyncIterator[JobResponse]:
        payment = request.payment
        if not isinstance(payment, OnchainPayment):
            yield JobRejected("escrow_only", "this provider takes escrowed jobs only")
            return
        yield JobAccepted()
        terms = await find_terms(market, payment.job_id)
        assert terms is not None
        assert isinstance(request.input, bytes)
        await market.claim_job(payment.job_id, sender=key.account)

        def receipt(output: bytes) -> ResultReceipt:
            return ResultReceipt(
                job_id=payment.job_id,
                model_id=request.model_id,
                input_hash=sha256(request.input),  # type: ignore[arg-type]
                output_hash=sha256(output),
                profile_hash=Hash32(b"\x00" * 32),
                provider=key.address,
            )

        on_chain = receipt(b"the output put on chain")
        await market.submit_result(
            terms, on_chain, sign_receipt(key.private_key, market.domain(), on_chain), sender=key.account
        )
        handed = receipt(b"the output handed over")
        signature = sign_receipt(key.private_key, market.domain(), handed)
        yield JobResult(handed, signature, b"the output handed over")

    return handle


async def test_cannot_be_paid_for_a_result_other_than_the_one_handed_over(tmp_path: Path) -> None:
    """The attacker (the cheapest provider, so tried first) equivocates on an escrowed job. The
    client reads back the result on chain, proves the two signed receipts on chain, which slashes
    the attacker's whole stake and disputes the job, takes its escrow back, and has the job done
    by an honest provider."""
    async with running_devnet(tmp_path, providers=1) as devnet, AsyncExitStack() as stack:
        assert devnet.client is not None
        client = devnet.client
        market, registry = devnet.market, devnet.deployment.registry
        attacker = devnet.keys[5]
        await serve_cheaply(devnet, stack, attacker, equivocating(attacker, devnet))  # type: ignore[arg-type]
        await client.discovery.directory.wait_for(lambda d: len(d) >= 2, timeout_s=60)
        client.client_jobs.pipeline.matchmaker.exploration = 0.0  # the cheapest is tried first
        staked = (await registry.provider(attacker.address)).stake
        assert staked > 0

        jobs = client.services.jobs
        view = await jobs.submit(
            JobSpec(
                model_id=devnet.model_id,
                input=mlp_input(6),
                payment=PaymentPath.ESCROW,
                max_price_wei=PRICE_WEI,
                timeout_s=60,
            )
        )
        async for update in jobs.watch(view.job_id):
            if update.terminal or update.state is JobState.VERIFIED:
                break
        final = await jobs.get(view.job_id)

        assert final.state is JobState.VERIFIED, final.error
        cheated, honest = final.attempts
        assert (cheated.provider, cheated.outcome) == (attacker.address, AttemptOutcome.BAD_RESULT)
        assert honest.provider == devnet.providers[0].key.address
        assert final.receipt is not None
        assert final.receipt.receipt.provider == honest.provider
        # The attacker's stake is gone and its escrowed job disputed: it is never paid for it.
        record = await client.job_store.get(Hash32(bytes.fromhex(view.job_id)))
        cheated_id = escrow_terms(client.key.address, record, 0).job_id
        assert await market.equivocation_proven(cheated_id, attacker.address)
        assert (await registry.provider(attacker.address)).stake == 0
        # Disputed, so its escrow comes back at once (the client's background round may be first).
        status = (await market.job(cheated_id)).status
        assert status in (ChainJobStatus.DISPUTED, ChainJobStatus.NONE)
        await client.settlement.client.tick()
        assert (await market.job(cheated_id)).status is ChainJobStatus.NONE
        assert await chain_outcome(market, cheated_id) is ChainOutcome.REFUNDED
