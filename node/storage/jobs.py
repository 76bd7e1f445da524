"""Jobs and their append-only history. Every transition is validated by the pure state machine
and written, with its history entry, in one transaction guarded by the job's version."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from node.jobs.state import (
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
    event_detail,
    event_from_detail,
    transition,
)
from node.logging import get_logger
from node.storage.errors import DuplicateRecord, InvalidRecord, StaleJobVersion, UnknownJob
from node.storage.models import JobAttemptRow, JobEventRow, JobRow
from node.storage.receipts import checked_receipt, save_receipt
from node.storage.records import JobEventRecord, JobRecord, NewJob, SignedReceipt, SignedVoucher
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

    def create(self, job: NewJob) -> JobRecord:
        """Store a new job in its role's initial state (client: submitted; provider: accepted)."""
        job = _checked_new_job(job)
        now = self._tx.clock()
        status = JobStatus.initial(job.role, job.payment)
        row = JobRow(
            job_id=job.job_id,
            role=job.role.value,
            payment=job.payment.value,
            state=status.state.value,
            model_id=job.model_id,
            input_hash=job.input_hash,
            price_wei=str(job.price_wei),
            client=job.client,
            deadline=job.deadline,
            reason=None,
            version=1,
            created_at=now,
            updated_at=now,
        )
        try:
            with self._tx.write() as session:
                session.add(row)
        except IntegrityError as exc:
            raise DuplicateRecord(
                f"job {job.job_id.hex()} is already stored", hint="a job id names one job; fetch it instead"
            ) from exc
        log.debug("job stored", job_id=job.job_id.hex(), role=job.role, state=status.state)
        return _record(row, ())

    def get(self, job_id: Hash32) -> JobRecord:
        found = self.find(job_id)
        if found is None:
            raise UnknownJob(f"no job {_hex(job_id)} is stored", hint="check the job id (64 hex digits)")
        return found

    def find(self, job_id: Hash32) -> JobRecord | None:
        check_hash("job id", job_id)
        with self._tx.read() as session:
            row = session.get(JobRow, job_id)
            return None if row is None else _record(row, _attempts(session, job_id))

    def apply(
        self,
        job_id: Hash32,
        event: JobEvent,
        *,
        expected_version: int | None = None,
        receipt: SignedReceipt | None = None,
        voucher: SignedVoucher | None = None,
    ) -> JobRecord:
        """Move a job by `event` and record it in its history; return the job as now stored.

        With `expected_version`, fail with `StaleJobVersion` if anyone moved the job since the caller
        read that version; without it, decide again on the fresh state when a concurrent writer wins.
        A `receipt` or `voucher` given along is stored in the same transaction, so the move and
        what it depends on (the signed result, the payment) are durable together or not at all.
        An illegal move, or a receipt or voucher the stores refuse, raises and writes nothing.
        """
        check_hash("job id", job_id)
        if isinstance(event, Matched):
            # One provider, one spelling: "already tried" compares addresses as stored.
            event = Matched(provider=checked_address("provider", event.provider))
        attachments = _checked_attachments(job_id, receipt, voucher)
        for _ in range(_RACE_RETRIES):
            try:
                return self._apply_once(job_id, event, expected_version, attachments)
            except (_LostRace, IntegrityError):
                if expected_version is not None:
                    raise StaleJobVersion(
                        f"job {_hex(job_id)} was moved by another writer since version {expected_version}",
                        hint="re-read the job and decide again",
                    ) from None
        raise StaleJobVersion(f"job {_hex(job_id)} kept changing under {_RACE_RETRIES} attempts to move it")

    def _apply_once(
        self, job_id: Hash32, event: JobEvent, expected_version: int | None, attachments: _Attachments
    ) -> JobRecord:
        with self._tx.write() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                raise UnknownJob(f"no job {_hex(job_id)} is stored", hint="check the job id (64 hex digits)")
            if expected_version is not None and row.version != expected_version:
                raise _LostRace
            before = _attempts(session, job_id)
            status = _status(row, before)
            moved = transition(status, event)
            if isinstance(moved, IllegalTransition):
                raise JobTransitionError(f"job {_hex(job_id)}: {moved.reason}")
            now = self._tx.clock()
            version = row.version + 1
            result = session.connection().execute(
                update(JobRow)
                .where(JobRow.job_id == job_id, JobRow.version == row.version)
                .values(state=moved.state.value, reason=moved.reason, version=version, updated_at=now)
            )
            if result.rowcount != 1:
                raise _LostRace
            _write_attempts(session, job_id, before, moved.attempts)
            session.add(
                JobEventRow(
                    job_id=job_id,
                    seq=version,
                    kind=event.kind,
                    detail=event_detail(event),
                    from_state=status.state.value,
                    to_state=moved.state.value,
                    at=now,
                )
            )
            if attachments.receipt is not None:
                save_receipt(session, attachments.receipt.receipt, attachments.receipt.signature, now)
            if attachments.voucher is not None:
                record_voucher(session, attachments.voucher.voucher, attachments.voucher.signature, now)
            session.flush()
            session.refresh(row)
        log.debug("job moved", job_id=_hex(job_id), kind=event.kind, state=moved.state, version=version)
        return _record(row, moved.attempts)

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
        states: Iterable[JobState] | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[JobRecord, ...]:
        """Jobs, most recently moved first."""
        query = select(JobRow).order_by(JobRow.updated_at.desc(), JobRow.job_id).limit(limit).offset(offset)
        if role is not None:
            query = query.where(JobRow.role == role.value)
        if states is not None:
            query = query.where(JobRow.state.in_([s.value for s in states]))
        with self._tx.read() as session:
            rows = session.scalars(query).all()
            return tuple(_record(r, _attempts(session, Hash32(r.job_id))) for r in rows)

    def live(self, role: Role) -> tuple[JobRecord, ...]:
        """Jobs of `role` not yet in a terminal state: what a restarted node must pick up again."""
        live_states = [s for s in JobState if s not in TERMINAL_STATES[role]]
        return self.list(role=role, states=live_states, limit=2**31 - 1)


