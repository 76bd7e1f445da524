"""The job repository, on SQLite and PostgreSQL: transitions, history, concurrency, restart, bad input."""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable

import pytest
from eth_utils.address import to_checksum_address

from node.domain.state import (
    Attempt,
    AttemptOutcome,
    Cancelled,
    JobEvent,
    JobState,
    JobTransitionError,
    Matched,
    PaymentMade,
    PaymentPath,
    ProviderLost,
    ResultReceived,
    ResultSigned,
    ResultVerified,
    Role,
    Sent,
    Settled,
    Started,
)
from node.storage import Database, NewJob, SignedReceipt, SignedVoucher
from node.storage.errors import (
    ConflictingReceipt,
    DuplicateRecord,
    InvalidRecord,
    StaleJobVersion,
    StaleVoucher,
    UnknownJob,
)
from node.types import Address, Hash32, ResultReceipt, Voucher

# Checksummed, as node.types.Address is and as storage writes addresses.
PROVIDER_A = Address(to_checksum_address("0x" + "a1" * 20))
PROVIDER_B = Address(to_checksum_address("0x" + "b2" * 20))
CLIENT = Address("0x1111111111111111111111111111111111111111")


def new_job(
    job_id: bytes | None = None, *, role: Role = Role.CLIENT, payment: PaymentPath = PaymentPath.VOUCHER
) -> NewJob:
    return NewJob(
        job_id=Hash32(job_id or os.urandom(32)),
        role=role,
        payment=payment,
        model_id=Hash32(b"\x01" * 32),
        input_hash=Hash32(b"\x02" * 32),
        price_wei=2**256 - 1,
        client=CLIENT,
        deadline=1_900_000_000.5,
    )


def test_can_store_and_read_back_a_job(db: Database) -> None:
    job = new_job()
    stored = db.jobs.create(job)
    assert stored.state == JobState.SUBMITTED
    assert stored.version == 1
    read = db.jobs.get(job.job_id)
    assert read == stored
    assert (read.price_wei, read.client, read.deadline) == (2**256 - 1, CLIENT, 1_900_000_000.5)
    assert db.jobs.history(job.job_id) == ()


def test_can_walk_a_client_job_to_settlement_with_its_history(db: Database) -> None:
    job = db.jobs.create(new_job())
    events: list[JobEvent] = [
        Matched(provider=PROVIDER_A),
        PaymentMade(),
        Sent(),
        Started(),
        ResultReceived(),
        ResultVerified(),
        Settled(),
    ]
    for version, event in enumerate(events, start=1):
        job = db.jobs.apply(job.job_id, event, expected_version=version)
        assert job.version == version + 1
    assert job.state == JobState.SETTLED
    assert job.status.attempts == (Attempt(PROVIDER_A, paid=True, outcome=AttemptOutcome.COMPLETED),)
    history = db.jobs.history(job.job_id)
    assert [h.event for h in history] == events
    assert [h.seq for h in history] == list(range(2, 9))
    assert [h.to_state for h in history][-2:] == [JobState.VERIFIED, JobState.SETTLED]
    assert history[0].from_state == JobState.SUBMITTED


def test_can_reassign_a_job_and_keep_every_attempt(db: Database) -> None:
    job = db.jobs.create(new_job(payment=PaymentPath.ESCROW))
    for event in (
        Matched(provider=PROVIDER_A, price_wei=2**200),
        PaymentMade(),
        Sent(),
        ProviderLost(AttemptOutcome.DIED, "reset"),
    ):
        job = db.jobs.apply(job.job_id, event)
    job = db.jobs.apply(job.job_id, Matched(provider=PROVIDER_B))
    # Each attempt keeps the price it was matched at, so a restarted client pays what it agreed.
    assert db.jobs.get(job.job_id).status.attempts == (
        Attempt(PROVIDER_A, paid=True, outcome=AttemptOutcome.DIED, price_wei=2**200),
        Attempt(PROVIDER_B),
    )
    history = db.jobs.history(job.job_id)
    assert history[0].event == Matched(provider=PROVIDER_A, price_wei=2**200)
    assert history[3].event == ProviderLost(AttemptOutcome.DIED, "reset")


def test_can_walk_a_provider_job(db: Database) -> None:
    job = db.jobs.create(new_job(role=Role.PROVIDER))
    assert job.state == JobState.ACCEPTED
    job = db.jobs.apply(job.job_id, Started())
    assert job.state == JobState.RUNNING
    assert db.jobs.live(Role.PROVIDER) == (job,)
    assert db.jobs.live(Role.CLIENT) == ()


