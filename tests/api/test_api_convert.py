"""Request fields checked before any layer sees them; views survive the trip through the messages."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from node.api import convert
from node.api.errors import InvalidRequest
from node.domain.service import (
    AttemptView,
    CheckRunView,
    JobView,
    PeerView,
    ReceiptView,
    ReputationView,
    VerificationView,
)
from node.domain.state import AttemptOutcome, JobState, PaymentPath, Role
from node.gen.gpunode.v1 import api_pb2 as pb
from node.types import Address, FetchTerms, Hash32, ResultReceipt

PROVIDER = Address("0x5B38Da6a701c568545dCfcB03FcB875f56beddC4")
MODEL = hashlib.sha256(b"model").hexdigest()


def test_can_accept_an_id_with_or_without_0x_in_any_case() -> None:
    assert convert.parse_id(MODEL, "job id") == MODEL
    assert convert.parse_id("0x" + MODEL.upper(), "job id") == MODEL


@pytest.mark.parametrize("bad", ["", "abc", "0x" + "g" * 64, MODEL + "00", "../../etc/passwd"])
def test_cannot_pass_a_malformed_id(bad: str) -> None:
    with pytest.raises(InvalidRequest, match="is not an id") as caught:
        convert.parse_id(bad, "job id")
    assert caught.value.hint is not None
    assert "64 hex digits" in caught.value.hint


@pytest.mark.parametrize("bad", ["-1", "1.5", "ten", str(2**256), ""])
def test_cannot_pass_a_malformed_amount(bad: str) -> None:
    with pytest.raises(InvalidRequest, match="not an amount of wei"):
        convert.parse_wei(bad, "max price")


def test_cannot_pass_an_address_with_a_wrong_checksum() -> None:
    assert convert.parse_address(PROVIDER.lower(), "provider") == PROVIDER
    wrong = PROVIDER[:2] + PROVIDER[2:].swapcase()
    with pytest.raises(InvalidRequest, match="not an Ethereum address"):
        convert.parse_address(wrong, "provider")


def test_can_turn_a_submit_request_into_a_job_spec() -> None:
    request = pb.SubmitJobRequest(
        model_id="0x" + MODEL,
        input=b"tensors",
        payment=pb.PAYMENT_PATH_ESCROW,
        max_price_wei="1_000",
        timeout_ms=1500,
        provider=PROVIDER.lower(),
    )
    spec = convert.job_spec_from_pb(request)
    assert (spec.model_id, spec.input, spec.payment) == (MODEL, b"tensors", PaymentPath.ESCROW)
    assert (spec.max_price_wei, spec.timeout_s, spec.provider) == (1000, 1.5, PROVIDER)
    assert spec.precision is None
    int8 = convert.job_spec_from_pb(pb.SubmitJobRequest(model_id=MODEL, input=b"{}", precision="int8"))
    assert int8.precision == "int8"


def test_cannot_submit_without_input_or_with_a_day_long_timeout() -> None:
    with pytest.raises(InvalidRequest, match="no input"):
        convert.job_spec_from_pb(pb.SubmitJobRequest(model_id=MODEL))
    with pytest.raises(InvalidRequest, match="longer than a job may take"):
        convert.job_spec_from_pb(pb.SubmitJobRequest(model_id=MODEL, input=b"x", timeout_ms=2**32 - 1))


def test_cannot_list_an_unknown_state_or_too_many_jobs() -> None:
    with pytest.raises(InvalidRequest, match="unknown job state 'done'") as caught:
        convert.job_filter_from_pb(pb.ListJobsRequest(states=["done"]))
    assert "settled" in (caught.value.hint or "")
    with pytest.raises(InvalidRequest, match="at most 1000"):
        convert.job_filter_from_pb(pb.ListJobsRequest(limit=5000))
    query = convert.job_filter_from_pb(pb.ListJobsRequest(states=["failed"], role=pb.ROLE_CLIENT))
    assert (query.states, query.role, query.limit) == ((JobState.FAILED,), Role.CLIENT, 100)


def _job(**changes: object) -> JobView:
    receipt = ResultReceipt(
        job_id=Hash32(bytes(range(32))),
        model_id=Hash32(bytes.fromhex(MODEL)),
        input_hash=Hash32(hashlib.sha256(b"in").digest()),
        output_hash=Hash32(hashlib.sha256(b"out").digest()),
        profile_hash=Hash32(b"\x07" * 32),
        provider=PROVIDER,
    )
    base = JobView(
        job_id=bytes(range(32)).hex(),
        role=Role.CLIENT,
        model_id=MODEL,
        payment=PaymentPath.VOUCHER,
        state=JobState.SETTLED,
        terminal=True,
        attempts=(
            AttemptView(provider=PROVIDER, paid=True, outcome=AttemptOutcome.TIMED_OUT),
            AttemptView(provider=PROVIDER, paid=True, outcome=AttemptOutcome.COMPLETED),
        ),
        provider=PROVIDER,
        price_wei=10**12,
        output=b"out",
        receipt=ReceiptView(receipt=receipt, signature=b"\x01" * 64 + b"\x1b", verified=True),
        error=None,
        created_at=1_700_000_000.25,
        updated_at=1_700_000_001.5,
        onchain_job_id=None,
        output_size=3,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_can_carry_a_job_through_its_message_and_back() -> None:
    job = _job()
    assert convert.job_from_pb(pb.Job.FromString(convert.job_to_pb(job).SerializeToString())) == job


def test_can_leave_the_output_out_but_say_there_is_one() -> None:
    message = convert.job_to_pb(_job(), include_output=False)
    assert message.has_output
    assert message.output == b""
    assert convert.job_from_pb(message).output is None
    assert convert.job_from_pb(message).output_size == 3


def test_can_carry_a_job_not_yet_matched() -> None:
    job = _job(
        state=JobState.SUBMITTED,
        terminal=False,
        attempts=(),
        provider=None,
        output=None,
        receipt=None,
        output_size=None,
    )
    assert convert.job_from_pb(convert.job_to_pb(job)) == job


def test_can_carry_a_spot_check_and_a_providers_reputation_through_the_api() -> None:
    provider = Address("0x" + "ab" * 20)
    verification = VerificationView(
        job_id="01" * 32,
        verdict="first_wrong",
        why="different outputs under the same execution profile",
        runs=tuple(CheckRunView(provider, f"{i:02x}" * 32, "cd" * 32, "ef" * 32) for i in range(3)),
        loser=provider,
    )
    assert convert.verification_from_pb(convert.verification_to_pb(verification)) == verification
    agreed = dataclasses.replace(verification, verdict="agreed", loser=None)
    assert convert.verification_from_pb(convert.verification_to_pb(agreed)) == agreed
    reputation = ReputationView(7, 2, 1, 3, True, "lost a spot check")
    peer = PeerView("peer", provider, True, True, (), reputation=reputation)
    assert convert.peer_from_pb(convert.peer_to_pb(peer)) == peer
    never_used = dataclasses.replace(peer, reputation=None)
    assert convert.peer_from_pb(convert.peer_to_pb(never_used)) == never_used


def test_can_carry_a_providers_fetch_terms_through_the_api() -> None:
    terms = FetchTerms(4 * 2**30, 10**12, 10**13)
    peer = PeerView("peer", Address("0x" + "ab" * 20), True, True, (), fetch=terms)
    assert convert.peer_from_pb(convert.peer_to_pb(peer)) == peer
    no_fetching = dataclasses.replace(peer, fetch=None)
    assert convert.peer_from_pb(convert.peer_to_pb(no_fetching)) == no_fetching


def test_cannot_read_fetch_terms_whose_cold_start_is_not_an_amount() -> None:
    message = convert.peer_to_pb(
        PeerView("peer", Address("0x" + "ab" * 20), True, True, (), fetch=FetchTerms(1, 2, 3))
    )
    message.fetch.cold_start_price_wei = "-5"
    with pytest.raises(InvalidRequest, match="cold_start_price_wei '-5' is not an amount of wei"):
        convert.peer_from_pb(message)
