"""JobMarket on-chain jobs: request, claim, submit, finalize, refund, withdraw; callbacks."""

from __future__ import annotations

from dataclasses import replace

import pytest
from contract_helpers import (
    CHALLENGE_WINDOW_S,
    MIN_STAKE,
    MODEL_ID,
    OUTPUT,
    PRICE,
    AdvanceTime,
    Roles,
    claimed,
    deploy_test_contract,
    gas_cost,
    high_s,
    key_of,
    now,
    receipt_for,
    request,
    sha,
    signed_receipt,
    submitted,
)
from eth_account.signers.local import LocalAccount

from node.chain.artifacts import load_artifact
from node.chain.deploy import Deployment
from node.chain.eip712 import sign_receipt
from node.chain.market import DEFAULT_CALLBACK_GAS, JobStatus, job_requested_from_log
from node.chain.registry import ZERO_ADDRESS, ContractInputError, events_in
from node.errors import TransactionReverted

# Requests ----------------------------------------------------------------------------------------


async def test_can_request_a_job_with_its_input(deployment: Deployment, roles: Roles) -> None:
    market = deployment.market
    job = await request(deployment, roles.requester, input=b"pixels")
    assert job.terms.input_hash == sha(b"pixels")
    assert job.terms.requester == roles.requester.address
    assert job.job_id == job.terms.job_id
    assert job.input == b"pixels"
    assert job.price == PRICE
    assert job.provider is None
    record = await market.job(job.job_id)
    assert record.status is JobStatus.REQUESTED
    assert record.price == PRICE
    assert record.time == job.deadline
    assert await market.client.call(market.contract.functions.jobIdOf(job.terms.as_tuple())) == job.job_id
    assert await market.client.balance(market.address) == PRICE


async def test_can_request_a_job_by_input_hash_for_a_named_provider(
    deployment: Deployment, roles: Roles, provider: LocalAccount
) -> None:
    deadline = await now(deployment.market.client) + 600
    job = await deployment.market.request_job(
        MODEL_ID,
        price=PRICE,
        deadline=deadline,
        input_hash=sha(b"stored elsewhere"),
        provider=provider.address,
        sender=roles.requester,
    )
    assert job.input == b""
    assert job.terms.input_hash == sha(b"stored elsewhere")
    assert job.provider == provider.address
    assert (await deployment.market.job(job.job_id)).provider == provider.address


@pytest.mark.parametrize(
    ("price", "deadline_in_s", "input_hash", "callback", "error_name"),
    [
        (0, 600, None, None, "ZeroAmount"),
        (PRICE + 1, 600, None, None, "PriceNotWholeGwei"),
        (PRICE, 0, None, None, "DeadlineTooClose"),
        (PRICE, 20, None, None, "DeadlineTooClose"),
        (PRICE, 2**33, None, None, "DeadlineTooFar"),
        (PRICE, 600, b"\x07" * 32, None, "InputHashMismatch"),
        (PRICE, 600, None, "eoa", "CallbackNotContract"),
    ],
)
async def test_cannot_request_a_malformed_job(
    deployment: Deployment,
    roles: Roles,
    price: int,
    deadline_in_s: int,
    input_hash: bytes | None,
    callback: str | None,
    error_name: str,
) -> None:
    market = deployment.market
    deadline = await now(market.client) + deadline_in_s
    fn = market.contract.functions.requestJob(
        MODEL_ID,
        input_hash or bytes(32),
        b"pixels",
        deadline,
        ZERO_ADDRESS,
        roles.outsider.address if callback == "eoa" else ZERO_ADDRESS,
        DEFAULT_CALLBACK_GAS if callback == "eoa" else 0,
        False,
        1,
    )
    with pytest.raises(TransactionReverted) as caught:
        await market.client.transact(fn, sender=roles.requester, value=price)
    assert caught.value.error_name == error_name
    assert await market.client.balance(market.address) == 0


