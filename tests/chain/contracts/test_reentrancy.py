"""A hostile contract, as a payee re-entering on receipt of ether and as a consumer callback that
re-enters, reverts, burns its gas or returns a huge payload, can neither drain nor block funds."""

from __future__ import annotations

from enum import IntEnum

import pytest
from contract_helpers import (
    CHALLENGE_WINDOW_S,
    MODEL_ID,
    OUTPUT,
    PRICE,
    WITHDRAWAL_DELAY_S,
    AdvanceTime,
    Roles,
    deploy_test_contract,
    now,
    signed_receipt,
    signed_voucher,
)
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3.contract import AsyncContract

from node.chain.deploy import Deployment
from node.chain.market import JobMarket, JobRequested, JobStatus, job_requested_from_log
from node.chain.registry import events_in
from node.errors import TransactionReverted

DEPOSIT = 10 * PRICE
REENTRANCY = keccak(text="Reentrancy()")[:4]


class Mode(IntEnum):
    QUIET = 0
    REENTER = 1
    REVERT = 2
    BURN_GAS = 3
    RETURN_BOMB = 4


async def attacker_for(deployment: Deployment, owner: LocalAccount) -> AsyncContract:
    return await deploy_test_contract(
        deployment.market.client, "ReentrantAttacker", deployment.market.address, sender=owner
    )


async def configure(
    market: JobMarket, attacker: AsyncContract, mode: Mode, replay: str, owner: LocalAccount
) -> None:
    await market.client.transact(attacker.functions.configure(int(mode), replay), sender=owner)


async def reentry_record(market: JobMarket, attacker: AsyncContract) -> tuple[int, int, bytes]:
    call = market.client.call
    return (
        await call(attacker.functions.reentryAttempts()),
        await call(attacker.functions.reentrySuccesses()),
        bytes(await call(attacker.functions.lastReentryError())),
    )


async def test_cannot_reenter_redemption_as_provider_payee(deployment: Deployment, roles: Roles) -> None:
    market = deployment.market
    attacker = await attacker_for(deployment, roles.outsider)
    await market.reserve(attacker.address, DEPOSIT, deposit=DEPOSIT, sender=roles.payer)
    _, signature = signed_voucher(market.domain(), roles.payer, attacker.address, 3 * PRICE)
    entries = [(roles.payer.address, 3 * PRICE, signature)]
    await configure(
        market,
        attacker,
        Mode.REENTER,
        market.contract.encode_abi("redeemVouchers", [entries]),
        roles.outsider,
    )
    await market.client.transact(attacker.functions.redeem(entries), sender=roles.outsider)
    assert await reentry_record(market, attacker) == (1, 0, REENTRANCY)
    assert await market.client.balance(attacker.address) == 3 * PRICE
    assert await market.client.balance(market.address) == DEPOSIT - 3 * PRICE
    assert await market.paid(roles.payer.address, attacker.address) == 3 * PRICE


async def test_cannot_block_a_redemption_by_refusing_payment(deployment: Deployment, roles: Roles) -> None:
    """A payee that reverts only hurts itself: its redemption fails whole, nothing is lost."""
    market = deployment.market
    attacker = await attacker_for(deployment, roles.outsider)
    await market.reserve(attacker.address, DEPOSIT, deposit=DEPOSIT, sender=roles.payer)
    _, signature = signed_voucher(market.domain(), roles.payer, attacker.address, 3 * PRICE)
    await configure(market, attacker, Mode.REVERT, "0x", roles.outsider)
    with pytest.raises(TransactionReverted) as caught:
        await market.client.transact(
            attacker.functions.redeem([(roles.payer.address, 3 * PRICE, signature)]), sender=roles.outsider
        )
    assert caught.value.error_name == "TransferFailed"
    assert await market.paid(roles.payer.address, attacker.address) == 0
    assert (await market.reserve_of(roles.payer.address, attacker.address)).amount == DEPOSIT


async def test_cannot_reenter_earnings_withdrawal_as_refunded_requester(
    deployment: Deployment, roles: Roles, advance_time: AdvanceTime
) -> None:
    market = deployment.market
    attacker = await attacker_for(deployment, roles.outsider)
    await market.deposit(DEPOSIT, sender=roles.payer)  # funds a drain would reach for
    job = await attacker_request(deployment, attacker, roles.outsider, deadline_in_s=60)
    await advance_time(market.client, 61)
    await market.refund(job.terms, sender=roles.relayer)
    assert await market.withdrawable(attacker.address) == PRICE
    await configure(
        market, attacker, Mode.REENTER, market.contract.encode_abi("withdrawEarnings", []), roles.outsider
    )
    await market.client.transact(attacker.functions.withdrawEarnings(), sender=roles.outsider)
    assert await reentry_record(market, attacker) == (1, 0, REENTRANCY)
    assert await market.client.balance(attacker.address) == PRICE
    assert await market.client.balance(market.address) == DEPOSIT


