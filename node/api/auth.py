"""Bearer-token auth for the API: one secret in `<home>/api.token`, checked on every call.

The node makes the file on first start (mode 0600); the CLI on the same machine and home reads it
and sends it, so the owner notices nothing while other local users and remote callers are refused.
Health checks stay open, so supervisors can probe the node without the secret.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from node.api.errors import ApiError

TOKEN_FILE = "api.token"  # noqa: S105 (a file name, not a secret)
AUTH_KEY = "authorization"
_OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


def token_path(home: Path) -> Path:
    return home / TOKEN_FILE


def ensure_token(home: Path) -> str:
    """The node's API token, created with mode 0600 on first use."""
    path = token_path(home)
    try:
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_token(path)
    except OSError as exc:
        raise ApiError(f"cannot create the API token {path}: {exc.strerror}") from exc
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ApiError(
            f"cannot read the API token {path}: {exc.strerror}", hint="check the file's owner and mode (0600)"
        ) from exc
    if not token:
        raise ApiError(
            f"the API token file {path} is empty", hint="delete it; the node makes a new one on start"
        )
    return token


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata that carries `token`."""
    return ((AUTH_KEY, f"Bearer {token}"),)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, token: str, token_file: Path) -> None:
        self._expected = f"Bearer {token}".encode()
        self._token_file = token_file

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(_OPEN_PREFIXES):
            return handler
        if self._authorized(handler_call_details.invocation_metadata):
            return handler
        return self._refusal(handler)

    def _authorized(self, metadata: Any) -> bool:
        for key, value in metadata or ():
            if key == AUTH_KEY:
                given = value.encode() if isinstance(value, str) else bytes(value)
                return hmac.compare_digest(given, self._expected)
        return False

    def _refusal(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        message = (
            f"this node's API needs its token; the CLI sends the one in {self._token_file} "
            "when it runs with the node's home (GPUNODE_HOME), and other callers must send it "
            "as `authorization: Bearer <token>`"
        )

        async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        serdes = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(refuse, **serdes)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(refuse, **serdes)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(refuse, **serdes)
        return grpc.stream_stream_rpc_method_handler(refuse, **serdes)