async def test_cannot_request_a_job_without_input(deployment: Deployment, roles: Roles) -> None:
    market = deployment.market
    deadline = await now(market.client) + 600
    with pytest.raises(ContractInputError, match="needs its input"):
        await market.request_job(MODEL_ID, price=PRICE, deadline=deadline, sender=roles.requester)
    with pytest.raises(ContractInputError, match="whole number of gwei"):
        await market.request_job(
            MODEL_ID, price=PRICE + 1, deadline=deadline, input=b"x", sender=roles.requester
        )
    raw = market.contract.functions.requestJob(
        MODEL_ID, bytes(32), b"", deadline, ZERO_ADDRESS, ZERO_ADDRESS, 0, False, 1
    )
    with pytest.raises(TransactionReverted) as caught:
        await market.client.transact(raw, sender=roles.requester, value=PRICE)
    assert caught.value.error_name == "MissingInput"


async def test_can_request_equal_jobs_with_different_salts(deployment: Deployment, roles: Roles) -> None:
    first = await request(deployment, roles.requester, input=b"same")
    second = await request(deployment, roles.requester, input=b"same")
    assert first.terms.salt != second.terms.salt
    assert first.job_id != second.job_id
    assert await deployment.market.client.balance(deployment.market.address) == 2 * PRICE


async def test_cannot_request_a_live_job_again_with_the_same_salt(
    deployment: Deployment, roles: Roles
) -> None:
    market = deployment.market
    attacker = await deploy_test_contract(
        market.client, "ReentrantAttacker", market.address, sender=roles.requester
    )
    deadline = await now(market.client) + 600
    with pytest.raises(TransactionReverted) as caught:
        await market.client.transact(
            attacker.functions.requestTwice(MODEL_ID, b"same", deadline),
            sender=roles.requester,
            value=2 * PRICE,
        )
    assert caught.value.error_name == "JobExists"
    assert await market.client.balance(market.address) == 0


async def test_can_list_requested_jobs_with_their_inputs(deployment: Deployment, roles: Roles) -> None:
    market = deployment.market
    first_block = await market.client.block_number()
    inline = await request(deployment, roles.requester, input=b"inline input")
    deadline = await now(market.client) + 600
    by_hash = await market.request_job(
        MODEL_ID, price=PRICE, deadline=deadline, input_hash=sha(b"elsewhere"), sender=roles.requester
    )
    listed = await market.job_requests(first_block)
    assert [(j.job_id, j.input, j.terms) for j in listed] == [
        (inline.job_id, b"inline input", inline.terms),
        (by_hash.job_id, b"", by_hash.terms),
    ]


# Claims ------------------------------------------------------------------------------------------


async def test_can_claim_a_job_as_an_active_provider(
    deployment: Deployment, roles: Roles, provider: LocalAccount
) -> None:
    job = await request(deployment, roles.requester)
    claim = await deployment.market.claim_job(job.job_id, sender=provider)
    assert claim.provider == provider.address
    record = await deployment.market.job(job.job_id)
    assert record.status is JobStatus.CLAIMED
    assert record.provider == provider.address
    assert record.time == job.deadline


async def test_can_claim_a_job_named_for_the_caller(
    deployment: Deployment, roles: Roles, provider: LocalAccount
) -> None:
    job = await request(deployment, roles.requester, provider=provider.address)
    assert (await deployment.market.claim_job(job.job_id, sender=provider)).provider == provider.address


async def test_cannot_claim_a_job_named_for_another_provider(
    deployment: Deployment, roles: Roles, provider: LocalAccount
) -> None:
    other = roles.other_provider
    await deployment.registry.register(b"\x01", bytes(32), stake=MIN_STAKE, sender=other)
    job = await request(deployment, roles.requester, provider=provider.address)
    with pytest.raises(TransactionReverted) as caught:
        await deployment.market.claim_job(job.job_id, sender=other)
    assert caught.value.error_name == "NotNamedProvider"
    assert caught.value.error_args == (job.job_id, provider.address, other.address)
    assert (await deployment.market.job(job.job_id)).status is JobStatus.REQUESTED