def test_can_list_jobs_by_role_and_state(db: Database) -> None:
    a = db.jobs.create(new_job())
    b = db.jobs.create(new_job())
    db.jobs.create(new_job(role=Role.PROVIDER))
    b = db.jobs.apply(b.job_id, Cancelled())
    assert {j.job_id for j in db.jobs.list(role=Role.CLIENT)} == {a.job_id, b.job_id}
    assert db.jobs.list(states=[JobState.CANCELLED]) == (b,)
    assert db.jobs.live(Role.CLIENT) == (a,)
    assert len(db.jobs.list(limit=2)) == 2


def test_cannot_move_an_unknown_job(db: Database) -> None:
    with pytest.raises(UnknownJob, match="no job"):
        db.jobs.apply(Hash32(b"\x09" * 32), Matched(provider=PROVIDER_A))
    with pytest.raises(UnknownJob):
        db.jobs.get(Hash32(b"\x09" * 32))
    with pytest.raises(UnknownJob):
        db.jobs.history(Hash32(b"\x09" * 32))
    assert db.jobs.list() == ()


def test_cannot_make_an_illegal_transition_and_nothing_is_written(db: Database) -> None:
    job = db.jobs.create(new_job())
    job = db.jobs.apply(job.job_id, Matched(provider=PROVIDER_A))
    with pytest.raises(JobTransitionError, match="settles only after its result is verified"):
        db.jobs.apply(job.job_id, Settled())
    db.jobs.apply(job.job_id, ProviderLost(AttemptOutcome.TIMED_OUT))
    with pytest.raises(JobTransitionError, match="already had a try"):
        db.jobs.apply(job.job_id, Matched(provider=PROVIDER_A))
    after = db.jobs.get(job.job_id)
    assert after.state == JobState.SUBMITTED
    assert len(db.jobs.history(job.job_id)) == 2


def test_cannot_cancel_a_finished_job(db: Database) -> None:
    job = db.jobs.create(new_job())
    job = db.jobs.apply(job.job_id, Cancelled())
    with pytest.raises(JobTransitionError, match="already cancelled"):
        db.jobs.apply(job.job_id, Cancelled())
    assert db.jobs.get(job.job_id) == job


def test_cannot_store_a_job_twice(db: Database) -> None:
    job = new_job()
    first = db.jobs.create(job)
    with pytest.raises(DuplicateRecord, match="already stored"):
        db.jobs.create(new_job(job.job_id, role=Role.PROVIDER))
    assert db.jobs.get(job.job_id) == first


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"job_id": b"short"}, "job_id must be 32 bytes"),
        ({"model_id": "not bytes"}, "model_id must be 32 bytes"),
        ({"price_wei": -1}, "price_wei must be a whole number"),
        ({"price_wei": 2**256}, "price_wei must be a whole number"),
        ({"client": "0x1234"}, "client must be a 0x-prefixed"),
        ({"role": "client"}, "must be a Role"),
    ],
)
def test_cannot_store_a_malformed_job(db: Database, change: dict[str, object], message: str) -> None:
    bad = dataclasses.replace(new_job(), **change)  # type: ignore[arg-type]
    with pytest.raises(InvalidRecord, match=message):
        db.jobs.create(bad)
    assert db.jobs.list() == ()


def test_cannot_match_a_job_to_something_that_is_not_an_address(db: Database) -> None:
    job = db.jobs.create(new_job())
    with pytest.raises(InvalidRecord, match="provider must be a 0x-prefixed"):
        db.jobs.apply(job.job_id, Matched(provider=Address("bob")))
    assert db.jobs.get(job.job_id) == job


def test_cannot_match_one_provider_twice_under_another_spelling(db: Database) -> None:
    job = db.jobs.create(new_job())
    db.jobs.apply(job.job_id, Matched(provider=PROVIDER_A))
    db.jobs.apply(job.job_id, ProviderLost(AttemptOutcome.REJECTED))
    with pytest.raises(JobTransitionError, match="already had a try"):
        db.jobs.apply(job.job_id, Matched(provider=Address(PROVIDER_A.lower())))


def test_cannot_move_a_job_from_a_stale_version(db: Database) -> None:
    job = db.jobs.create(new_job())
    db.jobs.apply(job.job_id, Matched(provider=PROVIDER_A), expected_version=1)
    with pytest.raises(StaleJobVersion, match="since version 1"):
        db.jobs.apply(job.job_id, Cancelled(), expected_version=1)
    assert db.jobs.get(job.job_id).state == JobState.MATCHED


