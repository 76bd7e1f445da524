"""Client-side payments: cumulative vouchers that never pay a failed attempt on top of a later
one, and escrow terms that a restarted node rebuilds to the same on-chain id."""

from __future__ import annotations

from node.chain.eip712 import Eip712Domain, recover_voucher_signer
from node.chain.keys import NodeKey
from node.client.payments import VoucherBook
from node.domain.state import JobStatus, PaymentPath, Role
from node.settlement.terms import escrow_salt, escrow_terms, receipt_job_id
from node.storage import JobRecord
from node.types import Address, Hash32

DOMAIN = Eip712Domain(chain_id=31337, verifying_contract="0x5FbDB2315678afecb367f032d93F642f64180aa3")
PROVIDER = Address("0x70997970C51812dc3A010C7d01b50e0d17dc79C8")
OTHER = Address("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC")


def book() -> tuple[VoucherBook, NodeKey]:
    key = NodeKey.generate()
    return VoucherBook(key.address, key.private_key, DOMAIN), key


def record(payment: PaymentPath, job_id: bytes = b"\x07" * 32) -> JobRecord:
    return JobRecord(
        job_id=Hash32(job_id),
        model_id=Hash32(b"\x01" * 32),
        input_hash=Hash32(b"\x02" * 32),
        price_wei=10**15,
        client=None,
        deadline=None,
        status=JobStatus.initial(Role.CLIENT, payment),
        version=1,
        created_at=0.0,
        updated_at=0.0,
    )


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


def test_can_rebuild_the_same_escrow_id_per_attempt() -> None:
    client = Address("0xE57bFE9F44b819898F47BF37E5AF72a0783e1141")
    job = record(PaymentPath.ESCROW)
    ids = {escrow_terms(client, job, attempt).job_id for attempt in range(3)}
    assert len(ids) == 3
    assert escrow_terms(client, job, 1).job_id == escrow_terms(client, job, 1).job_id
    assert escrow_salt(job.job_id, 1) != escrow_salt(Hash32(b"\x08" * 32), 1)
    assert receipt_job_id(client, job, 0) == escrow_terms(client, job, 0).job_id
    assert receipt_job_id(client, record(PaymentPath.VOUCHER), 0) == job.job_id
