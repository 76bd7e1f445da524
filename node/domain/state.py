"""The job state machine: one pure function for both payment paths and both sides of a job.

Each role has its own states (`ClientState`, `ProviderState`): `paid` on the client means this
attempt is paid for, on the provider that the provider was paid (terminal).

Client side (the node that submits and pays)::

    submitted → matched → paid → sent → running → result → verified → settled
                                                                   ↘ refunded | failed | cancelled

A provider that rejects the job, times out, dies, or returns a result that does not verify sends
the job back to `submitted` so the scheduler can match the next provider; each try is kept as an
`Attempt`. Provider side (the node that runs the job)::

    accepted → running → signed → delivered → paid      (| failed from any live state)

`transition(status, event)` returns the new `JobStatus` or an `IllegalTransition` value carrying a
reason a user can act on; it never raises for an illegal move, and never mutates its input.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from node.errors import JobError
from node.types import Address


class Role(enum.StrEnum):
    """Which side of a job this node is on."""

    CLIENT = "client"
    PROVIDER = "provider"


class PaymentPath(enum.StrEnum):
    """How the client pays: an off-chain cumulative voucher or an escrowed on-chain job."""

    VOUCHER = "voucher"
    ESCROW = "escrow"


class ClientState(enum.StrEnum):
    """Where a job stands on the client (the node that submits and pays)."""

    SUBMITTED = "submitted"
    MATCHED = "matched"
    PAID = "paid"  # this attempt is paid for: the voucher is signed or the escrow is on-chain
    SENT = "sent"
    RUNNING = "running"
    RESULT = "result"
    VERIFIED = "verified"
    SETTLED = "settled"
    REFUNDED = "refunded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ProviderState(enum.StrEnum):
    """Where a job stands on the provider (the node that runs it)."""

    ACCEPTED = "accepted"
    RUNNING = "running"
    SIGNED = "signed"
    DELIVERED = "delivered"
    PAID = "paid"  # terminal: the provider was paid (voucher redeemed or on-chain job finalized)
    FAILED = "failed"


State = ClientState | ProviderState


class JobState(enum.StrEnum):
    """A state's name as stored and shown (database, API, CLI filters), whichever role it is of.

    The state machine moves `ClientState` and `ProviderState`, whose names say what a state means
    on that side; both compare equal to the `JobState` of the same name.
    """

    SUBMITTED = "submitted"
    MATCHED = "matched"
    PAID = "paid"
    SENT = "sent"
    RUNNING = "running"
    RESULT = "result"
    VERIFIED = "verified"
    SETTLED = "settled"
    REFUNDED = "refunded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ACCEPTED = "accepted"
    SIGNED = "signed"
    DELIVERED = "delivered"


class AttemptOutcome(enum.StrEnum):
    """How one provider's try at a job ended."""

    REJECTED = "rejected"
    TIMED_OUT = "timed_out"
    DIED = "died"
    BAD_RESULT = "bad_result"
    COMPLETED = "completed"
    ABANDONED = "abandoned"


CLIENT_STATES: frozenset[State] = frozenset(ClientState)
PROVIDER_STATES: frozenset[State] = frozenset(ProviderState)
ROLE_STATES: Mapping[Role, frozenset[State]] = {Role.CLIENT: CLIENT_STATES, Role.PROVIDER: PROVIDER_STATES}
TERMINAL_STATES: Mapping[Role, frozenset[State]] = {
    Role.CLIENT: frozenset(
        {ClientState.SETTLED, ClientState.REFUNDED, ClientState.FAILED, ClientState.CANCELLED}
    ),
    Role.PROVIDER: frozenset({ProviderState.PAID, ProviderState.FAILED}),
}
INITIAL_STATE: Mapping[Role, State] = {
    Role.CLIENT: ClientState.SUBMITTED,
    Role.PROVIDER: ProviderState.ACCEPTED,
}