@dataclass(frozen=True, slots=True)
class _Attachments:
    receipt: SignedReceipt | None
    voucher: SignedVoucher | None


def _checked_attachments(
    job_id: Hash32, receipt: SignedReceipt | None, voucher: SignedVoucher | None
) -> _Attachments:
    if receipt is not None:
        if receipt.receipt.job_id != job_id:
            raise InvalidRecord(
                f"the receipt is for job {_hex(receipt.receipt.job_id)}, not {_hex(job_id)}",
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


def _attempts(session: Session, job_id: bytes) -> tuple[Attempt, ...]:
    rows = session.scalars(
        select(JobAttemptRow).where(JobAttemptRow.job_id == job_id).order_by(JobAttemptRow.number)
    ).all()
    return tuple(
        Attempt(
            provider=Address(r.provider),
            paid=r.paid,
            outcome=None if r.outcome is None else AttemptOutcome(r.outcome),
        )
        for r in rows
    )


def _write_attempts(
    session: Session, job_id: bytes, before: tuple[Attempt, ...], after: tuple[Attempt, ...]
) -> None:
    # A transition appends one attempt or changes the last one; write only what differs.
    for number, attempt in enumerate(after):
        if number < len(before) and before[number] == attempt:
            continue
        values = {
            "provider": attempt.provider,
            "paid": attempt.paid,
            "outcome": None if attempt.outcome is None else attempt.outcome.value,
        }
        if number < len(before):
            session.execute(
                update(JobAttemptRow)
                .where(JobAttemptRow.job_id == job_id, JobAttemptRow.number == number)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
        else:
            session.add(JobAttemptRow(job_id=job_id, number=number, **values))


def _status(row: JobRow, attempts: tuple[Attempt, ...]) -> JobStatus:
    return JobStatus(
        role=Role(row.role),
        payment=PaymentPath(row.payment),
        state=JobState(row.state),
        attempts=attempts,
        reason=row.reason,
    )


def _record(row: JobRow, attempts: tuple[Attempt, ...]) -> JobRecord:
    return JobRecord(
        job_id=Hash32(row.job_id),
        model_id=Hash32(row.model_id),
        input_hash=Hash32(row.input_hash),
        price_wei=int(row.price_wei),
        client=None if row.client is None else Address(row.client),
        deadline=row.deadline,
        status=_status(row, attempts),
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
