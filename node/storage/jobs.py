"""Jobs and their append-only history. Every transition is validated by the pure state machine
and written, with its history entry, in one transaction guarded by the job's version."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from node.domain.records import JobEventRecord, JobRecord, NewJob, SignedReceipt, SignedVoucher
from node.domain.state import (
    ROLE_STATES,
    TERMINAL_STATES,
    Attempt,
    AttemptOutcome,
    IllegalTransition,
    JobEvent,
    JobState,
    JobStatus,
    JobTransitionError,
    Matched,
    PaymentPath,
    Role,
    State,
    event_detail,
    event_from_detail,
    role_state,
    transition,
)
from node.logging import get_logger
from node.storage.errors import DuplicateRecord, InvalidRecord, StaleJobVersion, UnknownJob
from node.storage.models import JOB_ATTEMPTS, JOB_EVENTS, JOBS, AnyRow, JobEventRow, JobRow
from node.storage.receipts import checked_receipt, save_receipt
from node.storage.session import Transactions
from node.storage.validation import check_hash, check_wei, checked_address
from node.storage.vouchers import checked_voucher, record_voucher
from node.types import Address, Hash32

log = get_logger(__name__)

# Writers that did not name a version re-read and re-decide this many times when they lose a race.
_RACE_RETRIES = 8


class _LostRace(Exception):
    """Another writer moved the job between our read and our write."""


class JobRepository:
    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    def create(self, job: NewJob, *, voucher: SignedVoucher | None = None) -> JobRecord:
        """Store a new job in its role's initial state (client: submitted; provider: accepted).

        A `voucher` given along (a provider taking a voucher-paid job) is kept as the latest of
        its pair in the same transaction: the job and the payment for it are durable together.
        """
        job = _checked_new_job(job)
        if voucher is not None:
            voucher = SignedVoucher(checked_voucher(voucher.voucher, voucher.signature), voucher.signature)
        now = self._tx.clock()
        status = JobStatus.initial(job.role, job.payment)
        values = {
            "job_id": job.job_id,
            "role": job.role.value,
            "payment": job.payment.value,
            "state": status.state.value,
            "model_id": job.model_id,
            "input_hash": job.input_hash,
            "price_wei": str(job.price_wei),
            "client": job.client,
            "deadline": job.deadline,
            "reason": None,
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
        try:
            with self._tx.writing() as connection:
                connection.execute(_INSERT_JOB, values)
                if voucher is not None:
                    record_voucher(connection, voucher.voucher, voucher.signature, now)
        except IntegrityError as exc:
            raise DuplicateRecord(
                f"job {job.job_id.hex()} is already stored", hint="a job id names one job; fetch it instead"
            ) from exc
        log.debug("job stored", job_id=job.job_id.hex(), role=job.role, state=status.state)
        return JobRecord(
            job_id=job.job_id,
            model_id=job.model_id,
            input_hash=job.input_hash,
            price_wei=job.price_wei,
            client=job.client,
            deadline=job.deadline,
            status=status,
            version=1,
            created_at=now,
            updated_at=now,
        )

    def get(self, job_id: Hash32) -> JobRecord:
        found = self.find(job_id)
        if found is None:
            raise UnknownJob(f"no job {_hex(job_id)} is stored", hint="check the job id (64 hex digits)")
        return found

    def find(self, job_id: Hash32) -> JobRecord | None:
        check_hash("job id", job_id)
        with self._tx.reading() as connection:
            return _read_job(connection, job_id)

    def apply(
        self,
        job_id: Hash32,
        event: JobEvent,
        *,
        expected_version: int | None = None,
        receipt: SignedReceipt | None = None,
        voucher: SignedVoucher | None = None,
        known: JobRecord | None = None,
    ) -> JobRecord:
        """Move a job by `event` and record it in its history; return the job as now stored.

        With `expected_version`, fail with `StaleJobVersion` if anyone moved the job since the caller
        read that version; without it, decide again on the fresh state when a concurrent writer wins.
        A `receipt` or `voucher` given along is stored in the same transaction, so the move and
        what it depends on (the signed result, the payment) are durable together or not at all.
        An illegal move, or a receipt or voucher the stores refuse, raises and writes nothing.
        `known`, the job as the caller last had it, saves reading it again; the write is still
        guarded by its version, and a job moved since is read afresh.
        """
        moved = self.apply_many(
            job_id, (event,), expected_version=expected_version, receipt=receipt, voucher=voucher, known=known
        )
        return moved[-1]

    def apply_many(
        self,
        job_id: Hash32,
        events: Sequence[JobEvent],
        *,
        expected_version: int | None = None,
        receipt: SignedReceipt | None = None,
        voucher: SignedVoucher | None = None,
        known: JobRecord | None = None,
        receipt_signs: Hash32 | None = None,
    ) -> tuple[JobRecord, ...]:
        """Move a job by each of `events` in turn, all in one transaction; return the job after each.

        For moves that follow one another with nothing outside the node in between: each is
        validated and kept in the history as if applied alone, but they become durable together
        or not at all. `receipt_signs` is the id the receipt must sign where that is not the
        job's own (a client's voucher job: `node.chain.market.voucher_job_id`). The rest is as for
        `apply`.
        """
        check_hash("job id", job_id)
        if not events:
            raise InvalidRecord("no events to apply", hint="pass at least one job event")
        events = tuple(_checked_event(e) for e in events)
        signed_id = job_id if receipt_signs is None else receipt_signs
        attachments = _checked_attachments(signed_id, receipt, voucher)
        if known is not None and (known.job_id != job_id or expected_version not in (None, known.version)):
            known = None
        for _ in range(_RACE_RETRIES):
            try:
                return self._apply_once(job_id, events, expected_version, attachments, known)
            except (_LostRace, IntegrityError):
                if expected_version is not None:
                    raise StaleJobVersion(
                        f"job {_hex(job_id)} was moved by another writer since version {expected_version}",
                        hint="re-read the job and decide again",
                    ) from None
                known = None
        raise StaleJobVersion(f"job {_hex(job_id)} kept changing under {_RACE_RETRIES} attempts to move it")

    def _apply_once(
        self,
        job_id: Hash32,
        events: tuple[JobEvent, ...],
        expected_version: int | None,
        attachments: _Attachments,
        known: JobRecord | None,
    ) -> tuple[JobRecord, ...]:
        with self._tx.writing() as connection:
            current = known if known is not None else _read_job(connection, job_id)
            if current is None:
                raise UnknownJob(f"no job {_hex(job_id)} is stored", hint="check the job id (64 hex digits)")
            if expected_version is not None and current.version != expected_version:
                raise _LostRace
            now = self._tx.clock()
            try:
                moved = _moves(current, events, now)
            except JobTransitionError:
                # Refused on what the caller held: only the stored job may say it is illegal.
                if known is not None and _stored_version(connection, job_id) != known.version:
                    raise _LostRace from None
                raise
            _write_moves(connection, current, moved, events, now)
            if attachments.receipt is not None:
                signed = attachments.receipt
                save_receipt(connection, signed.receipt, signed.signature, now, job_id=job_id)
            if attachments.voucher is not None:
                record_voucher(connection, attachments.voucher.voucher, attachments.voucher.signature, now)
        last = moved[-1]
        log.debug("job moved", job_id=_hex(job_id), kinds=[e.kind for e in events], state=last.state)
        return moved

    def history(self, job_id: Hash32) -> tuple[JobEventRecord, ...]:
        """The job's transitions, oldest first."""
        check_hash("job id", job_id)
        with self._tx.read() as session:
            if session.get(JobRow, job_id) is None:
                raise UnknownJob(f"no job {_hex(job_id)} is stored", hint="check the job id (64 hex digits)")
            rows = session.scalars(
                select(JobEventRow).where(JobEventRow.job_id == job_id).order_by(JobEventRow.seq)
            ).all()
            return tuple(_event_record(r) for r in rows)

    def list(
        self,
        *,
        role: Role | None = None,
        states: Iterable[JobState | State] | None = None,
        payment: PaymentPath | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[JobRecord, ...]:
        """Jobs, most recently moved first."""
        query = select(JOBS).order_by(JOBS.c.updated_at.desc(), JOBS.c.job_id).limit(limit).offset(offset)
        if role is not None:
            query = query.where(JOBS.c.role == role.value)
        if states is not None:
            query = query.where(JOBS.c.state.in_([s.value for s in states]))
        if payment is not None:
            query = query.where(JOBS.c.payment == payment.value)
        with self._tx.reading() as connection:
            rows = connection.execute(query).all()
            attempts = _attempts_of(connection, [r.job_id for r in rows])
        return tuple(_record(r, attempts.get(r.job_id, ())) for r in rows)

    def live(self, role: Role) -> tuple[JobRecord, ...]:
        """Jobs of `role` not yet in a terminal state: what a restarted node must pick up again."""
        live_states = [s for s in ROLE_STATES[role] if s not in TERMINAL_STATES[role]]
        return self.list(role=role, states=live_states, limit=2**31 - 1)


_INSERT_JOB = insert(JOBS)
_SELECT_JOB = select(JOBS).where(JOBS.c.job_id == bindparam("job_id"))
_SELECT_ATTEMPTS = (
    select(JOB_ATTEMPTS.c.provider, JOB_ATTEMPTS.c.paid, JOB_ATTEMPTS.c.outcome, JOB_ATTEMPTS.c.price_wei)
    .where(JOB_ATTEMPTS.c.job_id == bindparam("job_id"))
    .order_by(JOB_ATTEMPTS.c.number)
)
_MOVE_JOB = (
    update(JOBS)
    .where(JOBS.c.job_id == bindparam("b_job_id"), JOBS.c.version == bindparam("b_version"))
    .values(
        state=bindparam("state"),
        reason=bindparam("reason"),
        version=bindparam("version"),
        updated_at=bindparam("updated_at"),
    )
)
_INSERT_ATTEMPT = insert(JOB_ATTEMPTS)
_UPDATE_ATTEMPT = (
    update(JOB_ATTEMPTS)
    .where(JOB_ATTEMPTS.c.job_id == bindparam("b_job_id"), JOB_ATTEMPTS.c.number == bindparam("b_number"))
    .values(
        provider=bindparam("provider"),
        paid=bindparam("paid"),
        outcome=bindparam("outcome"),
        price_wei=bindparam("price_wei"),
    )
)
_INSERT_EVENTS = insert(JOB_EVENTS)


def _read_job(connection: Connection, job_id: bytes) -> JobRecord | None:
    row = connection.execute(_SELECT_JOB, {"job_id": job_id}).one_or_none()
    if row is None:
        return None
    rows = connection.execute(_SELECT_ATTEMPTS, {"job_id": job_id}).all()
    return _record(row, tuple(_attempt(r) for r in rows))


def _stored_version(connection: Connection, job_id: bytes) -> int | None:
    found = _read_job(connection, job_id)
    return None if found is None else found.version


def _attempts_of(connection: Connection, job_ids: list[bytes]) -> dict[bytes, tuple[Attempt, ...]]:
    found: dict[bytes, list[Attempt]] = {}
    # Bounded IN lists: SQLite caps the number of bound parameters per statement.
    for start in range(0, len(job_ids), 500):
        rows = connection.execute(
            select(JOB_ATTEMPTS)
            .where(JOB_ATTEMPTS.c.job_id.in_(job_ids[start : start + 500]))
            .order_by(JOB_ATTEMPTS.c.job_id, JOB_ATTEMPTS.c.number)
        ).all()
        for r in rows:
            found.setdefault(r.job_id, []).append(_attempt(r))
    return {job_id: tuple(attempts) for job_id, attempts in found.items()}


def _checked_event(event: JobEvent) -> JobEvent:
    if isinstance(event, Matched):
        # One provider, one spelling: "already tried" compares addresses as stored.
        if event.price_wei is not None:
            check_wei("price_wei", event.price_wei)
        return Matched(provider=checked_address("provider", event.provider), price_wei=event.price_wei)
    return event


def _moves(current: JobRecord, events: tuple[JobEvent, ...], now: float) -> tuple[JobRecord, ...]:
    """The job after each event, by the pure state machine; raises on the first illegal move."""
    moved = []
    record = current
    for event in events:
        status = transition(record.status, event)
        if isinstance(status, IllegalTransition):
            raise JobTransitionError(f"job {_hex(current.job_id)}: {status.reason}")
        record = dataclasses.replace(record, status=status, version=record.version + 1, updated_at=now)
        moved.append(record)
    return tuple(moved)


def _write_moves(
    connection: Connection,
    current: JobRecord,
    moved: tuple[JobRecord, ...],
    events: tuple[JobEvent, ...],
    now: float,
) -> None:
    last = moved[-1]
    result = connection.execute(
        _MOVE_JOB,
        {
            "b_job_id": current.job_id,
            "b_version": current.version,
            "state": last.state.value,
            "reason": last.status.reason,
            "version": last.version,
            "updated_at": now,
        },
    )
    if result.rowcount != 1:
        raise _LostRace
    _write_attempts(connection, current.job_id, current.status.attempts, last.status.attempts)
    before = (current, *moved[:-1])
    history = [
        {
            "job_id": current.job_id,
            "seq": after.version,
            "kind": event.kind,
            "detail": event_detail(event),
            "from_state": prior.state.value,
            "to_state": after.state.value,
            "at": now,
        }
        for prior, after, event in zip(before, moved, events, strict=True)
    ]
    connection.execute(_INSERT_EVENTS, history)


@dataclass(frozen=True, slots=True)
class _Attachments:
    receipt: SignedReceipt | None
    voucher: SignedVoucher | None


def _checked_attachments(
    signed_id: Hash32, receipt: SignedReceipt | None, voucher: SignedVoucher | None
) -> _Attachments:
    if receipt is not None:
        if receipt.receipt.job_id != signed_id:
            raise InvalidRecord(
                f"the receipt is for job {_hex(receipt.receipt.job_id)}, not {_hex(signed_id)}",
                hint="attach a job's own receipt to its transition",
            )
        receipt = SignedReceipt(checked_receipt(receipt.receipt, receipt.signature), receipt.signature)
    if voucher is not None:
        voucher = SignedVoucher(checked_voucher(voucher.voucher, voucher.signature), voucher.signature)
    return _Attachments(receipt, voucher)


def _checked_new_job(job: NewJob) -> NewJob:
    check_hash("job_id", job.job_id)
    check_hash("model_id", job.model_id)
    check_hash("input_hash", job.input_hash)
    check_wei("price_wei", job.price_wei)
    if not isinstance(job.role, Role) or not isinstance(job.payment, PaymentPath):
        raise InvalidRecord(
            f"role and payment must be a Role and a PaymentPath, got {job.role!r}, {job.payment!r}"
        )
    if job.client is None:
        return job
    return dataclasses.replace(job, client=checked_address("client", job.client))


def _hex(job_id: bytes) -> str:
    return job_id.hex() if isinstance(job_id, bytes) else repr(job_id)


def _attempt(row: AnyRow) -> Attempt:
    return Attempt(
        provider=Address(row.provider),
        paid=bool(row.paid),
        outcome=None if row.outcome is None else AttemptOutcome(row.outcome),
        price_wei=None if row.price_wei is None else int(row.price_wei),
    )


def _write_attempts(
    connection: Connection, job_id: bytes, before: tuple[Attempt, ...], after: tuple[Attempt, ...]
) -> None:
    # A transition appends one attempt or changes the last one; write only what differs.
    for number, attempt in enumerate(after):
        if number < len(before) and before[number] == attempt:
            continue
        values = {
            "provider": attempt.provider,
            "paid": attempt.paid,
            "outcome": None if attempt.outcome is None else attempt.outcome.value,
            "price_wei": None if attempt.price_wei is None else str(attempt.price_wei),
        }
        if number < len(before):
            connection.execute(_UPDATE_ATTEMPT, {"b_job_id": job_id, "b_number": number, **values})
        else:
            connection.execute(_INSERT_ATTEMPT, {"job_id": job_id, "number": number, **values})


def _record(row: AnyRow, attempts: tuple[Attempt, ...]) -> JobRecord:
    status = JobStatus(
        role=Role(row.role),
        payment=PaymentPath(row.payment),
        state=role_state(Role(row.role), row.state),
        attempts=attempts,
        reason=row.reason,
    )
    return JobRecord(
        job_id=Hash32(row.job_id),
        model_id=Hash32(row.model_id),
        input_hash=Hash32(row.input_hash),
        price_wei=int(row.price_wei),
        client=None if row.client is None else Address(row.client),
        deadline=row.deadline,
        status=status,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _event_record(row: JobEventRow) -> JobEventRecord:
    return JobEventRecord(
        job_id=Hash32(row.job_id),
        seq=row.seq,
        event=event_from_detail(row.kind, row.detail),
        from_state=JobState(row.from_state),
        to_state=JobState(row.to_state),
        at=row.at,
    )
