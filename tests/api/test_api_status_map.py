"""The one table from the error tree to gRPC status codes."""

from __future__ import annotations

import grpc
import pytest

from node import errors
from node.api.errors import InvalidRequest, NotAProvider, UploadCorrupt, UploadTooLarge
from node.api.status_map import details_for, status_for
from node.domain.state import JobTransitionError
from node.executor.errors import InputTooLarge, InvalidInput, JobTimedOut, UnknownModel, WorkerCrashed
from node.storage.errors import StaleVoucher, UnknownJob

Code = grpc.StatusCode


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidRequest("job id 'x' is not an id"), Code.INVALID_ARGUMENT),
        (UnknownModel("model 00 is not in the store"), Code.NOT_FOUND),
        (InvalidInput("tensor 'input' is F64"), Code.INVALID_ARGUMENT),
        (InputTooLarge("the input is 9 bytes; at most 8"), Code.RESOURCE_EXHAUSTED),
        (UploadTooLarge("the model is too large"), Code.RESOURCE_EXHAUSTED),
        (UploadCorrupt("sha256 differs"), Code.INVALID_ARGUMENT),
        (errors.SettlementError("the deposit does not cover the job"), Code.FAILED_PRECONDITION),
        (errors.SignatureError("high s"), Code.INVALID_ARGUMENT),
        (errors.SchedulerError("no provider offers the model"), Code.UNAVAILABLE),
        (errors.JobError("the job is already settled"), Code.FAILED_PRECONDITION),
        (JobTransitionError("the job is already settled"), Code.FAILED_PRECONDITION),
        (errors.ChainError("RPC down"), Code.UNAVAILABLE),
        (errors.TransactionReverted("reverted", error_name="InsufficientStake"), Code.FAILED_PRECONDITION),
        (errors.PeerTimeout("no answer"), Code.DEADLINE_EXCEEDED),
        (JobTimedOut("ran past 60 s"), Code.DEADLINE_EXCEEDED),
        (WorkerCrashed("worker died"), Code.UNAVAILABLE),
        (UnknownJob("no job"), Code.NOT_FOUND),
        (StaleVoucher("does not raise the amount"), Code.FAILED_PRECONDITION),
        (NotAProvider("client only"), Code.FAILED_PRECONDITION),
        (errors.ConfigError("bad settings"), Code.FAILED_PRECONDITION),
        (errors.GpunodeError("something"), Code.UNKNOWN),
    ],
)
def test_can_map_each_layer_error_to_its_status(error: errors.GpunodeError, code: grpc.StatusCode) -> None:
    assert status_for(error) is code


def test_can_map_a_new_subclass_through_its_layer_base() -> None:
    class QuotaHit(errors.SandboxError):
        pass

    assert status_for(QuotaHit("the job used too much memory")) is Code.RESOURCE_EXHAUSTED


def test_can_read_a_missing_record_through_the_error_it_was_raised_from() -> None:
    missing = UnknownJob("no such row")
    error = errors.JobError("no job ab is known to this node")
    error.__cause__ = missing
    assert status_for(error) is Code.NOT_FOUND
    assert status_for(errors.JobError("the job is already settled")) is Code.FAILED_PRECONDITION


def test_can_put_the_hint_after_the_message() -> None:
    error = errors.SettlementError("the deposit is 0 wei", hint="deposit more into the JobMarket")
    assert details_for(error) == "the deposit is 0 wei — deposit more into the JobMarket"
    assert details_for(errors.JobError("no hint here")) == "no hint here"
