"""Attacks on the contracts' money, each written as the attacker's steps and then the proof it lost.

A client or a provider among strangers tries to take work or money without paying the price:
leaving before it can be slashed, spending one deposit on many providers, squatting claims,
withdrawing ahead of redemptions, passing one task's receipt off as another's.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from contract_helpers import (
    CHALLENGE_WINDOW_S,
    MIN_STAKE,
    MODEL_ID,
    OUTPUT,
    PRICE,
    UNSTAKE_COOLDOWN_S,
    WITHDRAWAL_DELAY_S,
    AdvanceTime,
    Roles,
    now,
    receipt_for,
    request,
    sha,
    signed_receipt,
    signed_voucher,
)
from eth_account.signers.local import LocalAccount

from node.chain.artifacts import load_artifact
from node.chain.client import ChainClient
from node.chain.deploy import Deployment
from node.chain.eip712 import sign_receipt
from node.chain.market import JobStatus, SkipReason, voucher_job_id
from node.chain.registry import events_in
from node.errors import TransactionReverted

DEPOSIT = 10 * PRICE


async def reverted(awaitable: object) -> TransactionReverted:
    with pytest.raises(TransactionReverted) as caught:
        await awaitable  # type: ignore[misc]
    return caught.value


# 1. Escape from slashing by leaving ---------------------------------------------------------------


async def test_cannot_withdraw_stake_before_a_claimed_job_and_its_challenge_window_are_over(
    deployment: Deployment, roles: Roles, provider: LocalAccount, advance_time: AdvanceTime
) -> None:
    market, registry = deployment.market, deployment.registry
    max_job_time = await market.max_job_time()
    assert max_job_time == UNSTAKE_COOLDOWN_S - CHALLENGE_WINDOW_S
    # The attacker claims the longest job the market accepts, then asks to leave at once.
    job = await request(deployment, roles.requester, deadline_in_s=max_job_time - 5)
    await market.claim_job(job.job_id, sender=provider)
    await registry.request_unstake(sender=provider)
    # It submits at the last moment and signs a second, different result.
    await advance_time(market.client, job.deadline - await now(market.client) - 2)
    receipt_a, sig_a = signed_receipt(market.domain(), job.terms, provider, OUTPUT)
    receipt_b, sig_b = signed_receipt(market.domain(), job.terms, provider, b"what the client got")
    await market.submit_result(job.terms, receipt_a, sig_a, sender=provider)
    # Until the challenge window is over, the stake cannot leave.
    assert (await registry.provider(provider.address)).unstake_at >= job.deadline + CHALLENGE_WINDOW_S - 5
    assert (await reverted(registry.withdraw_stake(sender=provider))).error_name == "CooldownNotOver"
    # So the proof comes while there is stake to slash, and the job is never paid.
    proven = await market.prove_equivocation(receipt_a, sig_a, receipt_b, sig_b, sender=roles.reporter)
    assert proven.slashed == MIN_STAKE
    assert proven.disputed
    assert (await market.job(job.job_id)).status is JobStatus.DISPUTED


async def test_cannot_escape_a_dispute_by_leaving_with_the_stake(
    deployment: Deployment, roles: Roles, provider: LocalAccount, advance_time: AdvanceTime
) -> None:
    market, registry = deployment.market, deployment.registry
    job = await request(deployment, roles.requester, deadline_in_s=600)
    await market.claim_job(job.job_id, sender=provider)
    receipt_a, sig_a = signed_receipt(market.domain(), job.terms, provider, OUTPUT)
    receipt_b, sig_b = signed_receipt(market.domain(), job.terms, provider, b"another output")
    await market.submit_result(job.terms, receipt_a, sig_a, sender=provider)
    # Nobody finalizes; the attacker leaves with its whole stake after the cooldown.
    await registry.request_unstake(sender=provider)
    await advance_time(market.client, UNSTAKE_COOLDOWN_S)
    await registry.withdraw_stake(sender=provider)
    # A proof with nothing left to slash still disputes the job: the attacker is never paid.
    proven = await market.prove_equivocation(receipt_a, sig_a, receipt_b, sig_b, sender=roles.reporter)
    assert proven.slashed == 0
    assert proven.disputed
    assert (await reverted(market.finalize(job.job_id, sender=provider))).error_name == "WrongJobStatus"
    assert (await market.refund(job.terms, sender=roles.requester)).price == PRICE


async def test_cannot_request_a_job_that_outlasts_the_claimers_stake(
    deployment: Deployment, roles: Roles
) -> None:
    market = deployment.market
    too_far = await now(market.client) + await market.max_job_time() + 60
    error = await reverted(
        market.request_job(MODEL_ID, price=PRICE, deadline=too_far, input=b"x", sender=roles.requester)
    )
    assert error.error_name == "DeadlineTooFar"


# 2. One deposit, many providers ---------------------------------------------------------------------


async def test_cannot_spend_one_deposit_on_two_providers(
    deployment: Deployment, roles: Roles, provider: LocalAccount
) -> None:
    market = deployment.market
    alice, bob = provider, roles.other_provider
    # The client deposits D, reserves it for Alice, and signs a voucher for D to each provider.
    await market.reserve(alice.address, DEPOSIT, deposit=DEPOSIT, sender=roles.payer)
    for_alice = signed_voucher(market.domain(), roles.payer, alice.address, DEPOSIT)
    for_bob = signed_voucher(market.domain(), roles.payer, bob.address, DEPOSIT)
    # Bob's admission reads the chain before running anything: nothing is reserved for him.
    assert await market.reserved(roles.payer.address, bob.address) == 0
    assert await market.reserved(roles.payer.address, alice.address) == DEPOSIT
    # Even if Bob ran the jobs, his voucher cannot reach the money reserved for Alice.
    bobs = await market.redeem_vouchers([for_bob], sender=bob)
    assert bobs.total == 0
    assert bobs.skipped[0].reason is SkipReason.NO_FUNDS
    assert (await market.redeem_vouchers([for_alice], sender=alice)).total == DEPOSIT


async def test_cannot_pay_a_provider_beyond_its_reserve(
    deployment: Deployment, roles: Roles, provider: LocalAccount
) -> None:
    market = deployment.market
    await market.deposit(DEPOSIT, sender=roles.payer)
    await market.reserve(provider.address, 2 * PRICE, sender=roles.payer)
    voucher = signed_voucher(market.domain(), roles.payer, provider.address, DEPOSIT)
    assert (await market.redeem_vouchers([voucher], sender=provider)).total == 2 * PRICE
    # The unreserved rest of the deposit stays the client's.
    assert (await market.client_account(roles.payer.address)).balance == DEPOSIT - 2 * PRICE


# 3. Result, then refund (contract side) ------------------------------------------------------------


async def test_cannot_request_a_deadline_without_room_for_the_work(
    deployment: Deployment, roles: Roles
) -> None:
    market = deployment.market
    soon = await now(market.client) + 10
    error = await reverted(
        market.request_job(MODEL_ID, price=PRICE, deadline=soon, input=b"x", sender=roles.requester)
    )
    assert error.error_name == "DeadlineTooClose"


# 4. Claim squatting ------------------------------------------------------------------------------


async def test_cannot_squat_a_claim_for_free(
    deployment: Deployment, roles: Roles, provider: LocalAccount, advance_time: AdvanceTime
) -> None:
    market, registry = deployment.market, deployment.registry
    job = await request(deployment, roles.requester, deadline_in_s=120)
    # The squatter claims and sits on the job until its deadline.
    await market.claim_job(job.job_id, sender=provider)
    await advance_time(market.client, 121)
    refunded = await market.refund(job.terms, sender=roles.outsider)
    receipt = await market.client.w3.eth.get_transaction_receipt(refunded.tx.tx_hash)  # type: ignore[arg-type]
    (expired,) = events_in(market.contract.events.ClaimExpired(), receipt)
    assert expired["args"]["slashed"] == PRICE
    assert (await registry.provider(provider.address)).stake == MIN_STAKE - PRICE
    # The requester gets its price back and nothing of the squatter's loss: a requester that
    # profited from a claim running out would profit from making it run out.
    assert await market.withdrawable(roles.requester.address) == PRICE
    assert await market.unclaimed_rewards() == PRICE // 2


# 5. Leaving while clients still owe ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("cooldown", "window", "delay", "callback_gas", "error_name"),
    [
        (UNSTAKE_COOLDOWN_S, CHALLENGE_WINDOW_S, 0, 200_000, "InvalidWithdrawalDelay"),
        (UNSTAKE_COOLDOWN_S, CHALLENGE_WINDOW_S, 10**9, 200_000, "InvalidWithdrawalDelay"),
        (UNSTAKE_COOLDOWN_S, CHALLENGE_WINDOW_S, 600, 0, "InvalidCallbackGasLimit"),
        (UNSTAKE_COOLDOWN_S, CHALLENGE_WINDOW_S, 600, 10**9, "InvalidCallbackGasLimit"),
        (UNSTAKE_COOLDOWN_S, 59, 600, 200_000, "InvalidChallengeWindow"),
        (600, 600, 600, 200_000, "CooldownTooShort"),
    ],
)
async def test_cannot_construct_the_market_with_unbounded_parameters(
    client: ChainClient,
    roles: Roles,
    cooldown: int,
    window: int,
    delay: int,
    callback_gas: int,
    error_name: str,
) -> None:
    registry = await client.deploy(
        load_artifact("ProviderRegistry"), MIN_STAKE, cooldown, sender=roles.deployer
    )
    error = await reverted(
        client.deploy(
            load_artifact("JobMarket"), registry, window, delay, callback_gas, sender=roles.deployer
        )
    )
    assert error.error_name == error_name


@pytest.mark.parametrize(
    ("min_stake", "cooldown", "error_name"),
    [
        (0, UNSTAKE_COOLDOWN_S, "InvalidMinStake"),
        (MIN_STAKE, 0, "InvalidCooldown"),
        (MIN_STAKE, 10**10, "InvalidCooldown"),
    ],
)
async def test_cannot_construct_the_registry_with_unbounded_parameters(
    client: ChainClient, roles: Roles, min_stake: int, cooldown: int, error_name: str
) -> None:
    error = await reverted(
        client.deploy(load_artifact("ProviderRegistry"), min_stake, cooldown, sender=roles.deployer)
    )
    assert error.error_name == error_name


async def test_cannot_release_a_reserve_ahead_of_redemption(
    deployment: Deployment, roles: Roles, provider: LocalAccount, advance_time: AdvanceTime
) -> None:
    market = deployment.market
    await market.reserve(provider.address, DEPOSIT, deposit=DEPOSIT, sender=roles.payer)
    voucher = signed_voucher(market.domain(), roles.payer, provider.address, 4 * PRICE)
    # The client asks for its money back right after the provider ran the jobs...
    await market.request_release(provider.address, DEPOSIT, sender=roles.payer)
    # ...admission sees it at once and takes no new voucher job on that reserve...
    assert await market.reserved(roles.payer.address, provider.address) == 0
    # ...the release waits out the delay...
    error = await reverted(market.release(provider.address, sender=roles.payer))
    assert error.error_name == "WithdrawalNotReady"
    # ...and the provider redeems first.
    assert (await market.redeem_vouchers([voucher], sender=provider)).total == 4 * PRICE
    await advance_time(market.client, WITHDRAWAL_DELAY_S)
    assert (await market.release(provider.address, sender=roles.payer)).amount == DEPOSIT - 4 * PRICE


# 6. One id, two tasks ----------------------------------------------------------------------------


async def test_cannot_prove_equivocation_with_receipts_for_different_inputs(
    deployment: Deployment, roles: Roles, provider: LocalAccount
) -> None:
    """A client that sends an escrowed job's id with its own input makes the provider sign a receipt
    for another task under that id: that is no equivocation, and it is no result for the job."""
    market = deployment.market
    job = await request(deployment, roles.requester)
    await market.claim_job(job.job_id, sender=provider)
    honest, honest_sig = signed_receipt(market.domain(), job.terms, provider, OUTPUT)
    lured = replace(
        receipt_for(job.terms, provider.address, b"the attacker's output"), input_hash=sha(b"its input")
    )
    lured_sig = sign_receipt(bytes(provider.key), market.domain(), lured)
    error = await reverted(
        market.prove_equivocation(honest, honest_sig, lured, lured_sig, sender=roles.reporter)
    )
    assert error.error_name == "DifferentTasks"
    wrong = await reverted(market.submit_result(job.terms, honest, lured_sig, sender=roles.outsider))
    assert wrong.error_name == "WrongSigner"
    assert not await market.equivocation_proven(job.job_id, provider.address)


async def test_cannot_name_an_escrowed_job_with_a_voucher_job_id(
    deployment: Deployment, roles: Roles, provider: LocalAccount
) -> None:
    """A client that sends someone else's escrowed job id as its voucher job's id gets a receipt for
    another id: the voucher namespace is bound to the client and apart from on-chain ids."""
    market = deployment.market
    job = await request(deployment, roles.requester)
    await market.claim_job(job.job_id, sender=provider)
    voucher_id = voucher_job_id(roles.payer.address, job.job_id)
    assert voucher_id != job.job_id
    assert voucher_id != voucher_job_id(roles.requester.address, job.job_id)
    lured = replace(receipt_for(job.terms, provider.address, OUTPUT), job_id=voucher_id)
    lured_sig = sign_receipt(bytes(provider.key), market.domain(), lured)
    relayed = market.contract.functions.submitResult(
        job.terms.as_tuple(), lured.output_hash, lured.profile_hash, lured_sig, OUTPUT
    )
    error = await reverted(market.client.transact(relayed, sender=roles.payer))
    assert error.error_name == "WrongSigner"
    assert (await market.job(job.job_id)).status is JobStatus.CLAIMED


# Review: front-running a proof's reward --------------------------------------------------------------


async def test_cannot_earn_a_reward_by_copying_a_proof_from_the_mempool(
    deployment: Deployment, roles: Roles, provider: LocalAccount
) -> None:
    market = deployment.market
    job = await request(deployment, roles.requester)
    await market.claim_job(job.job_id, sender=provider)
    receipt_a, sig_a = signed_receipt(market.domain(), job.terms, provider, OUTPUT)
    receipt_b, sig_b = signed_receipt(market.domain(), job.terms, provider, b"another output")
    # The copier sends the reporter's proof first, without having committed to it.
    copied = await market.prove_equivocation(
        receipt_a, sig_a, receipt_b, sig_b, sender=roles.outsider, commit_first=False
    )
    assert copied.slashed == MIN_STAKE
    assert copied.disputed
    assert await market.withdrawable(roles.outsider.address) == 0
    assert await market.unclaimed_rewards() == MIN_STAKE // 2


async def test_can_earn_a_reward_for_a_committed_proof(
    deployment: Deployment, roles: Roles, provider: LocalAccount
) -> None:
    market = deployment.market
    job = await request(deployment, roles.requester)
    await market.claim_job(job.job_id, sender=provider)
    receipt_a, sig_a = signed_receipt(market.domain(), job.terms, provider, OUTPUT)
    receipt_b, sig_b = signed_receipt(market.domain(), job.terms, provider, b"another output")
    await market.prove_equivocation(receipt_a, sig_a, receipt_b, sig_b, sender=roles.reporter)
    assert await market.withdrawable(roles.reporter.address) == MIN_STAKE // 2
    assert await market.unclaimed_rewards() == 0


# Cancelling an escrow nobody claimed ---------------------------------------------------------------


async def test_can_take_back_a_job_nobody_claimed_at_once_and_nobody_can_claim_it_after(
    deployment: Deployment, roles: Roles, provider: LocalAccount
) -> None:
    """A client whose provider refused a job takes its escrow back before paying another one: the
    refusing provider cannot then claim it and be paid for the same job."""
    market = deployment.market
    job = await request(deployment, roles.requester, provider=provider.address)
    before = await market.withdrawable(roles.requester.address)
    cancelled = await market.cancel_job(job.terms, sender=roles.requester)
    assert (cancelled.job_id, cancelled.price) == (job.job_id, PRICE)
    assert await market.withdrawable(roles.requester.address) == before + PRICE
    assert (await market.job(job.job_id)).status is JobStatus.NONE
    assert (await reverted(market.claim_job(job.job_id, sender=provider))).error_name == "JobNotFound"


async def test_cannot_cancel_someone_elses_job_or_one_already_claimed(
    deployment: Deployment, roles: Roles, provider: LocalAccount
) -> None:
    market = deployment.market
    job = await request(deployment, roles.requester)
    stranger = await reverted(market.cancel_job(job.terms, sender=roles.outsider))
    assert stranger.error_name == "NotRequester"
    await market.claim_job(job.job_id, sender=provider)
    claimed = await reverted(market.cancel_job(job.terms, sender=roles.requester))
    assert claimed.error_name == "WrongJobStatus"
    assert (await market.job(job.job_id)).status is JobStatus.CLAIMED
