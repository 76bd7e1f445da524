"""JobMarket vouchers: deposit, reserves per provider, batched redemption, withdrawal and release by
request and delay."""

from __future__ import annotations

from dataclasses import replace

import pytest
from contract_helpers import (
    PRICE,
    WITHDRAWAL_DELAY_S,
    AdvanceTime,
    Roles,
    gas_cost,
    high_s,
    key_of,
    now,
    signed_voucher,
)
from eth_account.signers.local import LocalAccount

from node.chain.deploy import Deployment
from node.chain.eip712 import sign_voucher
from node.chain.market import SkipReason
from node.chain.registry import ContractInputError, events_in
from node.errors import TransactionReverted
from node.types import Address, Voucher

DEPOSIT = 10 * PRICE


async def test_can_deposit(deployment: Deployment, roles: Roles) -> None:
    market = deployment.market
    first = await market.deposit(DEPOSIT, sender=roles.payer)
    second = await market.deposit(PRICE, sender=roles.payer)
    assert first.balance == DEPOSIT
    assert second.balance == DEPOSIT + PRICE
    account = await market.client_account(roles.payer.address)
    assert account.balance == DEPOSIT + PRICE
    assert account.withdrawal_amount == 0
    assert await market.client.balance(market.address) == DEPOSIT + PRICE


async def test_cannot_deposit_nothing(deployment: Deployment, roles: Roles) -> None:
    market = deployment.market
    with pytest.raises(ContractInputError, match="positive wei amount"):
        await market.deposit(0, sender=roles.payer)
    with pytest.raises(TransactionReverted) as caught:
        await market.client.transact(market.contract.functions.deposit(), sender=roles.payer, value=0)
    assert caught.value.error_name == "ZeroAmount"


async def test_can_redeem_a_cumulative_voucher_once(deployment: Deployment, roles: Roles) -> None:
    market = deployment.market
    provider = roles.provider
    await market.reserve(provider.address, DEPOSIT, deposit=DEPOSIT, sender=roles.payer)
    before = await market.client.balance(provider.address)
    redemption = await market.redeem_vouchers(
        [signed_voucher(market.domain(), roles.payer, provider.address, 3 * PRICE)], sender=provider
    )
    assert redemption.total == 3 * PRICE
    assert redemption.redeemed[0].total_paid == 3 * PRICE
    assert not redemption.skipped
    cost = await gas_cost(market.client, redemption.tx.tx_hash)
    assert await market.client.balance(provider.address) == before + 3 * PRICE - cost
    assert await market.paid(roles.payer.address, provider.address) == 3 * PRICE
    assert (await market.reserve_of(roles.payer.address, provider.address)).amount == DEPOSIT - 3 * PRICE
    # The next voucher pays only the difference; replaying the old one pays nothing.
    later = await market.redeem_vouchers(
        [signed_voucher(market.domain(), roles.payer, provider.address, 5 * PRICE)], sender=provider
    )
    assert later.total == 2 * PRICE
    replayed = await market.redeem_vouchers(
        [signed_voucher(market.domain(), roles.payer, provider.address, 5 * PRICE)], sender=provider
    )
    assert replayed.total == 0
    assert replayed.skipped[0].reason is SkipReason.ALREADY_PAID
    assert await market.paid(roles.payer.address, provider.address) == 5 * PRICE
    assert await market.credited(redemption.tx.block_number) == {provider.address: 5 * PRICE}
    assert await market.credited(later.tx.block_number + 1) == {}


async def test_can_redeem_many_clients_in_one_call(
    deployment: Deployment, roles: Roles, accounts: list[LocalAccount]
) -> None:
    market = deployment.market
    payers = accounts[4:9]
    for payer in payers:
        await market.reserve(roles.provider.address, DEPOSIT, deposit=DEPOSIT, sender=payer)
    batch = [
        signed_voucher(market.domain(), payer, roles.provider.address, (i + 1) * PRICE)
        for i, payer in enumerate(payers)
    ]
    redemption = await market.redeem_vouchers(batch, sender=roles.provider)
    assert redemption.total == sum((i + 1) * PRICE for i in range(len(payers)))
    assert [r.client for r in redemption.redeemed] == [p.address for p in payers]


