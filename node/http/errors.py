"""Errors as OpenAI's API shapes them: `{"error": {"message", "type", "param", "code"}}`, with
one table from the node's error tree to HTTP status codes."""

from __future__ import annotations

from starlette.responses import JSONResponse

from node.errors import ChainError, ExecutorError, GpunodeError, JobError, SchedulerError, SettlementError
from node.executor.errors import UnknownModel


class HttpError(GpunodeError):
    """A request the HTTP face refuses; `status` and `code` are what the caller receives."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        code: str = "invalid_request",
        param: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.param = param
        self.kind = kind


# Most specific first: the first base the error is an instance of decides.
_STATUS: tuple[tuple[type[GpunodeError], int, str, str], ...] = (
    (UnknownModel, 404, "model_not_found", "invalid_request_error"),
    (SchedulerError, 503, "no_provider", "service_unavailable"),
    (SettlementError, 402, "insufficient_funds", "insufficient_quota"),
    (ExecutorError, 400, "invalid_input", "invalid_request_error"),
    (JobError, 400, "invalid_request", "invalid_request_error"),
    (ChainError, 503, "chain_unavailable", "service_unavailable"),
)


def as_http_error(error: GpunodeError) -> HttpError:
    if isinstance(error, HttpError):
        return error
    for base, status, code, kind in _STATUS:
        if isinstance(error, base):
            return HttpError(str(error), status=status, code=code, kind=kind)
    return HttpError(str(error), status=500, code="internal_error", kind="server_error")


def error_body(error: HttpError) -> dict[str, dict[str, str | None]]:
    return {"error": {"message": error.message, "type": error.kind, "param": error.param, "code": error.code}}


def error_response(error: GpunodeError, headers: dict[str, str] | None = None) -> JSONResponse:
    http = as_http_error(error)
    return JSONResponse(error_body(http), status_code=http.status, headers=headers)