async def test_cannot_claim_unless_active(
    deployment: Deployment, roles: Roles, provider: LocalAccount
) -> None:
    job = await request(deployment, roles.requester)
    with pytest.raises(TransactionReverted) as unregistered:
        await deployment.market.claim_job(job.job_id, sender=roles.outsider)
    assert unregistered.value.error_name == "ProviderNotActive"
    await deployment.registry.request_unstake(sender=provider)
    with pytest.raises(TransactionReverted) as unstaking:
        await deployment.market.claim_job(job.job_id, sender=provider)
    assert unstaking.value.error_name == "ProviderNotActive"


async def test_cannot_claim_late_twice_or_unknown(
    deployment: Deployment, roles: Roles, provider: LocalAccount, advance_time: AdvanceTime
) -> None:
    market = deployment.market
    with pytest.raises(TransactionReverted) as unknown:
        await market.claim_job(b"\x09" * 32, sender=provider)
    assert unknown.value.error_name == "JobNotFound"
    job = await claimed(deployment, roles.requester, provider)
    with pytest.raises(TransactionReverted) as twice:
        await market.claim_job(job.job_id, sender=provider)
    assert twice.value.error_name == "WrongJobStatus"
    assert twice.value.error_args == (job.job_id, JobStatus.CLAIMED)
    late = await request(deployment, roles.requester, deadline_in_s=60)
    await advance_time(market.client, 120)
    with pytest.raises(TransactionReverted) as caught:
        await market.claim_job(late.job_id, sender=provider)
    assert caught.value.error_name == "DeadlinePassed"


# Results -----------------------------------------------------------------------------------------


async def test_can_submit_a_result_relayed_by_anyone(
    deployment: Deployment, roles: Roles, provider: LocalAccount
) -> None:
    market = deployment.market
    job = await claimed(deployment, roles.requester, provider)
    receipt, signature = signed_receipt(market.domain(), job.terms, provider, OUTPUT)
    result = await market.submit_result(job.terms, receipt, signature, output=OUTPUT, sender=roles.relayer)
    assert result.output == OUTPUT
    assert result.output_hash == sha(OUTPUT)
    assert not result.callback_failed
    record = await market.job(job.job_id)
    assert record.status is JobStatus.SUBMITTED
    assert record.time == await now(market.client) + CHALLENGE_WINDOW_S


async def test_can_submit_a_result_by_hash_only(
    deployment: Deployment, roles: Roles, provider: LocalAccount
) -> None:
    market = deployment.market
    job = await claimed(deployment, roles.requester, provider)
    receipt, signature = signed_receipt(market.domain(), job.terms, provider, OUTPUT)
    result = await market.submit_result(job.terms, receipt, signature, sender=provider)
    assert result.output == b""
    assert result.output_hash == sha(OUTPUT)


async def test_cannot_submit_an_output_that_does_not_match_its_hash(
    deployment: Deployment, roles: Roles, provider: LocalAccount
) -> None:
    market = deployment.market
    job = await claimed(deployment, roles.requester, provider)
    receipt, signature = signed_receipt(market.domain(), job.terms, provider, OUTPUT)
    with pytest.raises(TransactionReverted) as caught:
        await market.submit_result(job.terms, receipt, signature, output=b"forged", sender=roles.relayer)
    assert caught.value.error_name == "OutputHashMismatch"
    assert caught.value.error_args == (sha(OUTPUT), sha(b"forged"))
    assert (await market.job(job.job_id)).status is JobStatus.CLAIMED


@pytest.mark.parametrize("forgery", ["other-signer", "other-chain", "other-contract", "other-profile"])
async def test_cannot_submit_a_receipt_signed_wrongly(
    deployment: Deployment, roles: Roles, provider: LocalAccount, forgery: str
) -> None:
    market = deployment.market
    job = await claimed(deployment, roles.requester, provider)
    receipt = receipt_for(job.terms, provider.address, OUTPUT)
    domain = market.domain()
    signer = provider
    if forgery == "other-signer":
        signer = roles.outsider
    elif forgery == "other-chain":
        domain = replace(domain, chain_id=domain.chain_id + 1)
    elif forgery == "other-contract":
        domain = replace(domain, verifying_contract=deployment.registry.address)
    signature = sign_receipt(key_of(signer), domain, receipt)
    if forgery == "other-profile":
        receipt = replace(receipt, profile_hash=sha(b"another profile"))
    with pytest.raises(TransactionReverted) as caught:
        await market.submit_result(job.terms, receipt, signature, output=OUTPUT, sender=roles.relayer)
    assert caught.value.error_name == "WrongSigner"
    assert caught.value.error_args[1] == provider.address
    assert (await market.job(job.job_id)).status is JobStatus.CLAIMED


