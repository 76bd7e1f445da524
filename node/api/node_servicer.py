"""`gpunode.v1.NodeService`: the node's identity, chain and overlay."""

from __future__ import annotations

import grpc.aio

from node import __version__
from node.api.convert import node_status_to_pb, peer_to_pb
from node.domain.service import NodeApi
from node.gen.gpunode.v1 import api_pb2 as pb


class NodeServicer:
    def __init__(self, node: NodeApi) -> None:
        self._node = node

    async def GetStatus(
        self, request: pb.NodeStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.NodeStatus:
        return node_status_to_pb(await self._node.status(), version=__version__)

    async def ListPeers(
        self, request: pb.ListPeersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPeersResponse:
        return pb.ListPeersResponse(peers=[peer_to_pb(p) for p in await self._node.peers()])