def role_state(role: Role, name: str) -> State:
    """The state called `name` on `role`'s side (`JobState`s and stored strings alike)."""
    try:
        return ClientState(name) if role is Role.CLIENT else ProviderState(name)
    except ValueError:
        states = ", ".join(sorted(ROLE_STATES[role]))
        raise JobError(
            f"{name} is not a state of a {role}'s job", hint=f"a {role}'s job is one of: {states}"
        ) from None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One provider's try at a client's job; `outcome` is None while the try is in flight."""

    provider: Address
    paid: bool = False
    outcome: AttemptOutcome | None = None
    # What this attempt costs: the matched provider's price (None where it was never recorded).
    price_wei: int | None = None


@dataclass(frozen=True, slots=True)
class JobStatus:
    """Where a job stands: the value the state machine moves."""

    role: Role
    payment: PaymentPath
    state: State
    attempts: tuple[Attempt, ...] = ()
    reason: str | None = None

    def __post_init__(self) -> None:
        # Each role's own enum, so a shared name (`paid`) never stands for the other side's state.
        object.__setattr__(self, "state", role_state(self.role, self.state))

    @classmethod
    def initial(cls, role: Role, payment: PaymentPath) -> JobStatus:
        return cls(role=role, payment=payment, state=INITIAL_STATE[role])

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES[self.role]

    @property
    def current(self) -> Attempt | None:
        """The attempt in flight, if any."""
        if self.attempts and self.attempts[-1].outcome is None:
            return self.attempts[-1]
        return None

    @property
    def tried_providers(self) -> frozenset[Address]:
        return frozenset(a.provider for a in self.attempts)


@dataclass(frozen=True, slots=True)
class IllegalTransition:
    """An event that cannot move a job from where it stands; nothing changed."""

    reason: str


class JobTransitionError(JobError):
    """Raised where an illegal transition was asked for by a caller (the API maps it to a status)."""


# ---------------------------------------------------------------------------------------------
# Events. Each is a frozen value; `kind` names it in the stored history.


@dataclass(frozen=True, slots=True)
class JobEvent:
    kind: ClassVar[str] = ""
    roles: ClassVar[frozenset[Role]] = frozenset()


@dataclass(frozen=True, slots=True)
class Matched(JobEvent):
    """The scheduler picked `provider` for the next attempt, at `price_wei`."""

    provider: Address
    price_wei: int | None = None
    kind: ClassVar[str] = "matched"
    roles: ClassVar[frozenset[Role]] = frozenset({Role.CLIENT})


@dataclass(frozen=True, slots=True)
class PaymentMade(JobEvent):
    """The voucher was signed, or the escrowed on-chain job was requested, for this attempt."""

    kind: ClassVar[str] = "payment_made"
    roles: ClassVar[frozenset[Role]] = frozenset({Role.CLIENT})


@dataclass(frozen=True, slots=True)
class Sent(JobEvent):
    """The request reached the provider."""

    kind: ClassVar[str] = "sent"
    roles: ClassVar[frozenset[Role]] = frozenset({Role.CLIENT})


@dataclass(frozen=True, slots=True)
class Started(JobEvent):
    """The provider began running the job (client: it said so; provider: the executor took it)."""

    kind: ClassVar[str] = "started"
    roles: ClassVar[frozenset[Role]] = frozenset({Role.CLIENT, Role.PROVIDER})


@dataclass(frozen=True, slots=True)
class ResultReceived(JobEvent):
    kind: ClassVar[str] = "result_received"
    roles: ClassVar[frozenset[Role]] = frozenset({Role.CLIENT})


@dataclass(frozen=True, slots=True)
class ResultVerified(JobEvent):
    """The receipt's signature and the output hash both checked out."""

    kind: ClassVar[str] = "result_verified"
    roles: ClassVar[frozenset[Role]] = frozenset({Role.CLIENT})


@dataclass(frozen=True, slots=True)
class Settled(JobEvent):
    kind: ClassVar[str] = "settled"
    roles: ClassVar[frozenset[Role]] = frozenset({Role.CLIENT})


@dataclass(frozen=True, slots=True)
class Refunded(JobEvent):
    """The escrow came back to the client (deadline passed without a result)."""

    kind: ClassVar[str] = "refunded"
    roles: ClassVar[frozenset[Role]] = frozenset({Role.CLIENT})


@dataclass(frozen=True, slots=True)
class ProviderLost(JobEvent):
    """The attempt's provider rejected, timed out, died or returned a bad result: match the next."""

    outcome: AttemptOutcome
    detail: str = ""
    kind: ClassVar[str] = "provider_lost"
    roles: ClassVar[frozenset[Role]] = frozenset({Role.CLIENT})


@dataclass(frozen=True, slots=True)
class Cancelled(JobEvent):
    reason: str = "cancelled by the client"
    kind: ClassVar[str] = "cancelled"
    roles: ClassVar[frozenset[Role]] = frozenset({Role.CLIENT})


@dataclass(frozen=True, slots=True)
class Failed(JobEvent):
    reason: str
    kind: ClassVar[str] = "failed"
    roles: ClassVar[frozenset[Role]] = frozenset({Role.CLIENT, Role.PROVIDER})


@dataclass(frozen=True, slots=True)
class ResultSigned(JobEvent):
    """Provider: the output hash was computed outside the sandbox and the receipt signed."""

    kind: ClassVar[str] = "result_signed"
    roles: ClassVar[frozenset[Role]] = frozenset({Role.PROVIDER})


