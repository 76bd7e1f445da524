"""The job state machine: every (state, event) pair against a table, and random event sequences."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.domain.state import (
    CLIENT_STATES,
    EVENT_TYPES,
    ROLE_STATES,
    TERMINAL_STATES,
    Attempt,
    AttemptOutcome,
    Cancelled,
    ClientState,
    Failed,
    IllegalTransition,
    JobEvent,
    JobState,
    JobStatus,
    Matched,
    PaymentMade,
    PaymentPath,
    PaymentReceived,
    ProviderLost,
    ProviderState,
    Refunded,
    ResultDelivered,
    ResultReceived,
    ResultSigned,
    ResultVerified,
    Role,
    Sent,
    Settled,
    Started,
    State,
    event_detail,
    event_from_detail,
    replay,
    transition,
)
from node.errors import JobError
from node.types import Address

A = Address("0x" + "aa" * 20)
B = Address("0x" + "bb" * 20)
C = ClientState
P = ProviderState

# The specification, written out by hand: (role, from state, event kind) -> to state.
CLIENT_TABLE: dict[tuple[State, str], State] = {
    (C.SUBMITTED, "matched"): C.MATCHED,
    (C.MATCHED, "payment_made"): C.PAID,
    (C.PAID, "sent"): C.SENT,
    (C.SENT, "started"): C.RUNNING,
    (C.RUNNING, "result_received"): C.RESULT,
    (C.RESULT, "result_verified"): C.VERIFIED,
    (C.VERIFIED, "settled"): C.SETTLED,
    (C.SUBMITTED, "cancelled"): C.CANCELLED,
    (C.MATCHED, "cancelled"): C.CANCELLED,
    **{(s, "failed"): C.FAILED for s in CLIENT_STATES - TERMINAL_STATES[Role.CLIENT]},
    **{(s, "provider_lost"): C.SUBMITTED for s in (C.MATCHED, C.PAID, C.SENT, C.RUNNING)},
    (C.RESULT, "provider_lost_bad"): C.SUBMITTED,
    **{(s, "refunded"): C.REFUNDED for s in (C.PAID, C.SENT, C.RUNNING, C.RESULT, C.VERIFIED)},
}
PROVIDER_TABLE: dict[tuple[State, str], State] = {
    (P.ACCEPTED, "started"): P.RUNNING,
    (P.RUNNING, "result_signed"): P.SIGNED,
    (P.SIGNED, "result_delivered"): P.DELIVERED,
    (P.DELIVERED, "payment_received"): P.PAID,
    **{(s, "failed"): P.FAILED for s in (P.ACCEPTED, P.RUNNING, P.SIGNED, P.DELIVERED)},
}

SAMPLE_EVENTS: dict[str, JobEvent] = {
    "matched": Matched(provider=B, price_wei=7),
    "payment_made": PaymentMade(),
    "sent": Sent(),
    "started": Started(),
    "result_received": ResultReceived(),
    "result_verified": ResultVerified(),
    "settled": Settled(),
    "refunded": Refunded(),
    "provider_lost": ProviderLost(outcome=AttemptOutcome.TIMED_OUT),
    "provider_lost_bad": ProviderLost(outcome=AttemptOutcome.BAD_RESULT),
    "cancelled": Cancelled(),
    "failed": Failed(reason="disk full"),
    "result_signed": ResultSigned(),
    "result_delivered": ResultDelivered(),
    "payment_received": PaymentReceived(),
}


def _status_in(role: Role, state: State) -> JobStatus:
    """A plausible escrow-paid status in `state`, with provider A's attempt open where one would be."""
    open_attempt = role is Role.CLIENT and state not in (C.SUBMITTED, *TERMINAL_STATES[Role.CLIENT])
    paid = state not in (C.SUBMITTED, C.MATCHED)
    attempts = (Attempt(provider=A, paid=paid),) if open_attempt else ()
    return JobStatus(role=role, payment=PaymentPath.ESCROW, state=state, attempts=attempts)


def test_paid_means_one_thing_per_side() -> None:
    client = JobStatus(role=Role.CLIENT, payment=PaymentPath.VOUCHER, state=JobState.PAID)
    provider = JobStatus(role=Role.PROVIDER, payment=PaymentPath.VOUCHER, state=JobState.PAID)
    assert client.state is ClientState.PAID
    assert not client.terminal
    assert provider.state is ProviderState.PAID
    assert provider.terminal
    # Stored strings stay what they were: each side reads its own state back from "paid".
    assert client.state == provider.state == JobState.PAID == "paid"


def test_samples_cover_every_event_kind() -> None:
    assert {e.kind for e in SAMPLE_EVENTS.values()} == set(EVENT_TYPES)


@pytest.mark.parametrize("role", list(Role))
def test_can_move_exactly_as_the_table_says(role: Role) -> None:
    table = CLIENT_TABLE if role is Role.CLIENT else PROVIDER_TABLE
    for state in ROLE_STATES[role]:
        status = _status_in(role, state)
        for name, event in SAMPLE_EVENTS.items():
            moved = transition(status, event)
            expected = table.get((state, name))
            if expected is None:
                assert isinstance(moved, IllegalTransition), (role, state, name, moved)
                assert moved.reason
            else:
                assert isinstance(moved, JobStatus), (role, state, name, moved)
                assert moved.state is expected


