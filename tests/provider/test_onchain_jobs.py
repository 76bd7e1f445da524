"""The dApp path on a provider (`OnchainJobs`): a job requested on-chain with its input is claimed,
run and its result submitted; one the provider should pass on, or loses the claim of, leaves no
job behind; a failed run submits nothing."""

from __future__ import annotations

import pytest
from job_fakes import chain_down, reverted
from provider_support import INPUT, OTHER_MODEL, PRICE, ProviderSide, fast_submission_retries

from node.chain.eip712 import verify_receipt
from node.chain.keys import NodeKey
from node.chain.market import JobStatus as ChainJobStatus
from node.domain.state import JobState
from node.errors import ExecutorError
from node.types import Address, sha256


async def test_can_claim_run_and_submit_a_job_requested_on_chain(
    provider: ProviderSide, client: NodeKey
) -> None:
    job_id, events = await provider.requested_onchain(client)
    await provider.chain_requests(events)

    assert provider.market.called("claim_job") == [(job_id, provider.me)]
    [(submitted, receipt, signature)] = provider.market.called("submit_result")
    assert submitted == job_id
    assert (receipt.job_id, receipt.input_hash) == (job_id, sha256(INPUT))
    assert verify_receipt(provider.market.domain(), receipt, signature, provider.me)
    assert provider.market.jobs[job_id].status is ChainJobStatus.SUBMITTED
    stored = await provider.stored_job(job_id)
    assert stored is not None
    assert (stored.state, stored.client, stored.price_wei) == (JobState.DELIVERED, client.address, PRICE)


@pytest.mark.parametrize("output_on_chain", [True, False])
async def test_can_put_the_output_on_chain_only_when_the_job_requires_it(
    provider: ProviderSide, client: NodeKey, output_on_chain: bool
) -> None:
    job_id, events = await provider.requested_onchain(client, output_on_chain=output_on_chain)
    await provider.chain_requests(events)
    assert provider.market.jobs[job_id].status is ChainJobStatus.SUBMITTED
    assert provider.market.outputs[job_id] == (b"out:" + INPUT if output_on_chain else b"")


async def test_cannot_claim_an_open_job_while_the_chain_cannot_say_what_it_asks(
    provider: ProviderSide, client: NodeKey
) -> None:
    """What a job asks of its submitter (callback gas, the output on chain) is read before the claim:
    unread, the job is not claimed."""
    job_id, events = await provider.requested_onchain(client, output_on_chain=True)
    provider.market.fail("job", chain_down())
    await provider.chain_requests(events)
    assert provider.market.called("claim_job") == []
    assert provider.market.jobs[job_id].status is ChainJobStatus.REQUESTED


async def test_can_submit_a_dapp_result_once_the_chain_answers_again(
    provider: ProviderSide, client: NodeKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_submission_retries(monkeypatch)
    job_id, events = await provider.requested_onchain(client)
    provider.market.fail("submit_result", chain_down(), times=2)
    await provider.chain_requests(events)
    assert provider.market.jobs[job_id].status is ChainJobStatus.SUBMITTED
    assert (await provider.stored_job(job_id)).state == JobState.DELIVERED  # type: ignore[union-attr]


async def test_can_fail_a_dapp_job_whose_result_the_chain_refused(
    provider: ProviderSide, client: NodeKey
) -> None:
    job_id, events = await provider.requested_onchain(client)
    provider.market.fail("submit_result", reverted("DeadlinePassed"))
    await provider.chain_requests(events)
    assert provider.market.jobs[job_id].status is ChainJobStatus.CLAIMED
    stored = await provider.stored_job(job_id)
    assert stored is not None
    assert stored.state == JobState.FAILED
    assert "refused" in (stored.status.reason or "")


@pytest.mark.parametrize("why", ["named_elsewhere", "unknown_model", "price_too_low", "deadline_too_close"])
async def test_cannot_claim_a_job_the_provider_should_pass_on(
    provider: ProviderSide, client: NodeKey, stranger: NodeKey, why: str
) -> None:
    options = {
        "named_elsewhere": {"named": stranger.address},
        "unknown_model": {"model": OTHER_MODEL},
        "price_too_low": {"price": PRICE // 2},
        "deadline_too_close": {"deadline_s": 30},
    }[why]
    job_id, events = await provider.requested_onchain(client, **options)  # type: ignore[arg-type]
    await provider.chain_requests(events)
    assert provider.market.called("claim_job") == []
    assert provider.pool.runs == []
    assert await provider.stored_job(job_id) is None


async def test_cannot_claim_a_job_whose_input_is_not_on_chain(
    provider: ProviderSide, client: NodeKey
) -> None:
    job_id, events = await provider.requested_onchain(client, with_input=False)
    await provider.chain_requests(events)
    assert provider.market.called("claim_job") == []
    assert await provider.stored_job(job_id) is None


async def test_cannot_run_a_job_whose_claim_another_provider_won(
    provider: ProviderSide, client: NodeKey
) -> None:
    job_id, events = await provider.requested_onchain(client)
    provider.market.fail("claim_job", reverted("JobNotRequested"))
    await provider.chain_requests(events)
    assert provider.pool.runs == []
    assert await provider.stored_job(job_id) is None


async def test_can_fail_a_claimed_job_whose_run_fails_without_submitting(
    provider: ProviderSide, client: NodeKey
) -> None:
    provider.pool.fail(ExecutorError("the model would not load"))
    job_id, events = await provider.requested_onchain(client)
    await provider.chain_requests(events)
    assert provider.market.called("submit_result") == []
    stored = await provider.stored_job(job_id)
    assert stored is not None
    assert stored.state == JobState.FAILED


async def test_cannot_lose_stake_over_a_dapp_job_whose_input_the_model_refuses(
    provider: ProviderSide, client: NodeKey
) -> None:
    """The attacker posts open jobs whose on-chain input the model refuses, hoping each provider
    claims one and lets the claim run out (which costs stake). The input is checked before the
    claim: nothing is claimed."""
    provider.pool.refused.add(INPUT)
    job_id, events = await provider.requested_onchain(client)
    await provider.chain_requests(events)
    assert provider.market.called("claim_job") == []
    assert provider.pool.runs == []
    assert await provider.stored_job(job_id) is None


async def test_cannot_make_a_provider_pay_for_a_callback_over_its_gas_limit(
    provider: ProviderSide, client: NodeKey
) -> None:
    """The attacker posts an open job at the floor price whose callback asks for millions of gas:
    whoever submits its result pays for that gas. The provider passes over it."""
    consumer = Address("0x" + "c0" * 20)
    job_id, events = await provider.requested_onchain(client, callback=consumer, callback_gas=5_000_000)
    await provider.chain_requests(events)
    assert provider.market.called("claim_job") == []
    assert await provider.stored_job(job_id) is None