@pytest.mark.parametrize("malformation", ["high-s", "v=29", "v=0", "short"])
async def test_cannot_submit_a_malformed_signature(
    deployment: Deployment, roles: Roles, provider: LocalAccount, malformation: str
) -> None:
    market = deployment.market
    job = await claimed(deployment, roles.requester, provider)
    receipt, good = signed_receipt(market.domain(), job.terms, provider, OUTPUT)
    bad = {
        "high-s": high_s(good),
        "v=29": good[:64] + bytes([29]),
        "v=0": good[:64] + bytes([good[64] - 27]),
        "short": good[:64],
    }[malformation]
    fn = market.contract.functions.submitResult(
        job.terms.as_tuple(), receipt.output_hash, receipt.profile_hash, bad, OUTPUT
    )
    with pytest.raises(TransactionReverted) as caught:
        await market.client.transact(fn, sender=roles.relayer)
    assert caught.value.error_name == "InvalidSignature"
    assert (await market.job(job.job_id)).status is JobStatus.CLAIMED


async def test_cannot_submit_before_claim_twice_late_or_for_other_terms(
    deployment: Deployment, roles: Roles, provider: LocalAccount, advance_time: AdvanceTime
) -> None:
    market = deployment.market
    unclaimed = await request(deployment, roles.requester)
    receipt, signature = signed_receipt(market.domain(), unclaimed.terms, provider, OUTPUT)
    with pytest.raises(TransactionReverted) as early:
        await market.submit_result(unclaimed.terms, receipt, signature, sender=provider)
    assert early.value.error_name == "WrongJobStatus"

    job = await submitted(deployment, roles.requester, provider, roles.relayer)
    receipt, signature = signed_receipt(market.domain(), job.terms, provider, OUTPUT)
    with pytest.raises(TransactionReverted) as twice:
        await market.submit_result(job.terms, receipt, signature, sender=provider)
    assert twice.value.error_name == "WrongJobStatus"

    other_terms = replace(job.terms, salt=job.terms.salt + 1)
    receipt, signature = signed_receipt(market.domain(), other_terms, provider, OUTPUT)
    with pytest.raises(TransactionReverted) as unknown:
        await market.submit_result(other_terms, receipt, signature, sender=provider)
    assert unknown.value.error_name == "JobNotFound"

    late = await request(deployment, roles.requester, deadline_in_s=60)
    await market.claim_job(late.job_id, sender=provider)
    await advance_time(market.client, 120)
    receipt, signature = signed_receipt(market.domain(), late.terms, provider, OUTPUT)
    with pytest.raises(TransactionReverted) as caught:
        await market.submit_result(late.terms, receipt, signature, sender=provider)
    assert caught.value.error_name == "DeadlinePassed"


async def test_cannot_submit_a_receipt_for_another_job(
    deployment: Deployment, roles: Roles, provider: LocalAccount
) -> None:
    market = deployment.market
    job = await claimed(deployment, roles.requester, provider)
    receipt, signature = signed_receipt(market.domain(), job.terms, provider, OUTPUT)
    with pytest.raises(ContractInputError, match="job_id"):
        await market.submit_result(job.terms, replace(receipt, job_id=sha(b"x")), signature, sender=provider)
    with pytest.raises(ContractInputError, match="model_id or input_hash"):
        await market.submit_result(
            job.terms, replace(receipt, input_hash=sha(b"x")), signature, sender=provider
        )
    with pytest.raises(ContractInputError, match="65 bytes"):
        await market.submit_result(job.terms, receipt, signature[:64], sender=provider)