def test_can_reassign_keeping_attempt_history() -> None:
    status = JobStatus.initial(Role.CLIENT, PaymentPath.VOUCHER)
    for event in (Matched(provider=A), PaymentMade(), Sent(), ProviderLost(outcome=AttemptOutcome.REJECTED)):
        moved = transition(status, event)
        assert isinstance(moved, JobStatus)
        status = moved
    assert status.state is C.SUBMITTED
    assert status.attempts == (Attempt(provider=A, paid=True, outcome=AttemptOutcome.REJECTED),)
    again = transition(status, Matched(provider=A))
    assert isinstance(again, IllegalTransition)
    assert "already had a try" in again.reason
    moved = transition(status, Matched(provider=B))
    assert isinstance(moved, JobStatus)
    assert moved.tried_providers == {A, B}
    assert moved.current == Attempt(provider=B)


def test_cannot_refund_a_voucher_job() -> None:
    status = dataclasses.replace(_status_in(Role.CLIENT, C.SENT), payment=PaymentPath.VOUCHER)
    moved = transition(status, Refunded())
    assert isinstance(moved, IllegalTransition)
    assert "escrow" in moved.reason


def test_cannot_refund_before_escrow_was_paid() -> None:
    status = JobStatus.initial(Role.CLIENT, PaymentPath.ESCROW)
    moved = transition(status, Refunded())
    assert isinstance(moved, IllegalTransition)
    assert "nothing was paid" in moved.reason


def test_cannot_cancel_a_paid_job() -> None:
    moved = transition(_status_in(Role.CLIENT, C.RUNNING), Cancelled())
    assert isinstance(moved, IllegalTransition)
    assert "paid for" in moved.reason


def test_cannot_build_a_status_in_a_state_of_the_other_side() -> None:
    with pytest.raises(JobError, match="not a state of a client's job"):
        JobStatus(role=Role.CLIENT, payment=PaymentPath.VOUCHER, state=P.SIGNED)


def test_cannot_use_an_event_of_the_other_side() -> None:
    moved = transition(JobStatus.initial(Role.PROVIDER, PaymentPath.VOUCHER), Matched(provider=A))
    assert isinstance(moved, IllegalTransition)
    assert "not a provider event" in moved.reason


def test_cannot_lose_a_provider_with_a_completed_outcome() -> None:
    moved = transition(_status_in(Role.CLIENT, C.RUNNING), ProviderLost(outcome=AttemptOutcome.COMPLETED))
    assert isinstance(moved, IllegalTransition)


@pytest.mark.parametrize("event", list(SAMPLE_EVENTS.values()), ids=list(SAMPLE_EVENTS))
def test_can_round_trip_every_event_through_its_stored_form(event: JobEvent) -> None:
    assert event_from_detail(event.kind, event_detail(event)) == event


@pytest.mark.parametrize("detail", [{"provider": B}, {"provider": B, "price_wei": "None"}])
def test_can_read_a_match_stored_before_matches_kept_their_price(detail: dict[str, str]) -> None:
    assert event_from_detail("matched", detail) == Matched(provider=B)


def test_cannot_rebuild_an_unknown_event_kind() -> None:
    with pytest.raises(JobError, match="unknown job event kind"):
        event_from_detail("teleported", {})


def test_cannot_replay_a_history_with_an_illegal_step() -> None:
    with pytest.raises(JobError, match="does not replay"):
        replay(JobStatus.initial(Role.CLIENT, PaymentPath.VOUCHER), [Settled()])


PROVIDERS = [Address(f"0x{i:040x}") for i in range(1, 5)]
client_events = st.one_of(
    st.sampled_from(PROVIDERS).map(lambda p: Matched(provider=p)),
    st.sampled_from(list(AttemptOutcome)).map(lambda o: ProviderLost(outcome=o)),
    st.sampled_from(
        [e for name, e in SAMPLE_EVENTS.items() if not name.startswith(("matched", "provider_lost"))]
    ),
)


@settings(max_examples=400, deadline=None)
@given(
    role=st.sampled_from(list(Role)),
    payment=st.sampled_from(list(PaymentPath)),
    events=st.lists(client_events, max_size=40),
)
def test_random_histories_keep_the_invariants(
    role: Role, payment: PaymentPath, events: list[JobEvent]
) -> None:
    status = JobStatus.initial(role, payment)
    seen = [status.state]
    for event in events:
        moved = transition(status, event)
        if isinstance(moved, IllegalTransition):
            assert moved.reason
            continue
        # Never leaves a terminal state.
        assert not status.terminal
        # Never settles without a verified result just before.
        if moved.state is C.SETTLED:
            assert status.state is C.VERIFIED
        if moved.state is C.REFUNDED:
            assert payment is PaymentPath.ESCROW
            assert any(a.paid for a in moved.attempts)
        # History only grows, and a provider is never tried twice.
        assert moved.attempts[: len(status.attempts) - 1] == status.attempts[: len(status.attempts) - 1]
        assert len(moved.tried_providers) == len(moved.attempts)
        # At most the last attempt is open.
        assert all(a.outcome is not None for a in moved.attempts[:-1])
        status = moved
        seen.append(status.state)
    if status.terminal:
        for event in SAMPLE_EVENTS.values():
            assert isinstance(transition(status, event), IllegalTransition)
    assert set(seen) <= ROLE_STATES[role]
