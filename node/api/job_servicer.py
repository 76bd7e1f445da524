"""`gpunode.v1.JobService`: jobs this node submits and pays for, over the `ClientJobsApi` façade."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

import grpc.aio

from node.api.convert import (
    job_filter_from_pb,
    job_spec_from_pb,
    job_to_pb,
    parse_id,
    parse_wei,
    verification_to_pb,
)
from node.api.errors import InvalidRequest, NotSupported
from node.domain.service import ClientJobsApi, VerificationApi
from node.gen.gpunode.v1 import api_pb2 as pb


@runtime_checkable
class Depositing(Protocol):
    """Client jobs that can top up the node's voucher deposit (`node.client.jobs.ClientJobs` can)."""

    async def deposit(self, amount_wei: int) -> int: ...


class JobServicer:
    def __init__(self, jobs: ClientJobsApi, verification: VerificationApi | None = None) -> None:
        self._jobs = jobs
        self._verification = verification

    async def VerifyJob(
        self, request: pb.VerifyJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.Verification:
        if self._verification is None:
            raise NotSupported("this node does not run spot checks")
        view = await self._verification.verify_job(parse_id(request.job_id, "job id"))
        return verification_to_pb(view)

    async def SubmitJob(self, request: pb.SubmitJobRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        view = await self._jobs.submit(job_spec_from_pb(request))
        return job_to_pb(view)

    async def GetJob(self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        view = await self._jobs.get(parse_id(request.job_id, "job id"))
        return job_to_pb(view, include_output=not request.omit_output)

    async def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListJobsResponse:
        views = await self._jobs.list(job_filter_from_pb(request))
        return pb.ListJobsResponse(jobs=[job_to_pb(v, include_output=False) for v in views])

    async def CancelJob(self, request: pb.CancelJobRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        view = await self._jobs.cancel(parse_id(request.job_id, "job id"))
        return job_to_pb(view, include_output=False)

    async def WatchJob(
        self, request: pb.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Job]:
        job_id = parse_id(request.job_id, "job id")
        async for view in self._jobs.watch(job_id):
            yield job_to_pb(view, include_output=view.terminal or not request.omit_output)

    async def FollowJobText(
        self, request: pb.FollowJobTextRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.JobText]:
        async for piece in self._jobs.follow_text(parse_id(request.job_id, "job id")):
            yield pb.JobText(text=piece)

    async def Deposit(
        self, request: pb.DepositRequest, context: grpc.aio.ServicerContext
    ) -> pb.DepositResponse:
        amount = parse_wei(request.amount_wei, "deposit")
        if amount == 0:
            raise InvalidRequest("a deposit of 0 wei changes nothing", hint="give the amount to add, in wei")
        if not isinstance(self._jobs, Depositing):
            raise NotSupported("this node's jobs service takes no deposits")
        return pb.DepositResponse(balance_wei=str(await self._jobs.deposit(amount)))