async def test_can_redeem_what_the_reserve_holds_and_the_rest_after_a_top_up(
    deployment: Deployment, roles: Roles
) -> None:
    market = deployment.market
    provider = roles.provider
    await market.reserve(provider.address, 2 * PRICE, deposit=2 * PRICE, sender=roles.payer)
    voucher = signed_voucher(market.domain(), roles.payer, provider.address, 5 * PRICE)
    partial = await market.redeem_vouchers([voucher], sender=provider)
    assert partial.total == 2 * PRICE
    assert (await market.reserve_of(roles.payer.address, provider.address)).amount == 0
    empty = await market.redeem_vouchers([voucher], sender=provider)
    assert empty.skipped[0].reason is SkipReason.NO_FUNDS
    await market.reserve(provider.address, DEPOSIT, deposit=DEPOSIT, sender=roles.payer)
    rest = await market.redeem_vouchers([voucher], sender=provider)
    assert rest.total == 3 * PRICE
    assert await market.paid(roles.payer.address, provider.address) == 5 * PRICE


@pytest.mark.parametrize(
    "forgery", ["other-signer", "other-chain", "other-contract", "high-s", "v=29", "other-provider"]
)
async def test_cannot_redeem_a_badly_signed_voucher_but_the_batch_goes_on(
    deployment: Deployment, roles: Roles, forgery: str
) -> None:
    market = deployment.market
    provider = roles.provider
    await market.reserve(provider.address, DEPOSIT, deposit=DEPOSIT, sender=roles.payer)
    await market.reserve(provider.address, DEPOSIT, deposit=DEPOSIT, sender=roles.requester)
    voucher = Voucher(
        client=Address(roles.payer.address), provider=Address(provider.address), cumulative_amount=PRICE
    )
    domain = market.domain()
    signer = roles.payer
    if forgery == "other-signer":
        signer = roles.outsider
    elif forgery == "other-chain":
        domain = replace(domain, chain_id=domain.chain_id + 1)
    elif forgery == "other-contract":
        domain = replace(domain, verifying_contract=deployment.registry.address)
    elif forgery == "other-provider":
        # Signed for another provider: the contract hashes msg.sender in, so it cannot match.
        voucher = replace(voucher, provider=Address(roles.other_provider.address))
    signature = sign_voucher(key_of(signer), domain, voucher)
    if forgery == "high-s":
        signature = high_s(signature)
    elif forgery == "v=29":
        signature = signature[:64] + bytes([29])
    good = signed_voucher(market.domain(), roles.requester, provider.address, PRICE)
    entries = [
        (voucher.client, voucher.cumulative_amount, signature),
        (roles.requester.address, PRICE, good[1]),
    ]
    receipt = await market.client.transact(market.contract.functions.redeemVouchers(entries), sender=provider)
    skipped = events_in(market.contract.events.VoucherSkipped(), receipt)
    assert [(e["args"]["client"], SkipReason(e["args"]["reason"])) for e in skipped] == [
        (roles.payer.address, SkipReason.BAD_SIGNATURE)
    ]
    assert await market.paid(roles.payer.address, provider.address) == 0
    assert (await market.reserve_of(roles.payer.address, provider.address)).amount == DEPOSIT
    assert await market.paid(roles.requester.address, provider.address) == PRICE


async def test_cannot_redeem_through_the_wrapper_for_another_provider(
    deployment: Deployment, roles: Roles
) -> None:
    market = deployment.market
    voucher = signed_voucher(market.domain(), roles.payer, roles.other_provider.address, PRICE)
    with pytest.raises(ContractInputError, match="cannot be redeemed by"):
        await market.redeem_vouchers([voucher], sender=roles.provider)
    with pytest.raises(ContractInputError, match="at least one voucher"):
        await market.redeem_vouchers([], sender=roles.provider)


