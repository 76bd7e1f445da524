"""The gRPC server: the four gpunode services, gRPC health and reflection, one error interceptor.

`serve(services, settings)` builds an `ApiServer`; the composition root runs it with
`await server.start()` … `await server.stop()`, or `await server.run()` inside its TaskGroup
(stops cleanly when cancelled). `ready` is set once the port is bound and calls are served.
"""

from __future__ import annotations

import asyncio
import importlib
from types import TracebackType
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from node.api.auth import TokenAuthInterceptor, ensure_token, token_path
from node.api.dispute_servicer import DisputeServicer
from node.api.errors import ApiError
from node.api.interceptors import ErrorStatusInterceptor
from node.api.job_servicer import JobServicer
from node.api.model_servicer import ModelServicer
from node.api.node_servicer import NodeServicer
from node.api.provider_servicer import ProviderServicer
from node.config import Settings
from node.domain.service import NodeServices
from node.gen.gpunode.v1 import api_pb2
from node.logging import get_logger

log = get_logger(__name__)

# The generated service module has no type stubs; loaded by name it is typed `Any`, not unchecked code.
api_grpc: Any = importlib.import_module("node.gen.gpunode.v1.api_pb2_grpc")

SERVICE_NAMES: tuple[str, ...] = tuple(
    api_pb2.DESCRIPTOR.services_by_name[name].full_name
    for name in ("JobService", "ProviderService", "ModelService", "NodeService", "DisputeService")
)


def serve(services: NodeServices, settings: Settings) -> ApiServer:
    """The API server for `services`, listening on `settings.api.listen` once started."""
    return ApiServer(services, settings)


class ApiServer:
    def __init__(self, services: NodeServices, settings: Settings) -> None:
        self._services = services
        self._settings = settings
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self.ready = asyncio.Event()
        self.port = 0

    @property
    def address(self) -> str:
        """host:port actually bound (the port is known once started, also for a `:0` listen)."""
        host = self._settings.api.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    async def start(self) -> None:
        api = self._settings.api
        interceptors: list[Any] = [ErrorStatusInterceptor()]
        if api.require_token:
            home = self._settings.home
            interceptors.insert(0, TokenAuthInterceptor(ensure_token(home), token_path(home)))
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", api.max_message_bytes),
                ("grpc.max_send_message_length", api.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        self._add_services(server)
        try:
            self.port = server.add_insecure_port(api.listen)
        except RuntimeError as exc:
            await server.stop(None)
            raise _cannot_listen(api.listen) from exc
        if self.port == 0:
            await server.stop(None)
            raise _cannot_listen(api.listen)
        await server.start()
        for name in (*SERVICE_NAMES, health.OVERALL_HEALTH):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._server = server
        self.ready.set()
        log.info("api_listening", address=self.address)

    async def stop(self, grace: float | None = None) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self.ready.clear()
        await self._health.enter_graceful_shutdown()
        await server.stop(self._settings.api.grace_s if grace is None else grace)
        log.info("api_stopped", address=self.address)

    async def run(self) -> None:
        """Serve until cancelled (or until the server terminates), then stop."""
        await self.start()
        try:
            if self._server is not None:
                await self._server.wait_for_termination()
        finally:
            await self.stop()

    async def __aenter__(self) -> ApiServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _add_services(self, server: grpc.aio.Server) -> None:
        services, api = self._services, self._settings.api
        api_grpc.add_JobServiceServicer_to_server(JobServicer(services.jobs, services.verification), server)
        api_grpc.add_ProviderServiceServicer_to_server(ProviderServicer(services.provider), server)
        api_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(
                services.models,
                staging_root=self._settings.home / "uploads",
                max_upload_bytes=api.max_upload_bytes,
            ),
            server,
        )
        api_grpc.add_NodeServiceServicer_to_server(NodeServicer(services.node), server)
        api_grpc.add_DisputeServiceServicer_to_server(DisputeServicer(services.disputes), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflected = (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(reflected, server)


def _cannot_listen(listen: str) -> ApiError:
    return ApiError(
        f"the API cannot listen on {listen}",
        hint="another node may already use that port; set api.listen (GPUNODE_API__LISTEN) to a free one",
    )
