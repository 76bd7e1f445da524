"""A typed asyncio client of a node's gRPC API, used by the CLI and the SDK.

Answers come back as the façade's views (`node.domain.service`); a refused call raises
`ApiCallFailed` carrying the status code, the error's message and its hint, and a node that does
not answer at all raises `NodeUnreachable` with the command that starts one.

    async with await ApiClient.connect("127.0.0.1:50051") as api:
        job = await api.submit_job(JobSpec(model_id=..., input=...))
        async for update in api.watch_job(job.job_id):
            ...
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
import grpc.aio

from node.api import convert
from node.api.auth import bearer
from node.api.errors import ApiCallFailed, InvalidRequest, NodeUnreachable
from node.api.interceptors import CORRELATION_KEY, ERROR_TYPE_KEY, HINT_KEY
from node.domain.service import (
    DisputeView,
    EarningsView,
    JobFilter,
    JobSpec,
    JobView,
    ModelUpload,
    ModelView,
    NodeStatusView,
    PeerView,
    ProviderStatusView,
    SettlementReport,
    VerificationView,
)
from node.executor.files import sha256_file
from node.executor.hf_model import is_hf_dir, read_hf_dir
from node.executor.manifest import MANIFEST_FILE, Quantization, parse_manifest
from node.gen.gpunode.v1 import api_pb2 as pb

api_grpc: Any = importlib.import_module("node.gen.gpunode.v1.api_pb2_grpc")

DEFAULT_CONNECT_TIMEOUT_S = 3.0
DEFAULT_CHUNK_BYTES = 1 << 20
DEFAULT_MAX_MESSAGE_BYTES = 256 * 2**20
# Room the other fields of a SubmitJob message take next to the input bytes.
_ENVELOPE_BYTES = 4096
# Called with (bytes sent so far, total bytes) while a model uploads.
UploadProgress = Callable[[int, int], None]
# How gRPC words an UNAVAILABLE that came from no server answering, rather than from the node.
_TRANSPORT_FAILURES = ("failed to connect", "connection refused", "socket closed", "connect failed")


def dial_target(listen: str) -> str:
    """Where to dial a node that listens on `listen` (a wildcard host is reached on loopback)."""
    host, _, port = listen.rpartition(":")
    if host in ("0.0.0.0", "[::]", "::", ""):  # noqa: S104 (a listen address read, not bound)
        host = "127.0.0.1"
    return f"{host}:{port}"


def unreachable(target: str) -> NodeUnreachable:
    return NodeUnreachable(
        f"no node at {target}",
        hint="start one with `gpunode provider start` or `gpunode devnet`",
    )


class ApiClient:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        target: str,
        *,
        token: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.target = target
        self._channel = channel
        self._max_message_bytes = max_message_bytes
        self._metadata = bearer(token) if token else ()
        self._jobs = api_grpc.JobServiceStub(channel)
        self._provider = api_grpc.ProviderServiceStub(channel)
        self._models = api_grpc.ModelServiceStub(channel)
        self._node = api_grpc.NodeServiceStub(channel)
        self._disputes = api_grpc.DisputeServiceStub(channel)

    @classmethod
    async def connect(
        cls,
        target: str,
        *,
        timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        token: str | None = None,
    ) -> ApiClient:
        """Open a channel and wait until the node answers; `NodeUnreachable` after `timeout_s`.

        `token` is the node's API token (`<home>/api.token`) when it asks for one.
        """
        target = dial_target(target)
        channel = grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        try:
            async with asyncio.timeout(timeout_s):
                await _ready_or_refused(channel)
        except (TimeoutError, ConnectionRefusedError):
            await channel.close()
            raise unreachable(target) from None
        return cls(channel, target, token=token, max_message_bytes=max_message_bytes)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- jobs ----------------------------------------------------------------------------------

    async def submit_job(self, spec: JobSpec) -> JobView:
        if len(spec.input) > self._max_message_bytes - _ENVELOPE_BYTES:
            raise InvalidRequest(
                f"the input is {len(spec.input)} bytes, more than one API message carries "
                f"({self._max_message_bytes - _ENVELOPE_BYTES})",
                hint="split the job, or raise api.max_message_bytes on the node and this client",
            )
        request = pb.SubmitJobRequest(
            model_id=spec.model_id,
            input=spec.input,
            payment=convert.PAYMENT_TO_PB[spec.payment],
            max_price_wei=str(spec.max_price_wei),
            timeout_ms=round(spec.timeout_s * 1000),
            provider=spec.provider or "",
            stream=spec.stream,
            precision=spec.precision or "",
        )
        return convert.job_from_pb(await self._call(self._jobs.SubmitJob, request))

    async def get_job(self, job_id: str, *, with_output: bool = True) -> JobView:
        request = pb.GetJobRequest(job_id=job_id, omit_output=not with_output)
        return convert.job_from_pb(await self._call(self._jobs.GetJob, request))

    async def list_jobs(self, query: JobFilter | None = None) -> tuple[JobView, ...]:
        query = query or JobFilter()
        request = pb.ListJobsRequest(
            role=convert.ROLE_TO_PB[query.role] if query.role else pb.ROLE_UNSPECIFIED,
            states=[s.value for s in query.states],
            limit=query.limit,
            offset=query.offset,
        )
        answer = await self._call(self._jobs.ListJobs, request)
        return tuple(convert.job_from_pb(j) for j in answer.jobs)

    async def cancel_job(self, job_id: str) -> JobView:
        return convert.job_from_pb(await self._call(self._jobs.CancelJob, pb.CancelJobRequest(job_id=job_id)))

    async def deposit(self, amount_wei: int) -> int:
        """Add `amount_wei` to the node's voucher deposit; returns the deposit's balance."""
        answer = await self._call(self._jobs.Deposit, pb.DepositRequest(amount_wei=str(amount_wei)))
        return int(answer.balance_wei)

    async def list_disputes(self) -> tuple[DisputeView, ...]:
        answer = await self._call(self._disputes.ListDisputes, pb.ListDisputesRequest())
        return tuple(convert.dispute_from_pb(message) for message in answer.disputes)

    async def get_dispute(self, dispute_id: str) -> DisputeView:
        answer = await self._call(self._disputes.GetDispute, pb.GetDisputeRequest(dispute_id=dispute_id))
        return convert.dispute_from_pb(answer)

    async def open_dispute(self, job_id: str) -> DisputeView:
        """Dispute the result of a job this node paid for, posting the court's bond."""
        answer = await self._call(self._disputes.OpenDispute, pb.OpenDisputeRequest(job_id=job_id))
        return convert.dispute_from_pb(answer)

    async def verify_job(self, job_id: str) -> VerificationView:
        """Re-run a verified job on another provider now and compare (a spot check)."""
        answer = await self._call(self._jobs.VerifyJob, pb.VerifyJobRequest(job_id=job_id))
        return convert.verification_from_pb(answer)

    async def watch_job(self, job_id: str, *, omit_output: bool = False) -> AsyncIterator[JobView]:
        """The job now and after every transition; ends after the terminal update."""
        call = self._jobs.WatchJob(
            pb.WatchJobRequest(job_id=job_id, omit_output=omit_output), metadata=self._metadata
        )
        try:
            async for message in call:
                yield convert.job_from_pb(message)
        except grpc.aio.AioRpcError as exc:
            raise self._failure(exc) from None
        finally:
            call.cancel()

    async def follow_job_text(self, job_id: str) -> AsyncIterator[str]:
        """A streaming job's text as its provider produces it; ends with the attempt."""
        call = self._jobs.FollowJobText(pb.FollowJobTextRequest(job_id=job_id), metadata=self._metadata)
        try:
            async for message in call:
                yield message.text
        except grpc.aio.AioRpcError as exc:
            raise self._failure(exc) from None
        finally:
            call.cancel()

    # -- provider ------------------------------------------------------------------------------

    async def provider_status(self) -> ProviderStatusView:
        answer = await self._call(self._provider.GetStatus, pb.ProviderStatusRequest())
        return convert.provider_status_from_pb(answer)

    async def earnings(self) -> EarningsView:
        return convert.earnings_from_pb(await self._call(self._provider.GetEarnings, pb.EarningsRequest()))

    async def settle(self) -> SettlementReport:
        return convert.settlement_from_pb(await self._call(self._provider.Settle, pb.SettleRequest()))

    # -- models --------------------------------------------------------------------------------

    async def upload_model_dir(
        self,
        directory: Path,
        *,
        progress: UploadProgress | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        quantization: Quantization | None = None,
    ) -> ModelView:
        """Upload a model directory holding `manifest.json` and the files it pins, or a Hugging
        Face model directory (its manifest is made here, for its `quantization` variant if given;
        the node checks every file again)."""
        if is_hf_dir(directory):
            manifest, hf_files = read_hf_dir(directory, quantization=quantization)
            header = pb.UploadModelHeader(
                manifest=manifest.canonical_bytes(), files=[_describe(f) for f in hf_files.values()]
            )
            return await self._upload(header, list(hf_files.values()), progress, chunk_bytes)
        manifest_path = directory / MANIFEST_FILE
        if not manifest_path.is_file():
            raise InvalidRequest(
                f"{directory} has no {MANIFEST_FILE}",
                hint="give a model directory (e.g. from scripts/make_builtin_models.py) or a .pt2 file",
            )
        manifest_bytes = manifest_path.read_bytes()
        files = [directory / name for name in parse_manifest(manifest_bytes).files]
        header = pb.UploadModelHeader(manifest=manifest_bytes, files=[_describe(f) for f in files])
        return await self._upload(header, files, progress, chunk_bytes)

    async def upload_program(
        self,
        program: Path,
        upload: ModelUpload,
        *,
        progress: UploadProgress | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> ModelView:
        """Upload a `torch.export` program (.pt2) with the description of how to run it."""
        spec = pb.ProgramSpec(
            name=upload.name,
            inputs=[
                pb.TensorSpec(name=t.name, dtype=t.dtype, shape=[-1 if d is None else d for d in t.shape])
                for t in upload.inputs
            ],
            outputs=list(upload.outputs),
            batchable=upload.batchable,
        )
        header = pb.UploadModelHeader(program=spec, files=[_describe(program)])
        return await self._upload(header, [program], progress, chunk_bytes)

    async def remove_model(self, model_id: str, *, delete_files: bool = False) -> ModelView:
        request = pb.RemoveModelRequest(model_id=model_id, delete_files=delete_files)
        return convert.model_from_pb(await self._call(self._models.RemoveModel, request))

    async def list_models(self) -> tuple[ModelView, ...]:
        answer = await self._call(self._models.ListModels, pb.ListModelsRequest())
        return tuple(convert.model_from_pb(m) for m in answer.models)

    # -- node ----------------------------------------------------------------------------------

    async def node_status(self) -> NodeStatusView:
        return convert.node_status_from_pb(await self._call(self._node.GetStatus, pb.NodeStatusRequest()))

    async def peers(self) -> tuple[PeerView, ...]:
        answer = await self._call(self._node.ListPeers, pb.ListPeersRequest())
        return tuple(convert.peer_from_pb(p) for p in answer.peers)

    # -- plumbing ------------------------------------------------------------------------------

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise self._failure(exc) from None

    async def _upload(
        self,
        header: pb.UploadModelHeader,
        files: list[Path],
        progress: UploadProgress | None,
        chunk_bytes: int,
    ) -> ModelView:
        total = sum(f.size for f in header.files)

        async def requests() -> AsyncIterator[pb.UploadModelRequest]:
            yield pb.UploadModelRequest(header=header)
            sent = 0
            for chunk in _chunks(files, chunk_bytes):
                yield pb.UploadModelRequest(chunk=chunk)
                sent += len(chunk)
                if progress is not None:
                    progress(sent, total)

        return convert.model_from_pb(await self._call(self._models.UploadModel, requests()))

    def _failure(self, exc: grpc.aio.AioRpcError) -> Exception:
        code = exc.code()
        details = exc.details() or code.name
        if code is grpc.StatusCode.UNAVAILABLE and _is_transport_failure(details):
            return unreachable(self.target)
        metadata = dict(exc.trailing_metadata() or ())
        hint_raw = metadata.get(HINT_KEY)
        hint = hint_raw.decode() if isinstance(hint_raw, bytes) else None
        message = details.removesuffix(f" — {hint}") if hint else details
        error_type = str(metadata.get(ERROR_TYPE_KEY, ""))
        correlation = metadata.get(CORRELATION_KEY)
        if correlation and not hint:
            hint = f"correlation id {correlation}"
        return ApiCallFailed(message, code=code.name, error_type=error_type, hint=hint)


async def _ready_or_refused(channel: grpc.aio.Channel) -> None:
    """Wait for the channel to connect; a refused connection fails at once instead of retrying."""
    state = channel.get_state(try_to_connect=True)
    while state is not grpc.ChannelConnectivity.READY:
        if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            raise ConnectionRefusedError
        await channel.wait_for_state_change(state)
        state = channel.get_state(try_to_connect=True)


def _is_transport_failure(details: str) -> bool:
    lowered = details.lower()
    return any(marker in lowered for marker in _TRANSPORT_FAILURES)


def _describe(path: Path) -> pb.UploadedFile:
    if not path.is_file():
        raise InvalidRequest(f"{path} does not exist or is not a file")
    return pb.UploadedFile(name=path.name, size=path.stat().st_size, sha256=sha256_file(path))


def _chunks(files: list[Path], chunk_bytes: int) -> Iterator[bytes]:
    for path in files:
        with path.open("rb") as f:
            while block := f.read(chunk_bytes):
                yield block
