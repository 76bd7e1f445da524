"""Server interceptors: every error a servicer raises leaves the node as one gRPC status.

A `GpunodeError` becomes the code `status_map` gives its class, with its message and hint as the
details and its class name and hint in trailing metadata (for typed clients). Anything else is a
bug: the caller gets INTERNAL and a correlation id, the log gets the traceback under that id.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from node.api.status_map import details_for, status_for
from node.errors import GpunodeError
from node.logging import get_logger

log = get_logger(__name__)

ERROR_TYPE_KEY = "gpunode-error-type"
HINT_KEY = "gpunode-hint-bin"  # -bin: a hint may hold any UTF-8, and plain metadata is ASCII only
CORRELATION_KEY = "gpunode-correlation-id"

Behavior = Callable[..., Any]


async def _abort_for(error: BaseException, context: grpc.aio.ServicerContext, method: str) -> None:
    """Abort the call with the status `error` deserves; always raises."""
    if isinstance(error, GpunodeError):
        code = status_for(error)
        metadata: list[tuple[str, str | bytes]] = [(ERROR_TYPE_KEY, type(error).__name__)]
        if error.hint:
            metadata.append((HINT_KEY, error.hint.encode()))
        context.set_trailing_metadata(tuple(metadata))
        name = type(error).__name__
        log.info("api_call_refused", method=method, code=code.name, error=name, reason=error.message)
        await context.abort(code, details_for(error))
    correlation_id = uuid.uuid4().hex[:16]
    log.error("api_internal_error", method=method, correlation_id=correlation_id, exc_info=error)
    context.set_trailing_metadata(((CORRELATION_KEY, correlation_id),))
    await context.abort(
        grpc.StatusCode.INTERNAL,
        f"the node hit an internal error (correlation id {correlation_id}); "
        "its log has the details under that id",
    )


def _unary(behavior: Behavior, method: str) -> Behavior:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _abort_for(error, context, method)

    return call


def _server_stream(behavior: Behavior, method: str) -> Behavior:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for response in behavior(request, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _abort_for(error, context, method)

    return call


class ErrorStatusInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps every unary and server-streaming handler (the API has no bidirectional calls)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        serdes = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(_unary(handler.unary_unary, method), **serdes)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(_unary(handler.stream_unary, method), **serdes)
        if handler.unary_stream is not None:
            wrapped = _server_stream(handler.unary_stream, method)
            return grpc.unary_stream_rpc_method_handler(wrapped, **serdes)
        return handler
