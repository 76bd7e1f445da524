"""The API layer's faults, under `GpunodeError` so they map to status codes like every other error."""

from __future__ import annotations

from node.errors import GpunodeError


class ApiError(GpunodeError):
    """The gRPC API could not serve or make a call."""


class InvalidRequest(ApiError):
    """A request field is missing or malformed (an id that is not 64 hex digits, a bad amount)."""


class UploadTooLarge(ApiError):
    """A model upload is larger than `api.max_upload_bytes`."""


class UploadCorrupt(ApiError):
    """An uploaded file does not match the size or sha256 its header declared."""


class NotAProvider(ApiError):
    """A provider call reached a node that does not serve jobs."""


class NotSupported(ApiError):
    """This node's build does not offer the asked-for call."""


class NodeUnreachable(ApiError):
    """No node answers at the API address."""


class ApiCallFailed(ApiError):
    """The node answered a call with an error status; `code` is the gRPC status code's name."""

    def __init__(self, message: str, *, code: str, error_type: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code
        self.error_type = error_type
