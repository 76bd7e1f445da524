"""`gpunode.v1.ProviderService`: this node's standing as a provider, its earnings, settling them."""

from __future__ import annotations

import grpc.aio

from node.api.convert import earnings_to_pb, provider_status_to_pb, settlement_to_pb
from node.api.errors import NotAProvider
from node.domain.service import ProviderApi
from node.gen.gpunode.v1 import api_pb2 as pb


class ProviderServicer:
    def __init__(self, provider: ProviderApi | None) -> None:
        self._provider = provider

    def _serving(self) -> ProviderApi:
        if self._provider is None:
            raise NotAProvider(
                "this node is a client only; it does not serve jobs",
                hint="run a provider with `gpunode provider start`, or point --api at one",
            )
        return self._provider

    async def GetStatus(
        self, request: pb.ProviderStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.ProviderStatus:
        return provider_status_to_pb(await self._serving().status())

    async def GetEarnings(
        self, request: pb.EarningsRequest, context: grpc.aio.ServicerContext
    ) -> pb.Earnings:
        return earnings_to_pb(await self._serving().earnings())

    async def Settle(self, request: pb.SettleRequest, context: grpc.aio.ServicerContext) -> pb.SettleResponse:
        return settlement_to_pb(await self._serving().settle())