# Finalization, refunds, withdrawals ----------------------------------------------------------------


async def test_can_finalize_after_the_challenge_window_and_withdraw(
    deployment: Deployment, roles: Roles, provider: LocalAccount, advance_time: AdvanceTime
) -> None:
    market = deployment.market
    start = await market.client.block_number()
    job = await submitted(deployment, roles.requester, provider, roles.relayer)
    await advance_time(market.client, CHALLENGE_WINDOW_S)
    finalized = await market.finalize(job.job_id, sender=roles.outsider)
    assert finalized.provider == provider.address
    assert finalized.price == PRICE
    # Credited to the provider although someone else finalized it.
    assert await market.credited(start + 1) == {provider.address: PRICE}
    assert (await market.job(job.job_id)).status is JobStatus.NONE
    assert await market.withdrawable(provider.address) == PRICE
    before = await market.client.balance(provider.address)
    withdrawn = await market.withdraw_earnings(sender=provider)
    assert withdrawn.amount == PRICE
    cost = await gas_cost(market.client, withdrawn.tx.tx_hash)
    assert await market.client.balance(provider.address) == before + PRICE - cost
    assert await market.client.balance(market.address) == 0


async def test_cannot_finalize_early_twice_or_unsubmitted(
    deployment: Deployment, roles: Roles, provider: LocalAccount, advance_time: AdvanceTime
) -> None:
    market = deployment.market
    job = await submitted(deployment, roles.requester, provider, roles.relayer)
    with pytest.raises(TransactionReverted) as early:
        await market.finalize(job.job_id, sender=provider)
    assert early.value.error_name == "ChallengeWindowOpen"
    pending = await claimed(deployment, roles.requester, provider)
    with pytest.raises(TransactionReverted) as unsubmitted:
        await market.finalize(pending.job_id, sender=provider)
    assert unsubmitted.value.error_name == "WrongJobStatus"
    await advance_time(market.client, CHALLENGE_WINDOW_S)
    await market.finalize(job.job_id, sender=provider)
    with pytest.raises(TransactionReverted) as twice:
        await market.finalize(job.job_id, sender=provider)
    assert twice.value.error_name == "JobNotFound"
    assert await market.withdrawable(provider.address) == PRICE


@pytest.mark.parametrize("claim", [False, True], ids=["unclaimed", "claimed"])
async def test_can_refund_after_the_deadline_without_a_result(
    deployment: Deployment, roles: Roles, provider: LocalAccount, advance_time: AdvanceTime, claim: bool
) -> None:
    market = deployment.market
    job = await request(deployment, roles.requester, deadline_in_s=60)
    if claim:
        await market.claim_job(job.job_id, sender=provider)
    await advance_time(market.client, 61)
    refunded = await market.refund(job.terms, sender=roles.outsider)
    assert refunded.requester == roles.requester.address
    assert refunded.price == PRICE
    # A claim that ran out of time cost its claimer stake worth the price, none of it to the
    # requester (half burned by the registry, half locked here for good).
    assert await market.withdrawable(roles.requester.address) == PRICE
    assert (await market.withdraw_earnings(sender=roles.requester)).amount == PRICE
    locked = PRICE // 2 if claim else 0
    assert await market.unclaimed_rewards() == locked
    assert await market.client.balance(market.address) == locked


async def test_cannot_refund_early_after_a_result_or_twice(
    deployment: Deployment, roles: Roles, provider: LocalAccount, advance_time: AdvanceTime
) -> None:
    market = deployment.market
    job = await request(deployment, roles.requester, deadline_in_s=60)
    with pytest.raises(TransactionReverted) as early:
        await market.refund(job.terms, sender=roles.requester)
    assert early.value.error_name == "DeadlineNotPassed"
    answered = await submitted(deployment, roles.requester, provider, roles.relayer)
    await advance_time(market.client, 4_000)
    with pytest.raises(TransactionReverted) as after_result:
        await market.refund(answered.terms, sender=roles.requester)
    assert after_result.value.error_name == "WrongJobStatus"
    await market.refund(job.terms, sender=roles.requester)
    with pytest.raises(TransactionReverted) as twice:
        await market.refund(job.terms, sender=roles.requester)
    assert twice.value.error_name == "JobNotFound"
    assert await market.withdrawable(roles.requester.address) == PRICE