async def test_cannot_reenter_a_client_withdrawal(
    deployment: Deployment, roles: Roles, advance_time: AdvanceTime
) -> None:
    market = deployment.market
    attacker = await attacker_for(deployment, roles.outsider)
    await market.deposit(DEPOSIT, sender=roles.payer)
    act = attacker.functions.act
    await market.client.transact(
        act(market.contract.encode_abi("deposit", [])), sender=roles.outsider, value=PRICE
    )
    await market.client.transact(
        act(market.contract.encode_abi("requestWithdrawal", [PRICE])), sender=roles.outsider
    )
    await advance_time(market.client, WITHDRAWAL_DELAY_S)
    await configure(
        market, attacker, Mode.REENTER, market.contract.encode_abi("withdraw", []), roles.outsider
    )
    await market.client.transact(act(market.contract.encode_abi("withdraw", [])), sender=roles.outsider)
    assert await reentry_record(market, attacker) == (1, 0, REENTRANCY)
    assert await market.client.balance(attacker.address) == PRICE
    assert await market.client.balance(market.address) == DEPOSIT


@pytest.mark.parametrize(
    ("mode", "replay", "fails"),
    [
        (Mode.REVERT, None, True),
        (Mode.BURN_GAS, None, True),
        (Mode.RETURN_BOMB, None, False),
        (Mode.REENTER, "refund", False),
        (Mode.REENTER, "finalize", False),
    ],
)
async def test_cannot_block_payment_from_a_consumer_callback(
    deployment: Deployment,
    roles: Roles,
    provider: LocalAccount,
    advance_time: AdvanceTime,
    mode: Mode,
    replay: str | None,
    fails: bool,
) -> None:
    market = deployment.market
    attacker = await attacker_for(deployment, roles.outsider)
    job = await attacker_request(deployment, attacker, roles.outsider)
    encoded = "0x"
    if replay == "refund":
        encoded = market.contract.encode_abi("refund", [job.terms.as_tuple()])
    elif replay == "finalize":
        encoded = market.contract.encode_abi("finalize", [job.job_id])
    await configure(market, attacker, mode, encoded, roles.outsider)
    await market.claim_job(job.job_id, sender=provider)
    receipt, signature = signed_receipt(market.domain(), job.terms, provider, OUTPUT)
    result = await market.submit_result(job.terms, receipt, signature, output=OUTPUT, sender=roles.relayer)
    assert result.callback_failed is fails
    # Bounded: whatever the callback does costs the relayer at most the callback gas limit on top.
    limit = await market.client.call(market.contract.functions.callbackGasLimit())
    assert result.tx.gas_used < limit + 120_000
    if mode is Mode.REENTER:
        attempts, successes, _ = await reentry_record(market, attacker)
        assert (attempts, successes) == (1, 0)
    assert (await market.job(job.job_id)).status is JobStatus.SUBMITTED
    await advance_time(market.client, CHALLENGE_WINDOW_S)
    await market.finalize(job.job_id, sender=provider)
    assert await market.withdrawable(provider.address) == PRICE
    assert await market.withdrawable(attacker.address) == 0


async def test_cannot_starve_a_callback_of_gas(
    deployment: Deployment, roles: Roles, provider: LocalAccount
) -> None:
    """A relayer sending too little gas for the callback gets a revert, not a recorded failure."""
    market = deployment.market
    attacker = await attacker_for(deployment, roles.outsider)
    job = await attacker_request(deployment, attacker, roles.outsider)
    await market.claim_job(job.job_id, sender=provider)
    receipt, signature = signed_receipt(market.domain(), job.terms, provider, OUTPUT)
    fn = market.contract.functions.submitResult(
        job.terms.as_tuple(), receipt.output_hash, receipt.profile_hash, signature, OUTPUT
    )
    with pytest.raises(Exception) as caught:  # noqa: PT011 - decoded below, whatever the backend raised
        await fn.call({"from": roles.relayer.address, "gas": 150_000})
    decoded = market.client.errors.from_exception(caught.value)
    assert decoded is not None
    assert decoded.error_name == "InsufficientCallbackGas"
    assert (await market.job(job.job_id)).status is JobStatus.CLAIMED


async def attacker_request(
    deployment: Deployment, attacker: AsyncContract, owner: LocalAccount, *, deadline_in_s: int = 3_600
) -> JobRequested:
    market = deployment.market
    deadline = await now(market.client) + deadline_in_s
    tx = await market.client.transact(
        attacker.functions.requestJob(MODEL_ID, b"input", deadline), sender=owner, value=PRICE
    )
    return job_requested_from_log(events_in(market.contract.events.JobRequested(), tx)[0], b"input")
