"""The one table from the error tree to gRPC status codes.

An error takes the code of the nearest class in its MRO that the table names, so a new subclass
lands under its layer's base without touching this file. What the caller reads is the error's own
message and hint; the class name travels in trailing metadata for typed clients.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from node import errors
from node.api import errors as api_errors
from node.executor import errors as executor_errors
from node.storage import errors as storage_errors

Code = grpc.StatusCode

STATUS_FOR: Mapping[type[errors.GpunodeError], grpc.StatusCode] = {
    errors.GpunodeError: Code.UNKNOWN,
    # Settings and keys: the operator must fix something before the call can work.
    errors.ConfigError: Code.FAILED_PRECONDITION,
    errors.KeyStoreError: Code.FAILED_PRECONDITION,
    # Chain: unreachable is worth a retry; a revert means the contract refused as things stand.
    errors.ChainError: Code.UNAVAILABLE,
    errors.TransactionReverted: Code.FAILED_PRECONDITION,
    errors.SignatureError: Code.INVALID_ARGUMENT,
    # Overlay.
    errors.P2PError: Code.UNAVAILABLE,
    errors.PeerTimeout: Code.DEADLINE_EXCEEDED,
    errors.BlobNotFound: Code.NOT_FOUND,
    errors.DiscoveryError: Code.UNAVAILABLE,
    # Executor: most of what reaches the API is about the caller's model or input.
    errors.ExecutorError: Code.INVALID_ARGUMENT,
    executor_errors.InputTooLarge: Code.RESOURCE_EXHAUSTED,
    executor_errors.WorkerCrashed: Code.UNAVAILABLE,
    errors.SandboxError: Code.RESOURCE_EXHAUSTED,
    executor_errors.SandboxUnavailable: Code.FAILED_PRECONDITION,
    executor_errors.JobTimedOut: Code.DEADLINE_EXCEEDED,
    errors.ModelStoreError: Code.INVALID_ARGUMENT,
    executor_errors.UnknownModel: Code.NOT_FOUND,
    # Storage.
    errors.StorageError: Code.UNAVAILABLE,
    storage_errors.RecordNotFound: Code.NOT_FOUND,
    storage_errors.InvalidRecord: Code.INVALID_ARGUMENT,
    storage_errors.DuplicateRecord: Code.ALREADY_EXISTS,
    storage_errors.StaleJobVersion: Code.ABORTED,
    storage_errors.StaleVoucher: Code.FAILED_PRECONDITION,
    # Jobs, scheduling, settlement.
    errors.JobError: Code.FAILED_PRECONDITION,
    errors.SchedulerError: Code.UNAVAILABLE,
    errors.SettlementError: Code.FAILED_PRECONDITION,
    # The API's own.
    api_errors.InvalidRequest: Code.INVALID_ARGUMENT,
    api_errors.UploadTooLarge: Code.RESOURCE_EXHAUSTED,
    api_errors.UploadCorrupt: Code.INVALID_ARGUMENT,
    api_errors.NotAProvider: Code.FAILED_PRECONDITION,
    api_errors.NodeUnreachable: Code.UNAVAILABLE,
    api_errors.NotSupported: Code.UNIMPLEMENTED,
}


def status_for(error: errors.GpunodeError) -> grpc.StatusCode:
    """The code of the nearest class of `error` that the table names.

    A layer often re-raises a missing record as its own error (`JobError("no job … is known")`
    from storage's `UnknownJob`); the cause still says what happened, so it still reads NOT_FOUND.
    """
    if _caused_by_missing_record(error):
        return Code.NOT_FOUND
    for cls in type(error).__mro__:
        code = STATUS_FOR.get(cls)
        if code is not None:
            return code
    return Code.UNKNOWN


def _caused_by_missing_record(error: BaseException) -> bool:
    seen: set[int] = set()
    cause = error.__cause__
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, storage_errors.RecordNotFound):
            return True
        seen.add(id(cause))
        cause = cause.__cause__
    return False


def details_for(error: errors.GpunodeError) -> str:
    """What the caller reads: what went wrong, then what to do about it."""
    return f"{error.message} — {error.hint}" if error.hint else error.message