async def test_can_request_a_withdrawal_and_withdraw_after_the_delay(
    deployment: Deployment, roles: Roles, advance_time: AdvanceTime
) -> None:
    market = deployment.market
    await market.deposit(DEPOSIT, sender=roles.payer)
    requested = await market.request_withdrawal(4 * PRICE, sender=roles.payer)
    assert requested.withdrawable_at == await now(market.client) + WITHDRAWAL_DELAY_S
    account = await market.client_account(roles.payer.address)
    assert account.withdrawal_amount == 4 * PRICE
    assert account.withdrawable_at == requested.withdrawable_at
    await advance_time(market.client, WITHDRAWAL_DELAY_S)
    before = await market.client.balance(roles.payer.address)
    withdrawn = await market.withdraw(sender=roles.payer)
    assert withdrawn.amount == 4 * PRICE
    cost = await gas_cost(market.client, withdrawn.tx.tx_hash)
    assert await market.client.balance(roles.payer.address) == before + 4 * PRICE - cost
    account = await market.client_account(roles.payer.address)
    assert account.balance == DEPOSIT - 4 * PRICE
    assert account.withdrawal_amount == 0


async def test_can_redeem_during_the_release_delay(
    deployment: Deployment, roles: Roles, advance_time: AdvanceTime
) -> None:
    market = deployment.market
    provider = roles.provider.address
    await market.reserve(provider, DEPOSIT, deposit=DEPOSIT, sender=roles.payer)
    requested = await market.request_release(provider, DEPOSIT, sender=roles.payer)
    assert requested.releasable_at == await now(market.client) + WITHDRAWAL_DELAY_S
    # Admission sees the release at once: nothing is left to count on for new vouchers.
    assert await market.reserved(roles.payer.address, provider) == 0
    voucher = signed_voucher(market.domain(), roles.payer, provider, 3 * PRICE)
    assert (await market.redeem_vouchers([voucher], sender=roles.provider)).total == 3 * PRICE
    await advance_time(market.client, WITHDRAWAL_DELAY_S)
    released = await market.release(provider, sender=roles.payer)
    assert released.amount == DEPOSIT - 3 * PRICE
    assert released.reserve == 0
    await market.request_withdrawal(DEPOSIT - 3 * PRICE, sender=roles.payer)
    await advance_time(market.client, WITHDRAWAL_DELAY_S)
    withdrawn = await market.withdraw(sender=roles.payer)
    assert withdrawn.amount == DEPOSIT - 3 * PRICE
    assert await market.client.balance(market.address) == 0


async def test_cannot_withdraw_early_unrequested_or_more_than_deposited(
    deployment: Deployment, roles: Roles, advance_time: AdvanceTime
) -> None:
    market = deployment.market
    await market.deposit(DEPOSIT, sender=roles.payer)
    with pytest.raises(TransactionReverted) as unrequested:
        await market.withdraw(sender=roles.payer)
    assert unrequested.value.error_name == "NoWithdrawalRequested"
    with pytest.raises(TransactionReverted) as too_much:
        await market.request_withdrawal(DEPOSIT + 1, sender=roles.payer)
    assert too_much.value.error_name == "InsufficientDeposit"
    assert too_much.value.error_args == (DEPOSIT + 1, DEPOSIT)
    with pytest.raises(TransactionReverted) as zero:
        await market.client.transact(market.contract.functions.requestWithdrawal(0), sender=roles.payer)
    assert zero.value.error_name == "ZeroAmount"
    await market.request_withdrawal(PRICE, sender=roles.payer)
    await advance_time(market.client, WITHDRAWAL_DELAY_S // 2)
    with pytest.raises(TransactionReverted) as early:
        await market.withdraw(sender=roles.payer)
    assert early.value.error_name == "WithdrawalNotReady"
    assert (await market.client_account(roles.payer.address)).balance == DEPOSIT
    assert await market.client.balance(market.address) == DEPOSIT
