"""The marketplace end to end: 3 providers and a client as real nodes on one embedded chain.

20 jobs over both payment paths and a dApp's consumer contract; every receipt verifies, every
provider is paid exactly what it earned, and the JobMarket holds exactly what it still owes.
Then bad input: each gets a clear error, and nothing is lost.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from e2e_support import CHALLENGE_WINDOW_S, PRICE_WEI, Devnet, mlp_input, running_devnet

from node.app import Node
from node.chain.artifacts import load_artifact
from node.chain.eip712 import sign_voucher, verify_receipt
from node.chain.job_logs import ChainOutcome, chain_outcome
from node.chain.market import JobStatus as ChainJobStatus
from node.chain.registry import events_in
from node.domain.service import JobSpec, JobView
from node.domain.state import JobState, PaymentPath, Role
from node.errors import ExecutorError, JobError, SettlementError, TransactionReverted
from node.p2p.job_messages import JobRejected, JobRequest, VoucherPayment
from node.p2p.job_protocol import JobClient
from node.types import Address, Hash32, Voucher, sha256

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

VOUCHER_JOBS = 8
ESCROW_JOBS = 8
DAPP_JOBS = 4


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def devnet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Devnet]:
    async with running_devnet(tmp_path_factory.mktemp("devnet"), providers=3) as net:
        yield net


def client_of(devnet: Devnet) -> Node:
    assert devnet.client is not None
    return devnet.client


async def until(jobs: object, job_id: str, states: set[JobState]) -> JobView:
    async for view in jobs.watch(job_id):  # type: ignore[attr-defined]
        if view.state in states:
            return view
    raise AssertionError(f"job {job_id} ended without reaching {states}")


async def dapp_job(devnet: Devnet, consumer: object, seed: int) -> Hash32:
    chain = devnet.chain
    now = (await chain.w3.eth.get_block("latest"))["timestamp"]
    fn = consumer.functions.ask(mlp_input(seed), now + 3600)  # type: ignore[attr-defined]
    receipt = await chain.transact(fn, sender=devnet.keys[6].account, value=PRICE_WEI)
    (asked,) = events_in(consumer.events.Asked(), receipt)  # type: ignore[attr-defined]
    return Hash32(bytes(asked["args"]["jobId"]))


async def finalized_to(devnet: Devnet, provider: Address) -> int:
    market = devnet.market
    logs = await devnet.chain.get_logs(
        {
            "address": market.address,
            "fromBlock": 0,
            "toBlock": "latest",
            "topics": [
                market.contract.events.JobFinalized().topic,
                None,
                "0x" + provider[2:].lower().rjust(64, "0"),
            ],
        }
    )
    return sum(int(market.contract.events.JobFinalized().process_log(e)["args"]["price"]) for e in logs)


async def until_submitted(devnet: Devnet, job_id: Hash32) -> None:
    # The consumer contract's job lives on the chain only: wait for its result there.
    async with asyncio.timeout(60):
        while (await devnet.market.job(job_id)).status is not ChainJobStatus.SUBMITTED:  # noqa: ASYNC110
            await asyncio.sleep(0.1)


async def test_can_run_twenty_jobs_and_pay_each_provider_exactly(devnet: Devnet) -> None:
    client = client_of(devnet)
    jobs = client.services.jobs
    chain = devnet.chain
    model = bytes.fromhex(devnet.model_id)
    consumer_address = await chain.deploy(
        load_artifact("ExampleConsumer"), devnet.market.address, model, sender=devnet.keys[6].account
    )
    consumer = chain.contract(load_artifact("ExampleConsumer"), consumer_address)
    market_before = await chain.balance(devnet.market.address)

    specs = [JobSpec(model_id=devnet.model_id, input=mlp_input(i)) for i in range(VOUCHER_JOBS)] + [
        JobSpec(model_id=devnet.model_id, input=mlp_input(100 + i), payment=PaymentPath.ESCROW)
        for i in range(ESCROW_JOBS)
    ]
    submitted = await asyncio.gather(*(jobs.submit(s) for s in specs))
    dapp_ids = await asyncio.gather(*(dapp_job(devnet, consumer, 200 + i) for i in range(DAPP_JOBS)))
    finished = await asyncio.gather(
        *(until(jobs, v.job_id, {JobState.SETTLED, JobState.VERIFIED, JobState.FAILED}) for v in submitted)
    )
    await asyncio.gather(*(until_submitted(devnet, j) for j in dapp_ids))

    domain = devnet.market.domain()
    earned: Counter[Address] = Counter()
    for view, spec in zip(finished, specs, strict=True):
        assert view.state in (JobState.SETTLED, JobState.VERIFIED), view.error
        assert view.receipt is not None
        assert view.output is not None
        assert view.provider is not None
        assert verify_receipt(domain, view.receipt.receipt, view.receipt.signature, view.provider)
        assert view.receipt.receipt.output_hash == sha256(view.output)
        assert view.receipt.receipt.input_hash == sha256(spec.input)
        earned[view.provider] += PRICE_WEI
    dapp_earned: Counter[Address] = Counter()
    for job_id in dapp_ids:
        onchain = await devnet.market.job(job_id)
        assert onchain.provider is not None
        dapp_earned[onchain.provider] += PRICE_WEI
        answer = await chain.call(consumer.functions.answers(job_id))
        assert len(answer) > 0

    # The challenge window passes; every provider settles; the client settles its escrow jobs.
    await chain.increase_time(CHALLENGE_WINDOW_S + 1)
    paid: Counter[Address] = Counter()
    for provider in devnet.providers:
        assert provider.services.provider is not None
        report = await provider.services.provider.settle()
        assert report.vouchers_redeemed <= 1
    for provider in devnet.providers:
        # Background settlement may have finalized some jobs before settle(): count on the chain.
        me = provider.key.address
        paid[me] = await devnet.market.paid(client.key.address, me) + await finalized_to(devnet, me)
    await client.settlement.tick()

    for provider in devnet.providers:
        me = provider.key.address
        assert paid[me] == earned[me] + dapp_earned[me]
        voucher_jobs = sum(
            1
            for v, s in zip(finished, specs, strict=True)
            if v.provider == me and s.payment is PaymentPath.VOUCHER
        )
        assert await devnet.market.paid(client.key.address, me) == voucher_jobs * PRICE_WEI
        assert await devnet.market.withdrawable(me) == 0
        earnings = await provider.services.provider.earnings()
        assert earnings.unredeemed_voucher_wei == 0
        assert earnings.pending_onchain_wei == 0
    assert sum(paid.values()) == (VOUCHER_JOBS + ESCROW_JOBS + DAPP_JOBS) * PRICE_WEI

    for view in submitted:
        assert (await jobs.get(view.job_id)).state is JobState.SETTLED
    # What the market still holds is exactly the client's unspent deposit, reserved or not.
    unspent = (await devnet.market.client_account(client.key.address)).balance
    for provider in devnet.providers:
        unspent += (await devnet.market.reserve_of(client.key.address, provider.key.address)).amount
    assert unspent == 10**17 - VOUCHER_JOBS * PRICE_WEI
    market_after = await chain.balance(devnet.market.address)
    assert market_after == market_before - VOUCHER_JOBS * PRICE_WEI
    assert market_after == unspent


async def test_cannot_submit_an_unknown_model(devnet: Devnet) -> None:
    jobs = client_of(devnet).services.jobs
    before = await jobs.list()
    with pytest.raises(ExecutorError, match="no live provider offers model"):
        await jobs.submit(JobSpec(model_id="ab" * 32, input=mlp_input(1)))
    with pytest.raises(ExecutorError, match="not a sha256"):
        await jobs.submit(JobSpec(model_id="resnet", input=mlp_input(1)))
    assert len(await jobs.list()) == len(before)


async def test_cannot_submit_an_oversize_input(devnet: Devnet) -> None:
    client = client_of(devnet)
    jobs = client.services.jobs
    before = await jobs.list()
    huge = b"\x00" * (client.settings.executor.max_input_bytes + 1)
    with pytest.raises(ExecutorError, match="at most"):
        await jobs.submit(JobSpec(model_id=devnet.model_id, input=huge))
    assert len(await jobs.list()) == len(before)


async def test_cannot_cancel_a_finished_job(devnet: Devnet) -> None:
    jobs = client_of(devnet).services.jobs
    view = await jobs.submit(JobSpec(model_id=devnet.model_id, input=mlp_input(7)))
    done = await until(jobs, view.job_id, {JobState.SETTLED})
    with pytest.raises(JobError, match="already settled"):
        await jobs.cancel(view.job_id)
    after = await jobs.get(view.job_id)
    assert after.state is JobState.SETTLED
    assert after.output == done.output
    with pytest.raises(JobError, match="no job"):
        await jobs.get("00" * 32)


async def test_cannot_pay_with_a_bad_voucher(devnet: Devnet) -> None:
    """A voucher signed by someone else than the client is turned away before anything runs."""
    client = client_of(devnet)
    provider = devnet.providers[0]
    forger = devnet.keys[7]
    voucher = Voucher(client.key.address, provider.key.address, 10**15)
    forged = sign_voucher(forger.private_key, devnet.market.domain(), voucher)
    request = JobRequest(
        job_id=Hash32(b"\x42" * 32),
        model_id=Hash32(bytes.fromhex(devnet.model_id)),
        input=mlp_input(3),
        payment=VoucherPayment(voucher.client, voucher.provider, voucher.cumulative_amount, forged),
        max_price_wei=PRICE_WEI,
        deadline_ms=2**42,
    )
    outcome = await JobClient(client.host).request_job(provider.host.peer_id, request)
    assert isinstance(outcome, JobRejected)
    assert outcome.code == "bad_voucher"
    assert "signed by" in outcome.reason
    assert await provider.db.run(provider.db.jobs.find, request.job_id) is None
    stored = await provider.db.run(provider.db.vouchers.get, client.key.address, provider.key.address)
    assert stored is None or stored.voucher.cumulative_amount < 10**15


async def test_cannot_submit_without_a_deposit(devnet: Devnet, tmp_path: Path) -> None:
    """A client with no deposit is told so before a job is stored; a provider refuses its voucher."""
    poor = devnet.client_node("poor-client", key_index=9)
    poor.settings.p2p.bootstrap.append(client_of(devnet).host.addrs[0])
    async with poor.running():
        await poor.discovery.directory.wait_for(lambda d: len(d) >= 3, timeout_s=60.0)
        with pytest.raises(SettlementError, match="deposit"):
            await poor.services.jobs.submit(JobSpec(model_id=devnet.model_id, input=mlp_input(5)))
        assert await poor.services.jobs.list() == ()
        provider = devnet.providers[1]
        voucher = Voucher(poor.key.address, provider.key.address, PRICE_WEI)
        signature = sign_voucher(poor.key.private_key, devnet.market.domain(), voucher)
        request = JobRequest(
            job_id=Hash32(b"\x43" * 32),
            model_id=Hash32(bytes.fromhex(devnet.model_id)),
            input=mlp_input(5),
            payment=VoucherPayment(voucher.client, voucher.provider, voucher.cumulative_amount, signature),
            max_price_wei=PRICE_WEI,
            deadline_ms=2**42,
        )
        await poor.host.connect(provider.host.addrs[0])
        outcome = await JobClient(poor.host).request_job(provider.host.peer_id, request)
        assert isinstance(outcome, JobRejected)
        assert outcome.code == "insufficient_deposit"
        assert await provider.db.run(provider.db.jobs.find, request.job_id) is None


async def test_a_reverted_transaction_changes_nothing(devnet: Devnet) -> None:
    client = client_of(devnet)
    before = await devnet.market.client_account(client.key.address)
    with pytest.raises(TransactionReverted) as caught:
        await devnet.market.withdraw(sender=client.key.account)
    assert caught.value.error_name == "NoWithdrawalRequested"
    assert await devnet.market.client_account(client.key.address) == before
    # The client's nonce bookkeeping survived the revert: the next transaction goes through.
    view = await client.services.jobs.submit(
        JobSpec(model_id=devnet.model_id, input=mlp_input(9), payment=PaymentPath.ESCROW)
    )
    done = await until(client.services.jobs, view.job_id, {JobState.VERIFIED, JobState.FAILED})
    assert done.state is JobState.VERIFIED
    assert done.role is Role.CLIENT


async def test_escrow_of_a_rejected_attempt_is_taken_back_at_once(devnet: Devnet) -> None:
    """A provider that raised its price turns the escrowed job away; nobody claimed the escrow, so
    the client cancels it at once (no later claim can make it pay) and its settlement withdraws it:
    nothing stays in the market."""
    client = client_of(devnet)
    provider = devnet.providers[2]
    assert provider.provider is not None
    model = Hash32(bytes.fromhex(devnet.model_id))
    provider.provider.jobs.set_price(model, 2 * PRICE_WEI)  # its advert still says PRICE_WEI
    try:
        jobs = client.services.jobs
        view = await jobs.submit(
            JobSpec(
                model_id=devnet.model_id,
                input=mlp_input(11),
                payment=PaymentPath.ESCROW,
                provider=provider.key.address,
                timeout_s=30,
            )
        )
        failed = await until(jobs, view.job_id, {JobState.FAILED})
        assert failed.error is not None
        assert "price" in failed.error
        (attempt,) = failed.attempts
        assert attempt.paid
        assert failed.onchain_job_id is not None
        onchain_id = Hash32(bytes.fromhex(failed.onchain_job_id))
        assert (await devnet.market.job(onchain_id)).status is ChainJobStatus.NONE
        assert await chain_outcome(devnet.market, onchain_id) is ChainOutcome.REFUNDED
        with pytest.raises(TransactionReverted):  # the provider changes its mind: nothing to claim
            await devnet.market.claim_job(onchain_id, sender=provider.key.account)

        await client.settlement.tick()  # the background round may get there first: same outcome
        assert await devnet.market.withdrawable(client.key.address) == 0
    finally:
        provider.provider.jobs.set_price(model, PRICE_WEI)


async def test_vouchers_are_redeemed_before_a_client_can_release_its_reserve(devnet: Devnet) -> None:
    """Too little is owed for redemption to be worth its gas, until the client asks to release what
    it reserved for the provider: then the provider redeems at once, well before the delay runs out.
    (A withdrawal of the unreserved deposit cannot reach the provider's money at all.)"""
    client = client_of(devnet)
    jobs = client.services.jobs
    view = await jobs.submit(JobSpec(model_id=devnet.model_id, input=mlp_input(21)))
    done = await until(jobs, view.job_id, {JobState.SETTLED})
    provider = next(p for p in devnet.providers if p.key.address == done.provider)
    assert provider.services.provider is not None
    await provider.settlement.tick()
    owed = (await provider.services.provider.earnings()).unredeemed_voucher_wei
    assert owed >= PRICE_WEI
    paid_before = await devnet.market.paid(client.key.address, provider.key.address)

    await devnet.market.request_release(provider.key.address, PRICE_WEI, sender=client.key.account)
    await provider.settlement.tick()
    assert (await provider.services.provider.earnings()).unredeemed_voucher_wei == 0
    assert await devnet.market.paid(client.key.address, provider.key.address) == paid_before + owed
