"""`/metrics`: the node's Prometheus metrics, with the wei figures the façade knows read fresh."""

from __future__ import annotations

from dataclasses import asdict

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from node.domain.service import NodeServices
from node.errors import GpunodeError
from node.http.dashboard import ClientView
from node.logging import get_logger
from node.metrics import CONTENT_TYPE, NodeMetrics

log = get_logger(__name__)


class MetricsRoute:
    def __init__(self, services: NodeServices, metrics: NodeMetrics) -> None:
        self.services = services
        self.metrics = metrics

    def routes(self) -> list[Route]:
        return [Route("/metrics", self.scrape, methods=["GET"])]

    async def scrape(self, request: Request) -> Response:
        try:
            await self._read_wei()
        except GpunodeError as exc:
            # The chain may be unreachable: the rest of the figures still count.
            log.warning("metrics_wei_unread", error=str(exc))
        return Response(self.metrics.export(), media_type=CONTENT_TYPE)

    async def _read_wei(self) -> None:
        provider, jobs = self.services.provider, self.services.jobs
        if provider is not None:
            earnings = asdict(await provider.earnings())
            for name, value in earnings.items():
                if name.endswith("_wei"):
                    self.metrics.provider_wei.labels(name.removesuffix("_wei")).set(value)
            self.metrics.stake_wei.set((await provider.status()).stake_wei)
        if isinstance(jobs, ClientView):
            self.metrics.deposit_wei.set(await jobs.deposit_balance())
