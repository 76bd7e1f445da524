"""Client-side payments: cumulative vouchers that never pay a failed attempt on top of a later
one."""

from __future__ import annotations

from node.chain.eip712 import Eip712Domain, recover_voucher_signer
from node.chain.keys import NodeKey
from node.client.payments import VoucherBook
from node.types import Address

DOMAIN = Eip712Domain(chain_id=31337, verifying_contract="0x5FbDB2315678afecb367f032d93F642f64180aa3")
PROVIDER = Address("0x70997970C51812dc3A010C7d01b50e0d17dc79C8")
OTHER = Address("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC")


def book() -> tuple[VoucherBook, NodeKey]:
    key = NodeKey.generate()
    return VoucherBook(key.address, key.private_key, DOMAIN), key


def test_can_sign_vouchers_that_add_up_per_provider() -> None:
    vouchers, key = book()
    first = vouchers.next_voucher(PROVIDER, 100)
    vouchers.committed(first, 100)
    second = vouchers.next_voucher(PROVIDER, 50)
    vouchers.committed(second, 50)
    elsewhere = vouchers.next_voucher(OTHER, 70)
    assert (first.voucher.cumulative_amount, second.voucher.cumulative_amount) == (100, 150)
    assert elsewhere.voucher.cumulative_amount == 70
    assert recover_voucher_signer(DOMAIN, second.voucher, second.signature) == key.address
    assert vouchers.total_promised() == 150


def test_cannot_pay_a_failed_attempt_on_top_of_the_next_job() -> None:
    vouchers, _ = book()
    lost = vouchers.next_voucher(PROVIDER, 100)
    vouchers.committed(lost, 100)
    vouchers.released(PROVIDER, 100)
    # The signed 100 already covers the next job of 80: nothing new is promised.
    reused = vouchers.next_voucher(PROVIDER, 80)
    assert reused.voucher.cumulative_amount == 100
    vouchers.committed(reused, 80)
    # The one after needs 80 + 60 = 140.
    assert vouchers.next_voucher(PROVIDER, 60).voucher.cumulative_amount == 140


def test_can_continue_from_stored_amounts_after_a_restart() -> None:
    vouchers, _ = book()
    vouchers.load({PROVIDER: 500})
    assert vouchers.next_voucher(PROVIDER, 10).voucher.cumulative_amount == 510
    assert vouchers.total_promised() == 500