def _race(writers: list[Callable[[], object]]) -> list[object]:
    """Run the writers at once; return each one's result or exception."""
    barrier = threading.Barrier(len(writers))
    results: list[object] = [None] * len(writers)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = writers[i]()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(writers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_two_writers_cannot_both_move_one_job(database_url: str) -> None:
    first, second = Database.open(database_url), Database.open(database_url)
    try:
        for _ in range(5):
            job = first.jobs.create(new_job())
            results = _race(
                [
                    lambda j=job.job_id: first.jobs.apply(
                        j, Matched(provider=PROVIDER_A), expected_version=1
                    ),
                    lambda j=job.job_id: second.jobs.apply(j, Cancelled(), expected_version=1),
                ]
            )
            errors = [r for r in results if isinstance(r, Exception)]
            assert len(errors) == 1, results
            assert isinstance(errors[0], StaleJobVersion)
            assert len(first.jobs.history(job.job_id)) == 1
            assert first.jobs.get(job.job_id).version == 2
    finally:
        first.close()
        second.close()


def test_concurrent_writers_without_a_version_are_serialised(database_url: str) -> None:
    handles = [Database.open(database_url) for _ in range(4)]
    try:
        job = handles[0].jobs.create(new_job())
        providers = [Address(f"0x{i:040x}") for i in range(1, 9)]
        results = _race(
            [
                (lambda h=handles[i % 4], p=p: h.jobs.apply(job.job_id, Matched(provider=p)))
                for i, p in enumerate(providers)
            ]
        )
        winners = [r for r in results if not isinstance(r, Exception)]
        losers = [r for r in results if isinstance(r, Exception)]
        assert len(winners) == 1, results
        assert all(isinstance(e, JobTransitionError) for e in losers), losers
        stored = handles[0].jobs.get(job.job_id)
        assert stored.version == 2
        assert len(stored.status.attempts) == 1
        assert len(handles[0].jobs.history(job.job_id)) == 1
    finally:
        for h in handles:
            h.close()


def test_can_recover_every_job_after_a_restart(database_url: str) -> None:
    with Database.open(database_url) as db:
        job = db.jobs.create(new_job(payment=PaymentPath.ESCROW))
        for event in (Matched(provider=PROVIDER_A), PaymentMade(), Sent()):
            job = db.jobs.apply(job.job_id, event)
        done = db.jobs.create(new_job())
        db.jobs.apply(done.job_id, Cancelled())
    with Database.open(database_url) as reopened:
        assert reopened.jobs.get(job.job_id) == job
        assert reopened.jobs.live(Role.CLIENT) == (job,)
        assert [h.event for h in reopened.jobs.history(job.job_id)] == [
            Matched(provider=PROVIDER_A),
            PaymentMade(),
            Sent(),
        ]
        moved = reopened.jobs.apply(job.job_id, Started(), expected_version=job.version)
        assert moved.state == JobState.RUNNING


async def test_can_call_the_repositories_off_the_event_loop(db: Database) -> None:
    job = await db.run(db.jobs.create, new_job())
    moved = await db.run(db.jobs.apply, job.job_id, Matched(provider=PROVIDER_A), expected_version=1)
    assert moved.state == JobState.MATCHED
    assert await db.run(db.jobs.get, job.job_id) == moved


@pytest.mark.parametrize("job_id", [b"", b"\x01" * 31, "ab" * 32])
def test_cannot_look_up_a_malformed_job_id(db: Database, job_id: bytes) -> None:
    for lookup in (db.jobs.get, db.jobs.find, db.jobs.history, db.receipts.for_job):
        with pytest.raises(InvalidRecord, match="job id must be 32 bytes"):
            lookup(Hash32(job_id))
    with pytest.raises(InvalidRecord, match="job id must be 32 bytes"):
        db.jobs.apply(Hash32(job_id), Cancelled())


SIG = b"\x22" * 64 + b"\x1b"


def _receipt_for(job_id: Hash32, output: bytes = b"\x03" * 32) -> SignedReceipt:
    receipt = ResultReceipt(
        job_id=job_id,
        model_id=Hash32(b"\x01" * 32),
        input_hash=Hash32(b"\x02" * 32),
        output_hash=Hash32(output),
        profile_hash=Hash32(b"\x04" * 32),
        provider=PROVIDER_A,
    )
    return SignedReceipt(receipt, SIG)


def test_can_sign_a_result_and_store_its_receipt_in_one_step(database_url: str) -> None:
    with Database.open(database_url) as db:
        job = db.jobs.create(new_job(role=Role.PROVIDER))
        db.jobs.apply(job.job_id, Started())
        signed = db.jobs.apply(job.job_id, ResultSigned(), receipt=_receipt_for(job.job_id))
    with Database.open(database_url) as db:
        assert db.jobs.get(job.job_id) == signed
        assert signed.state == JobState.SIGNED
        stored = db.receipts.get(job.job_id, PROVIDER_A)
        assert stored is not None
        assert stored.receipt == _receipt_for(job.job_id).receipt
        assert stored.signature == SIG


def test_cannot_move_a_job_when_its_attached_receipt_conflicts(db: Database) -> None:
    job = db.jobs.create(new_job(role=Role.PROVIDER))
    db.receipts.save(_receipt_for(job.job_id).receipt, SIG)
    running = db.jobs.apply(job.job_id, Started())
    with pytest.raises(ConflictingReceipt, match="equivocation"):
        db.jobs.apply(job.job_id, ResultSigned(), receipt=_receipt_for(job.job_id, output=b"\x09" * 32))
    assert db.jobs.get(job.job_id) == running
    assert len(db.jobs.history(job.job_id)) == 1


def test_cannot_attach_the_receipt_of_another_job(db: Database) -> None:
    job = db.jobs.create(new_job(role=Role.PROVIDER))
    running = db.jobs.apply(job.job_id, Started())
    with pytest.raises(InvalidRecord, match="the receipt is for job"):
        db.jobs.apply(job.job_id, ResultSigned(), receipt=_receipt_for(Hash32(b"\x05" * 32)))
    assert db.jobs.get(job.job_id) == running
    assert db.receipts.for_job(job.job_id) == ()


def test_can_keep_a_receipt_that_signs_another_id_only_when_told_which(db: Database) -> None:
    """A client's voucher job is signed in the voucher namespace: the receipt is kept under the
    client's job and reads back with the id it signs."""
    job = db.jobs.create(new_job())
    db.jobs.apply(job.job_id, Matched(provider=PROVIDER_A))
    running = db.jobs.apply_many(job.job_id, (PaymentMade(), Sent(), Started()))[-1]
    signed_id = Hash32(b"\x09" * 32)
    with pytest.raises(InvalidRecord, match="the receipt is for job"):
        db.jobs.apply(job.job_id, ResultReceived(), receipt=_receipt_for(signed_id))
    signed = _receipt_for(signed_id)
    db.jobs.apply_many(job.job_id, (ResultReceived(),), receipt=signed, receipt_signs=signed_id)
    stored = db.receipts.get(job.job_id, PROVIDER_A)
    assert stored is not None
    assert stored.receipt.job_id == signed_id
    assert db.receipts.get(signed_id, PROVIDER_A) is None
    assert running.version + 1 == db.jobs.get(job.job_id).version


def test_can_pay_a_job_and_store_its_voucher_in_one_step(db: Database) -> None:
    job = db.jobs.create(new_job())
    db.jobs.apply(job.job_id, Matched(provider=PROVIDER_A))
    voucher = Voucher(CLIENT, PROVIDER_A, 500)
    paid = db.jobs.apply(job.job_id, PaymentMade(), voucher=SignedVoucher(voucher, SIG))
    assert paid.state == JobState.PAID
    stored = db.vouchers.get(CLIENT, PROVIDER_A)
    assert stored is not None
    assert stored.voucher == Voucher(to_checksum_address(CLIENT), to_checksum_address(PROVIDER_A), 500)


def test_cannot_pay_a_job_with_a_voucher_that_does_not_raise_the_amount(db: Database) -> None:
    kept = db.vouchers.record(Voucher(CLIENT, PROVIDER_A, 500), SIG)
    job = db.jobs.create(new_job())
    matched = db.jobs.apply(job.job_id, Matched(provider=PROVIDER_A))
    with pytest.raises(StaleVoucher):
        db.jobs.apply(job.job_id, PaymentMade(), voucher=SignedVoucher(Voucher(CLIENT, PROVIDER_A, 400), SIG))
    assert db.jobs.get(job.job_id) == matched
    assert db.vouchers.get(CLIENT, PROVIDER_A) == kept


def test_can_make_moves_in_a_row_in_one_transaction(db: Database) -> None:
    job = db.jobs.create(new_job())
    paid = db.jobs.apply_many(
        job.job_id,
        [Matched(provider=PROVIDER_A), PaymentMade()],
        voucher=SignedVoucher(Voucher(CLIENT, PROVIDER_A, 700), SIG),
    )
    assert [r.state for r in paid] == [JobState.MATCHED, JobState.PAID]
    assert [r.version for r in paid] == [2, 3]
    moved = db.jobs.apply_many(job.job_id, [Sent(), Started(), ResultReceived()], known=paid[-1])
    assert [r.state for r in moved] == [JobState.SENT, JobState.RUNNING, JobState.RESULT]
    assert db.jobs.get(job.job_id) == moved[-1]
    history = db.jobs.history(job.job_id)
    assert [h.seq for h in history] == [2, 3, 4, 5, 6]
    assert [(h.from_state, h.to_state) for h in history][1:3] == [
        (JobState.MATCHED, JobState.PAID),
        (JobState.PAID, JobState.SENT),
    ]
    assert db.vouchers.get(CLIENT, PROVIDER_A) is not None


def test_cannot_make_moves_in_a_row_when_one_is_illegal_and_nothing_is_written(db: Database) -> None:
    job = db.jobs.create(new_job())
    with pytest.raises(JobTransitionError):
        db.jobs.apply_many(
            job.job_id,
            [Matched(provider=PROVIDER_A), Settled()],
            voucher=SignedVoucher(Voucher(CLIENT, PROVIDER_A, 700), SIG),
        )
    assert db.jobs.get(job.job_id) == job
    assert db.jobs.history(job.job_id) == ()
    assert db.vouchers.get(CLIENT, PROVIDER_A) is None
    with pytest.raises(InvalidRecord, match="no events"):
        db.jobs.apply_many(job.job_id, [])


def test_a_stale_known_job_is_read_again_before_deciding(db: Database) -> None:
    job = db.jobs.create(new_job())
    cancelled = db.jobs.apply(job.job_id, Cancelled())
    with pytest.raises(JobTransitionError):
        db.jobs.apply(job.job_id, Matched(provider=PROVIDER_A), known=job)
    assert db.jobs.get(job.job_id) == cancelled
    other = db.jobs.create(new_job())
    matched = db.jobs.apply(other.job_id, Matched(provider=PROVIDER_A))
    # Decided on the stored job (matched), not on the stale one the caller still held.
    paid = db.jobs.apply(other.job_id, PaymentMade(), known=other)
    assert (paid.state, paid.version) == (JobState.PAID, matched.version + 1)
    with pytest.raises(StaleJobVersion):
        db.jobs.apply(other.job_id, Sent(), known=matched, expected_version=matched.version)
    assert db.jobs.get(other.job_id) == paid


def test_can_list_jobs_by_payment_path(db: Database) -> None:
    escrowed = db.jobs.create(new_job(payment=PaymentPath.ESCROW))
    by_voucher = db.jobs.create(new_job())
    assert db.jobs.list(payment=PaymentPath.ESCROW) == (escrowed,)
    assert db.jobs.list(role=Role.CLIENT, payment=PaymentPath.VOUCHER) == (by_voucher,)
    assert db.jobs.list(role=Role.PROVIDER, payment=PaymentPath.VOUCHER) == ()


def test_can_store_a_provider_job_and_its_voucher_in_one_step(db: Database) -> None:
    job = db.jobs.create(
        new_job(role=Role.PROVIDER), voucher=SignedVoucher(Voucher(CLIENT, PROVIDER_A, 900), SIG)
    )
    assert db.jobs.get(job.job_id) == job
    stored = db.vouchers.get(CLIENT, PROVIDER_A)
    assert stored is not None
    assert stored.voucher.cumulative_amount == 900


def test_cannot_store_a_job_with_a_voucher_that_does_not_raise_the_amount(db: Database) -> None:
    kept = db.vouchers.record(Voucher(CLIENT, PROVIDER_A, 500), SIG)
    job = new_job(role=Role.PROVIDER)
    with pytest.raises(StaleVoucher):
        db.jobs.create(job, voucher=SignedVoucher(Voucher(CLIENT, PROVIDER_A, 400), SIG))
    assert db.jobs.find(job.job_id) is None
    assert db.vouchers.get(CLIENT, PROVIDER_A) == kept
