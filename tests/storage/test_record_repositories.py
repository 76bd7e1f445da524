"""Receipts, vouchers, known providers and chain cursors, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import os
import threading

import pytest

from node.domain.state import PaymentPath, Role
from node.storage import Database, NewJob
from node.storage.errors import (
    ConflictingReceipt,
    InvalidRecord,
    RecordNotFound,
    StaleVoucher,
    UnknownJob,
    UnknownProvider,
)
from node.types import Address, Hash32, ResultReceipt, Voucher

PROVIDER = Address("0x" + "Ab" * 20)
CLIENT = Address("0x" + "cD" * 20)
SIG = b"\x11" * 64 + b"\x1b"


def _stored_job(db: Database) -> Hash32:
    job_id = Hash32(os.urandom(32))
    db.jobs.create(
        NewJob(
            job_id=job_id,
            role=Role.CLIENT,
            payment=PaymentPath.VOUCHER,
            model_id=Hash32(b"\x01" * 32),
            input_hash=Hash32(b"\x02" * 32),
            price_wei=10,
        )
    )
    return job_id


def _receipt(job_id: Hash32, output: bytes = b"\x03" * 32) -> ResultReceipt:
    return ResultReceipt(
        job_id=job_id,
        model_id=Hash32(b"\x01" * 32),
        input_hash=Hash32(b"\x02" * 32),
        output_hash=Hash32(output),
        profile_hash=Hash32(b"\x04" * 32),
        provider=PROVIDER,
    )


# Receipts ------------------------------------------------------------------------------------


def test_can_store_a_receipt_once(db: Database) -> None:
    job_id = _stored_job(db)
    stored = db.receipts.save(_receipt(job_id), SIG)
    assert stored.receipt.provider == "0xABaBaBaBABabABabAbAbABAbABabababaBaBABaB"
    assert db.receipts.save(_receipt(job_id), SIG) == stored
    assert db.receipts.get(job_id, stored.receipt.provider) == stored
    assert db.receipts.for_job(job_id) == (stored,)


def test_cannot_store_a_second_different_receipt_from_one_provider(db: Database) -> None:
    job_id = _stored_job(db)
    first = db.receipts.save(_receipt(job_id), SIG)
    with pytest.raises(ConflictingReceipt, match="equivocation"):
        db.receipts.save(_receipt(job_id, output=b"\x05" * 32), SIG)
    assert db.receipts.for_job(job_id) == (first,)


def test_cannot_store_a_receipt_for_an_unknown_job(db: Database) -> None:
    with pytest.raises(UnknownJob, match="store the job before its receipt"):
        db.receipts.save(_receipt(Hash32(b"\x07" * 32)), SIG)


@pytest.mark.parametrize(
    ("receipt_change", "signature", "message"),
    [
        ({}, b"\x00" * 64, "signature must be 65 bytes"),
        ({"output_hash": b"\x00" * 31}, SIG, "output_hash must be 32 bytes"),
        ({"provider": "0xnothex"}, SIG, "provider must be a 0x-prefixed"),
    ],
)
def test_cannot_store_a_malformed_receipt(
    db: Database, receipt_change: dict[str, object], signature: bytes, message: str
) -> None:
    job_id = _stored_job(db)
    with pytest.raises(InvalidRecord, match=message):
        db.receipts.save(dataclasses.replace(_receipt(job_id), **receipt_change), signature)  # type: ignore[arg-type]
    assert db.receipts.for_job(job_id) == ()


# Vouchers ------------------------------------------------------------------------------------


def test_can_keep_the_latest_voucher_and_redeem_it(db: Database) -> None:
    first = db.vouchers.record(Voucher(CLIENT, PROVIDER, 100), SIG)
    assert first.unredeemed_wei == 100
    raised = db.vouchers.record(Voucher(CLIENT.lower(), PROVIDER.lower(), 2**255), SIG[:-1] + b"\x1c")
    assert raised.voucher.cumulative_amount == 2**255
    assert raised.signature[-1] == 0x1C
    assert db.vouchers.unredeemed() == (raised,)
    redeemed = db.vouchers.mark_redeemed(CLIENT, PROVIDER, 2**255)
    assert redeemed.unredeemed_wei == 0
    assert db.vouchers.unredeemed(provider=PROVIDER) == ()
    assert db.vouchers.get(CLIENT, PROVIDER) == redeemed


def test_cannot_lower_a_voucher(db: Database) -> None:
    kept = db.vouchers.record(Voucher(CLIENT, PROVIDER, 100), SIG)
    assert db.vouchers.record(Voucher(CLIENT, PROVIDER, 100), SIG) == kept
    for amount in (100, 99):
        with pytest.raises(StaleVoucher, match="does not exceed the stored 100 wei"):
            db.vouchers.record(Voucher(CLIENT, PROVIDER, amount), SIG[:-1] + b"\x1c")
    assert db.vouchers.get(CLIENT, PROVIDER) == kept


def test_cannot_redeem_more_than_a_voucher_covers_or_go_back(db: Database) -> None:
    db.vouchers.record(Voucher(CLIENT, PROVIDER, 100), SIG)
    with pytest.raises(InvalidRecord, match="covers only 100 wei"):
        db.vouchers.mark_redeemed(CLIENT, PROVIDER, 101)
    db.vouchers.mark_redeemed(CLIENT, PROVIDER, 60)
    with pytest.raises(InvalidRecord, match="cannot lower the redeemed amount"):
        db.vouchers.mark_redeemed(CLIENT, PROVIDER, 59)
    with pytest.raises(RecordNotFound):
        db.vouchers.mark_redeemed(PROVIDER, CLIENT, 1)
    stored = db.vouchers.get(CLIENT, PROVIDER)
    assert stored is not None
    assert stored.redeemed_wei == 60


@pytest.mark.parametrize(
    ("voucher", "signature", "message"),
    [
        (Voucher(CLIENT, PROVIDER, -5), SIG, "cumulative_amount must be a whole number"),
        (Voucher(CLIENT, Address("bob"), 5), SIG, "provider must be a 0x-prefixed"),
        (Voucher(CLIENT, PROVIDER, 5), b"", "signature must be 65 bytes"),
    ],
)
def test_cannot_record_a_malformed_voucher(
    db: Database, voucher: Voucher, signature: bytes, message: str
) -> None:
    with pytest.raises(InvalidRecord, match=message):
        db.vouchers.record(voucher, signature)
    assert db.vouchers.unredeemed() == ()


def test_concurrent_vouchers_never_lower_the_amount(database_url: str) -> None:
    handles = [Database.open(database_url) for _ in range(4)]
    try:
        barrier = threading.Barrier(8)
        unexpected: list[Exception] = []

        def send(amount: int) -> None:
            barrier.wait()
            try:
                handles[amount % 4].vouchers.record(Voucher(CLIENT, PROVIDER, amount), SIG)
            except StaleVoucher:
                return  # a higher voucher got in first, as it may
            except Exception as exc:
                unexpected.append(exc)

        threads = [threading.Thread(target=send, args=(amount,)) for amount in range(1, 9)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert unexpected == []
        stored = handles[0].vouchers.get(CLIENT, PROVIDER)
        assert stored is not None
        assert stored.voucher.cumulative_amount == 8
    finally:
        for h in handles:
            h.close()


# Known providers -----------------------------------------------------------------------------


def test_can_remember_a_provider_and_how_it_served(db: Database) -> None:
    seen = db.providers.seen(PROVIDER, "16Uiu2HAm-peer", {"models": ["m"], "price": "10"})
    assert (seen.successes, seen.failures, seen.latency_ms, seen.backoff_until) == (0, 0, None, 0.0)
    db.providers.record_failure(PROVIDER, backoff_until=5_000.0)
    failed = db.providers.record_failure(PROVIDER, backoff_until=4_000.0)
    assert (failed.failures, failed.consecutive_failures, failed.backoff_until) == (2, 2, 5_000.0)
    db.providers.record_success(PROVIDER, latency_ms=100.0)
    ok = db.providers.record_success(PROVIDER, latency_ms=200.0)
    assert ok.latency_ms == pytest.approx(120.0)
    assert (ok.successes, ok.failures, ok.consecutive_failures, ok.backoff_until) == (2, 2, 0, 0.0)
    again = db.providers.seen(PROVIDER.lower(), "16Uiu2HAm-peer2", {"models": []})
    assert (again.peer_id, again.advert, again.successes) == ("16Uiu2HAm-peer2", {"models": []}, 2)
    assert db.providers.all() == (again,)
    assert db.providers.get(PROVIDER) == again


def test_cannot_record_outcomes_of_an_unknown_provider(db: Database) -> None:
    with pytest.raises(UnknownProvider, match="once its advert has been seen"):
        db.providers.record_success(PROVIDER, latency_ms=1.0)
    with pytest.raises(UnknownProvider):
        db.providers.record_failure(PROVIDER, backoff_until=1.0)
    assert db.providers.all() == ()


def test_cannot_store_a_malformed_provider(db: Database) -> None:
    with pytest.raises(InvalidRecord, match="peer id"):
        db.providers.seen(PROVIDER, "", {})
    db.providers.seen(PROVIDER, "peer", {})
    with pytest.raises(InvalidRecord, match="latency"):
        db.providers.record_success(PROVIDER, latency_ms=float("nan"))
    known = db.providers.get(PROVIDER)
    assert known is not None
    assert known.successes == 0


# Chain cursors -------------------------------------------------------------------------------


def test_can_save_and_load_a_chain_cursor(db: Database) -> None:
    assert db.cursors.load("market") is None
    db.cursors.save("market", 12)
    db.cursors.save("market", 2**40)
    db.cursors.save("registry", 3)
    assert db.cursors.load("market") == 2**40
    db.cursors.save("market", 10)
    assert db.cursors.load("market") == 10
    assert db.cursors.load("registry") == 3


@pytest.mark.parametrize(("name", "block"), [("market", -1), ("", 5), ("market", True), ("x" * 65, 1)])
def test_cannot_save_a_malformed_cursor(db: Database, name: str, block: int) -> None:
    db.cursors.save("market", 7)
    with pytest.raises(InvalidRecord):
        db.cursors.save(name, block)
    assert db.cursors.load("market") == 7


def test_records_survive_a_restart(database_url: str) -> None:
    with Database.open(database_url) as db:
        job_id = _stored_job(db)
        receipt = db.receipts.save(_receipt(job_id), SIG)
        voucher = db.vouchers.record(Voucher(CLIENT, PROVIDER, 100), SIG)
        provider = db.providers.record_failure(
            db.providers.seen(PROVIDER, "p", {}).address, backoff_until=9.0
        )
        db.cursors.save("market", 42)
    with Database.open(database_url) as db:
        assert db.receipts.get(job_id, PROVIDER) == receipt
        assert db.vouchers.get(CLIENT, PROVIDER) == voucher
        assert db.providers.get(PROVIDER) == provider
        assert db.cursors.load("market") == 42