async def test_cannot_withdraw_earnings_with_nothing_owed(deployment: Deployment, roles: Roles) -> None:
    with pytest.raises(TransactionReverted) as caught:
        await deployment.market.withdraw_earnings(sender=roles.outsider)
    assert caught.value.error_name == "NothingToWithdraw"
    assert caught.value.error_args == (roles.outsider.address,)


# Consumer callbacks --------------------------------------------------------------------------------


async def test_can_deliver_a_result_to_the_example_consumer(
    deployment: Deployment, roles: Roles, provider: LocalAccount, advance_time: AdvanceTime
) -> None:
    market = deployment.market
    client = market.client
    consumer_address = await client.deploy(
        load_artifact("ExampleConsumer"), market.address, MODEL_ID, sender=roles.requester
    )
    consumer = client.contract(load_artifact("ExampleConsumer"), consumer_address)
    deadline = await now(client) + 600
    asked = await client.transact(
        consumer.functions.ask(b"a question", deadline), sender=roles.requester, value=PRICE
    )
    job = job_requested_from_log(events_in(market.contract.events.JobRequested(), asked)[0])
    assert job.terms.callback == consumer_address
    assert job.terms.requester == consumer_address
    await market.claim_job(job.job_id, sender=provider)
    receipt, signature = signed_receipt(market.domain(), job.terms, provider, b"an answer")
    result = await market.submit_result(job.terms, receipt, signature, output=b"an answer", sender=provider)
    assert not result.callback_failed
    assert await client.call(consumer.functions.answers(job.job_id)) == b"an answer"
    assert not await client.call(consumer.functions.pending(job.job_id))
    await advance_time(client, CHALLENGE_WINDOW_S)
    await market.finalize(job.job_id, sender=provider)
    assert await market.withdrawable(provider.address) == PRICE


async def test_cannot_call_the_example_consumer_back_from_outside_the_market(
    deployment: Deployment, roles: Roles
) -> None:
    client = deployment.market.client
    address = await client.deploy(
        load_artifact("ExampleConsumer"), deployment.market.address, MODEL_ID, sender=roles.requester
    )
    consumer = client.contract(load_artifact("ExampleConsumer"), address)
    with pytest.raises(TransactionReverted) as caught:
        await client.transact(
            consumer.functions.onJobResult(bytes(32), bytes(32), b"fake"), sender=roles.outsider
        )
    assert caught.value.error_name == "OnlyMarket"


async def test_can_refund_the_example_consumer_to_its_owner(
    deployment: Deployment, roles: Roles, advance_time: AdvanceTime
) -> None:
    market = deployment.market
    client = market.client
    consumer_address = await client.deploy(
        load_artifact("ExampleConsumer"), market.address, MODEL_ID, sender=roles.requester
    )
    consumer = client.contract(load_artifact("ExampleConsumer"), consumer_address)
    deadline = await now(client) + 60
    asked = await client.transact(consumer.functions.ask(b"q", deadline), sender=roles.requester, value=PRICE)
    job = job_requested_from_log(events_in(market.contract.events.JobRequested(), asked)[0])
    await advance_time(client, 61)
    await market.refund(job.terms, sender=roles.outsider)
    before = await client.balance(roles.requester.address)
    collected = await client.transact(consumer.functions.collectRefunds(), sender=roles.requester)
    cost = int(collected["gasUsed"]) * int(collected["effectiveGasPrice"])
    assert await client.balance(roles.requester.address) == before + PRICE - cost
    with pytest.raises(TransactionReverted) as caught:
        await client.transact(consumer.functions.collectRefunds(), sender=roles.outsider)
    assert caught.value.error_name == "OnlyOwner"