@dataclass(frozen=True, slots=True)
class ResultDelivered(JobEvent):
    """Provider: the result reached the client (or the chain, for an on-chain job)."""

    kind: ClassVar[str] = "result_delivered"
    roles: ClassVar[frozenset[Role]] = frozenset({Role.PROVIDER})


@dataclass(frozen=True, slots=True)
class PaymentReceived(JobEvent):
    """Provider: the voucher was redeemed or the on-chain job finalized in our favour."""

    kind: ClassVar[str] = "payment_received"
    roles: ClassVar[frozenset[Role]] = frozenset({Role.PROVIDER})


EVENT_TYPES: Mapping[str, type[JobEvent]] = {
    cls.kind: cls
    for cls in (
        Matched,
        PaymentMade,
        Sent,
        Started,
        ResultReceived,
        ResultVerified,
        Settled,
        Refunded,
        ProviderLost,
        Cancelled,
        Failed,
        ResultSigned,
        ResultDelivered,
        PaymentReceived,
    )
}


def event_detail(event: JobEvent) -> dict[str, str]:
    """The event's fields as plain strings, for the stored history."""
    return {f.name: str(getattr(event, f.name)) for f in dataclasses.fields(event)}


def event_from_detail(kind: str, detail: Mapping[str, Any]) -> JobEvent:
    """Rebuild an event from its stored `kind` and `detail`; unknown kinds raise `JobError`."""
    cls = EVENT_TYPES.get(kind)
    if cls is None:
        raise JobError(f"unknown job event kind {kind!r}", hint=f"known kinds: {', '.join(EVENT_TYPES)}")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in detail:
            continue
        target = hints[f.name]
        raw = detail[f.name]
        if isinstance(target, type) and issubclass(target, enum.Enum):
            values[f.name] = target(raw)
        elif target == (int | None):
            values[f.name] = None if raw in (None, "None") else int(raw)
        else:
            values[f.name] = raw
    try:
        return cls(**values)
    except TypeError as exc:
        raise JobError(f"stored job event {kind!r} is malformed: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# Transitions.

_S = ClientState
_P = ProviderState
# Plain moves: (role, event kind) -> {from state: to state}. Events with more logic are handled below.
_SIMPLE: Mapping[tuple[Role, str], Mapping[State, State]] = {
    (Role.CLIENT, Sent.kind): {_S.PAID: _S.SENT},
    (Role.CLIENT, Started.kind): {_S.SENT: _S.RUNNING},
    (Role.CLIENT, ResultReceived.kind): {_S.RUNNING: _S.RESULT},
    (Role.CLIENT, ResultVerified.kind): {_S.RESULT: _S.VERIFIED},
    (Role.PROVIDER, Started.kind): {_P.ACCEPTED: _P.RUNNING},
    (Role.PROVIDER, ResultSigned.kind): {_P.RUNNING: _P.SIGNED},
    (Role.PROVIDER, ResultDelivered.kind): {_P.SIGNED: _P.DELIVERED},
    (Role.PROVIDER, PaymentReceived.kind): {_P.DELIVERED: _P.PAID},
}
_LOSABLE: frozenset[State] = frozenset({_S.MATCHED, _S.PAID, _S.SENT, _S.RUNNING})
_CANCELLABLE: frozenset[State] = frozenset({_S.SUBMITTED, _S.MATCHED})


def transition(status: JobStatus, event: JobEvent) -> JobStatus | IllegalTransition:
    """Move `status` by `event`, or say why it cannot move."""
    if status.role not in event.roles:
        return IllegalTransition(f"{event.kind!r} is not a {status.role} event")
    if status.terminal:
        return IllegalTransition(f"the job is already {status.state}; it cannot take {event.kind!r}")
    simple = _SIMPLE.get((status.role, event.kind))
    if simple is not None:
        return _simple_move(status, event, simple)
    if isinstance(event, Failed):
        failed = _S.FAILED if status.role is Role.CLIENT else _P.FAILED
        return _finish(status, failed, event.reason, AttemptOutcome.ABANDONED)
    if isinstance(event, Matched):
        return _match(status, event)
    if isinstance(event, PaymentMade):
        return _pay(status)
    if isinstance(event, ProviderLost):
        return _lose_provider(status, event)
    if isinstance(event, Settled):
        return _settle(status)
    if isinstance(event, Refunded):
        return _refund(status)
    if isinstance(event, Cancelled):
        return _cancel(status, event)
    return IllegalTransition(f"no transition is defined for {event.kind!r}")


def _simple_move(
    status: JobStatus, event: JobEvent, moves: Mapping[State, State]
) -> JobStatus | IllegalTransition:
    target = moves.get(status.state)
    if target is None:
        expected = " or ".join(sorted(moves))
        return IllegalTransition(f"{event.kind!r} needs the job {expected}, but it is {status.state}")
    return dataclasses.replace(status, state=target)


def _replace_current(status: JobStatus, attempt: Attempt) -> tuple[Attempt, ...]:
    return (*status.attempts[:-1], attempt)


def _match(status: JobStatus, event: Matched) -> JobStatus | IllegalTransition:
    if status.state is not _S.SUBMITTED:
        return IllegalTransition(f"only a submitted job can be matched; this one is {status.state}")
    if event.provider in status.tried_providers:
        return IllegalTransition(f"provider {event.provider} already had a try at this job")
    attempts = (*status.attempts, Attempt(provider=event.provider, price_wei=event.price_wei))
    return dataclasses.replace(status, state=_S.MATCHED, attempts=attempts)


def _pay(status: JobStatus) -> JobStatus | IllegalTransition:
    current = status.current
    if status.state is not _S.MATCHED or current is None:
        return IllegalTransition(f"a job is paid once matched to a provider; this one is {status.state}")
    attempts = _replace_current(status, dataclasses.replace(current, paid=True))
    return dataclasses.replace(status, state=_S.PAID, attempts=attempts)


def _lose_provider(status: JobStatus, event: ProviderLost) -> JobStatus | IllegalTransition:
    current = status.current
    if event.outcome is AttemptOutcome.BAD_RESULT:
        allowed: frozenset[State] = frozenset({_S.RESULT})
    elif event.outcome in (AttemptOutcome.REJECTED, AttemptOutcome.TIMED_OUT, AttemptOutcome.DIED):
        allowed = _LOSABLE
    else:
        return IllegalTransition(f"{event.outcome!s} is not a way to lose a provider")
    if current is None or status.state not in allowed:
        return IllegalTransition(
            f"no provider attempt can end as {event.outcome!s} while the job is {status.state}"
        )
    attempts = _replace_current(status, dataclasses.replace(current, outcome=event.outcome))
    return dataclasses.replace(status, state=_S.SUBMITTED, attempts=attempts)


def _settle(status: JobStatus) -> JobStatus | IllegalTransition:
    if status.state is not _S.VERIFIED:
        return IllegalTransition(
            f"a job settles only after its result is verified; this one is {status.state}"
        )
    return _finish(status, _S.SETTLED, None, AttemptOutcome.COMPLETED)


def _refund(status: JobStatus) -> JobStatus | IllegalTransition:
    if status.payment is not PaymentPath.ESCROW:
        return IllegalTransition("only an escrow-paid job can be refunded; vouchers are never spent up front")
    if not any(a.paid for a in status.attempts):
        return IllegalTransition("nothing was paid into escrow for this job yet; there is nothing to refund")
    return _finish(status, _S.REFUNDED, None, AttemptOutcome.ABANDONED)


def _cancel(status: JobStatus, event: Cancelled) -> JobStatus | IllegalTransition:
    if status.state not in _CANCELLABLE:
        return IllegalTransition(
            f"the job is already {status.state} and has been paid for; it will finish, fail or be refunded"
        )
    return _finish(status, _S.CANCELLED, event.reason, AttemptOutcome.ABANDONED)


def _finish(status: JobStatus, state: State, reason: str | None, outcome: AttemptOutcome) -> JobStatus:
    current = status.current
    attempts = status.attempts
    if current is not None:
        attempts = _replace_current(status, dataclasses.replace(current, outcome=outcome))
    return dataclasses.replace(status, state=state, attempts=attempts, reason=reason)


def replay(initial: JobStatus, events: tuple[JobEvent, ...] | list[JobEvent]) -> JobStatus:
    """Fold a stored history back into a status; a history that does not replay raises `JobError`."""
    status = initial
    for event in events:
        moved = transition(status, event)
        if isinstance(moved, IllegalTransition):
            raise JobError(f"stored job history does not replay: {moved.reason}")
        status = moved
    return status


__all__ = [
    "CLIENT_STATES",
    "EVENT_TYPES",
    "PROVIDER_STATES",
    "ROLE_STATES",
    "TERMINAL_STATES",
    "Attempt",
    "AttemptOutcome",
    "Cancelled",
    "ClientState",
    "Failed",
    "IllegalTransition",
    "JobEvent",
    "JobState",
    "JobStatus",
    "JobTransitionError",
    "Matched",
    "PaymentMade",
    "PaymentPath",
    "PaymentReceived",
    "ProviderLost",
    "ProviderState",
    "Refunded",
    "ResultDelivered",
    "ResultReceived",
    "ResultSigned",
    "ResultVerified",
    "Role",
    "Sent",
    "Settled",
    "Started",
    "State",
    "event_detail",
    "event_from_detail",
    "replay",
    "role_state",
    "transition",
]
