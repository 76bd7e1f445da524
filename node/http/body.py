"""Reading a request's body with a bound: an oversize body is refused before it is read whole."""

from __future__ import annotations

from starlette.requests import Request

from node.http.errors import HttpError


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise _too_large(limit)
    return bytes(body)


def _too_large(limit: int) -> HttpError:
    return HttpError(f"the request body is larger than {limit} bytes", code="request_too_large")
