"""The HTTP face's one ASGI app: routes, errors in OpenAI's shape, request counts, auth."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from node.config import HttpSettings
from node.domain.service import NodeServices
from node.errors import GpunodeError
from node.http.auth import BearerAuth
from node.http.dashboard import Dashboard
from node.http.errors import HttpError, error_response
from node.http.job_calls import JobCalls
from node.http.metrics_route import MetricsRoute
from node.http.openai_routes import OpenAiRoutes
from node.logging import get_logger
from node.metrics import NodeMetrics

log = get_logger(__name__)


def build_app(
    services: NodeServices, settings: HttpSettings, metrics: NodeMetrics, *, token: str | None
) -> Starlette:
    calls = JobCalls(
        services.jobs, services.node, max_price_wei=settings.max_price_wei, timeout_s=settings.timeout_s
    )
    openai = OpenAiRoutes(calls, metrics, max_body_bytes=settings.max_body_bytes)
    routes = [
        *openai.routes(),
        *MetricsRoute(services, metrics).routes(),
        *Dashboard(services, calls).routes(),
    ]
    middleware = [Middleware(CountRequests, metrics=metrics)]
    if token is not None:
        middleware.append(Middleware(BearerAuth, token=token))
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={GpunodeError: _gpunode_error, HTTPException: _http_exception},
    )


async def _gpunode_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, GpunodeError):
        raise exc
    if not isinstance(exc, HttpError):
        log.info("http_request_refused", path=request.url.path, error=str(exc))
    return error_response(exc)


async def _http_exception(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "invalid_request")
    return error_response(HttpError(f"{request.method} {request.url.path}: {exc}", status=status, code=code))


class CountRequests:
    """Counts each request by route template and status, for `/metrics`."""

    def __init__(self, app: ASGIApp, metrics: NodeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.http_requests.labels(_route(scope), str(status)).inc()


def _route(scope: Scope) -> str:
    path: str = scope["path"]
    # Bounded label values: known paths by name, anything else as one.
    known = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/metrics", "/")
    return path if path in known or path.startswith("/api/") else "other"
