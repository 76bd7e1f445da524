"""When vouchers are redeemed: enough owed, enough vouchers, or a client about to withdraw."""

from __future__ import annotations

from node.settlement.policy import RedemptionPolicy, due_vouchers
from node.storage import StoredVoucher
from node.types import Address, Voucher

PROVIDER = Address("0x70997970C51812dc3A010C7d01b50e0d17dc79C8")
POLICY = RedemptionPolicy(min_amount_wei=1000, min_vouchers=3)


def owed(client_byte: int, amount: int, redeemed: int = 0) -> StoredVoucher:
    client = Address("0x" + f"{client_byte:02x}" * 20)
    return StoredVoucher(Voucher(client, PROVIDER, amount), b"\x00" * 65, redeemed, 0.0)


def test_cannot_redeem_while_too_little_is_owed() -> None:
    assert due_vouchers([owed(1, 100), owed(2, 200)], withdrawals={}, policy=POLICY) == ()
    assert due_vouchers([], withdrawals={}, policy=POLICY, force=True) == ()


def test_can_redeem_once_enough_is_owed_or_enough_vouchers_wait() -> None:
    big = [owed(1, 900), owed(2, 300, redeemed=100)]
    assert len(due_vouchers(big, withdrawals={}, policy=POLICY)) == 2
    many = [owed(1, 1), owed(2, 1), owed(3, 1)]
    assert len(due_vouchers(many, withdrawals={}, policy=POLICY)) == 3


def test_can_redeem_as_soon_as_a_client_asks_to_withdraw() -> None:
    few = [owed(1, 10), owed(2, 10)]
    client = few[0].voucher.client
    assert due_vouchers(few, withdrawals={client: 0}, policy=POLICY) == ()
    assert len(due_vouchers(few, withdrawals={client: 4600}, policy=POLICY)) == 2
    assert len(due_vouchers(few, withdrawals={}, policy=POLICY, force=True)) == 2
