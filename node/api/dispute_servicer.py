"""`gpunode.v1.DisputeService`: the disputes this node takes part in at the DisputeCourt."""

from __future__ import annotations

import grpc.aio

from node.api.convert import dispute_to_pb
from node.api.errors import InvalidRequest
from node.domain.service import DisputesApi
from node.errors import ChainError
from node.gen.gpunode.v1 import api_pb2 as pb


class DisputeServicer:
    def __init__(self, disputes: DisputesApi | None) -> None:
        self._disputes = disputes

    def _court(self) -> DisputesApi:
        if self._disputes is None:
            raise ChainError(
                "the contracts this node uses have no DisputeCourt",
                hint="deploy the contracts again with `gpunode contracts deploy`",
            )
        return self._disputes

    async def ListDisputes(
        self, request: pb.ListDisputesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDisputesResponse:
        views = await self._court().list()
        return pb.ListDisputesResponse(disputes=[dispute_to_pb(view) for view in views])

    async def GetDispute(
        self, request: pb.GetDisputeRequest, context: grpc.aio.ServicerContext
    ) -> pb.Dispute:
        return dispute_to_pb(await self._court().show(request.dispute_id))

    async def OpenDispute(
        self, request: pb.OpenDisputeRequest, context: grpc.aio.ServicerContext
    ) -> pb.Dispute:
        if not request.job_id:
            raise InvalidRequest("name the job to dispute", hint="gpunode disputes open JOB_ID")
        return dispute_to_pb(await self._court().open(request.job_id))
