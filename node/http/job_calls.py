"""A job's walk as the HTTP face sees it, over the node's façade: submit, wait for its provider or
its verified result, follow its streamed text, and give it up when the caller leaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Protocol, runtime_checkable

from node.domain.service import ClientJobsApi, JobSpec, JobView, ModelInfoView, NodeApi
from node.domain.state import JobState
from node.errors import GpunodeError, SchedulerError
from node.executor.manifest import normalize_model_id
from node.http.errors import HttpError
from node.logging import get_logger

log = get_logger(__name__)

# A job is done for a caller once its result is verified (or it ended without one).
_DONE = frozenset({JobState.VERIFIED, JobState.SETTLED})


@runtime_checkable
class DescribesModels(Protocol):
    """Client jobs that can say what an offered model is (`node.client.jobs.ClientJobs` can)."""

    async def model_info(self, model_id: str) -> ModelInfoView | None: ...


class JobCalls:
    def __init__(self, jobs: ClientJobsApi, node: NodeApi, *, max_price_wei: int, timeout_s: float) -> None:
        self.jobs = jobs
        self.node = node
        self.max_price_wei = max_price_wei
        self.timeout_s = timeout_s
        self._background: set[asyncio.Task[None]] = set()

    async def model_id(self, model: str) -> str:
        """The hex id a request's `model` names: an id, or the name of one model on offer; 404
        when it names none."""
        try:
            return normalize_model_id(model)
        except GpunodeError:
            pass
        named = [info.model_id for info in await self.offered_models() if info.name == model]
        if len(named) > 1:
            raise HttpError(
                f"{len(named)} models on offer are named {model!r}; name one by its id: {', '.join(named)}",
                param="model",
            )
        if not named:
            raise _unknown_model(model)
        return named[0]

    async def offered_models(self) -> list[ModelInfoView]:
        """Every model on offer, with its name and task where a provider could tell them."""
        return [await self.model_info(model_id) for model_id in sorted(await self.offered())]

    async def offered(self) -> set[str]:
        """The ids of the models providers on the overlay offer."""
        return {m.model_id for p in await self.node.peers() for m in p.models}

    async def model_info(self, model_id: str) -> ModelInfoView:
        info = await self.jobs.model_info(model_id) if isinstance(self.jobs, DescribesModels) else None
        return info or ModelInfoView(model_id, model_id, None)

    async def submit(self, model_id: str, data: bytes, *, stream: bool = False) -> JobView:
        spec = JobSpec(
            model_id=model_id,
            input=data,
            max_price_wei=self.max_price_wei,
            timeout_s=self.timeout_s,
            stream=stream,
        )
        try:
            return await self.jobs.submit(spec)
        except SchedulerError:
            if model_id not in await self.offered():
                raise _unknown_model(model_id) from None
            raise

    async def matched(self, job_id: str) -> JobView:
        """The job once a provider was chosen for it (or once it ended)."""
        async for view in self.jobs.watch(job_id):
            if view.provider is not None or view.terminal:
                return view
        return await self.jobs.get(job_id)

    async def result(self, job_id: str) -> JobView:
        """The job with its verified output; 502 in OpenAI's shape when it ended without one."""
        view = None
        async for view in self.jobs.watch(job_id):
            if (view.state in _DONE and view.output is not None) or view.terminal:
                break
        if view is None or view.output is None or view.state not in _DONE:
            state = view.state.value if view is not None else "unknown"
            error = view.error if view is not None else None
            raise HttpError(
                f"job {job_id} ended {state} without a result: {error or 'no reason given'}",
                status=502,
                code="job_failed",
                kind="server_error",
            )
        return view

    def text(self, job_id: str) -> AsyncIterator[str]:
        return self.jobs.follow_text(job_id)

    def abandon(self, job_id: str) -> None:
        """The caller left: cancel the job if it is not paid for yet (a paid one runs to its
        verified result, which stays in the node for `gpunode job get`)."""
        self._spawn(self._cancel(job_id))

    async def _cancel(self, job_id: str) -> None:
        try:
            await self.jobs.cancel(job_id)
            log.info("http_job_abandoned", job_id=job_id, cancelled=True)
        except GpunodeError as exc:
            log.info("http_job_abandoned", job_id=job_id, cancelled=False, reason=str(exc))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        # Not awaited where it starts: that may be a request being cancelled.
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _unknown_model(model: str) -> HttpError:
    return HttpError(
        f"no provider on the overlay offers model {model!r}; GET /v1/models lists those offered",
        status=404,
        code="model_not_found",
        param="model",
    )
