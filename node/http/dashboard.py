"""The dashboard: a static page (`static/dashboard.html`) over one JSON endpoint, `/api/dashboard`,
which shows what a provider serves and earns and what a client runs, sees and has deposited."""

from __future__ import annotations

from dataclasses import asdict
from importlib import resources
from typing import Any, Protocol, runtime_checkable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from node.domain.service import JobFilter, JobView, NodeServices, ProviderSeenView
from node.errors import GpunodeError
from node.http.job_calls import JobCalls
from node.logging import get_logger

log = get_logger(__name__)

RECENT_JOBS = 50


@runtime_checkable
class ClientView(Protocol):
    """What a client's jobs service tells the dashboard (`node.client.jobs.ClientJobs` does)."""

    async def deposit_balance(self) -> int: ...

    def providers_seen(self) -> tuple[ProviderSeenView, ...]: ...

    def streamed_text(self, job_id: str) -> str: ...


class Dashboard:
    def __init__(self, services: NodeServices, calls: JobCalls) -> None:
        self.services = services
        self.calls = calls
        self._page = _static("dashboard.html")
        self._script = _static("dashboard.js")

    def routes(self) -> list[Route]:
        return [
            Route("/", self.page, methods=["GET"]),
            Route("/dashboard.js", self.script, methods=["GET"]),
            Route("/api/dashboard", self.state, methods=["GET"]),
            Route("/healthz", self.health, methods=["GET"]),
        ]

    async def page(self, request: Request) -> Response:
        return Response(self._page, media_type="text/html; charset=utf-8")

    async def script(self, request: Request) -> Response:
        return Response(self._script, media_type="text/javascript; charset=utf-8")

    async def health(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def state(self, request: Request) -> Response:
        services = self.services
        status = await services.node.status()
        jobs = await services.jobs.list(JobFilter(limit=RECENT_JOBS))
        body: dict[str, Any] = {
            "node": {
                "address": status.address,
                "peer_id": status.peer_id,
                "chain_id": status.chain_id,
                "block_number": status.block_number,
                "provider": status.provider,
            },
            "jobs": [_job(view, self._text(view)) for view in jobs],
            "provider": await self._provider(),
            "client": await self._client(),
        }
        return JSONResponse(body)

    def _text(self, view: JobView) -> str | None:
        """The text a live streaming job produced so far (None for one that does not stream)."""
        jobs = self.services.jobs
        if view.terminal or not isinstance(jobs, ClientView):
            return None
        return jobs.streamed_text(view.job_id) or None

    async def _provider(self) -> dict[str, Any] | None:
        provider = self.services.provider
        if provider is None:
            return None
        status, earnings = await provider.status(), await provider.earnings()
        return {
            "status": _wei_strings(asdict(status)),
            "earnings": _wei_strings(asdict(earnings)),
            "models": [asdict(m) for m in await self.services.models.list()],
            "devices": await self._devices(status.address),
        }

    async def _devices(self, address: str) -> list[str]:
        for peer in await self.services.node.peers():
            if peer.address == address:
                return list(peer.devices)
        return []

    async def _client(self) -> dict[str, Any] | None:
        jobs = self.services.jobs
        if not isinstance(jobs, ClientView):
            return None
        try:
            deposit: str | None = str(await jobs.deposit_balance())
        except GpunodeError as exc:
            log.warning("dashboard_deposit_unread", error=str(exc))
            deposit = None
        return {"deposit_wei": deposit, "providers": [_wei_strings(asdict(p)) for p in jobs.providers_seen()]}


def _job(view: JobView, text: str | None) -> dict[str, Any]:
    return {
        "job_id": view.job_id,
        "role": view.role.value,
        "model_id": view.model_id,
        "payment": view.payment.value,
        "state": view.state.value,
        "terminal": view.terminal,
        "provider": view.provider,
        "price_wei": str(view.price_wei),
        "error": view.error,
        "created_at": view.created_at,
        "updated_at": view.updated_at,
        "output_size": view.output_size,
        "text": text,
    }


def _wei_strings(fields: dict[str, Any]) -> dict[str, Any]:
    """Wei amounts as strings, nested ones too: they overflow a JavaScript number."""
    return {k: _wei_value(k, v) for k, v in fields.items()}


def _wei_value(key: str, value: Any) -> Any:
    if isinstance(value, dict):
        return _wei_strings(value)
    if isinstance(value, list | tuple):
        return [_wei_value(key, v) for v in value]
    return str(value) if key.endswith("_wei") and isinstance(value, int) else value


def _static(name: str) -> bytes:
    return (resources.files("node.http") / "static" / name).read_bytes()
