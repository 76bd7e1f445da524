"""`/v1/*`: OpenAI's chat completions, completions (streamed as server-sent events), embeddings
and models, each backed by a marketplace job that this node matches, pays for and verifies."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from safetensors.numpy import load
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from node.domain.service import JobView
from node.executor.hf_requests import EMBED_OUTPUT, GenerationResult, parse_generation
from node.http import openai_schema as schema
from node.http.body import read_body
from node.http.errors import HttpError, error_body
from node.http.job_calls import JobCalls
from node.metrics import NodeMetrics

JOB_HEADER = "x-gpunode-job-id"
PROVIDER_HEADER = "x-gpunode-provider"


def job_headers(view: JobView, *, job_s: float | None = None, http_s: float | None = None) -> dict[str, str]:
    """The job's id and provider; with the times, `server-timing`: how long the job took from
    submission to its verified result (`job`) and the HTTP face's own work around it (`http`), so a
    caller can tell them from the transport's."""
    headers = {JOB_HEADER: view.job_id}
    if view.provider is not None:
        headers[PROVIDER_HEADER] = view.provider
    if job_s is not None and http_s is not None:
        headers["server-timing"] = f"job;dur={job_s * 1000:.3f}, http;dur={http_s * 1000:.3f}"
    return headers


class OpenAiRoutes:
    def __init__(self, calls: JobCalls, metrics: NodeMetrics, *, max_body_bytes: int) -> None:
        self.calls = calls
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    def routes(self) -> list[Route]:
        return [
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/embeddings", self.embeddings, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
        ]

    async def chat(self, request: Request) -> Response:
        entered = time.perf_counter()
        parsed = schema.parse_body(schema.ChatRequest, await read_body(request, self.max_body_bytes))
        return await self._generate(parsed, parsed.job_input(), chat=True, entered=entered)

    async def completions(self, request: Request) -> Response:
        entered = time.perf_counter()
        parsed = schema.parse_body(schema.CompletionRequest, await read_body(request, self.max_body_bytes))
        return await self._generate(parsed, parsed.job_input(), chat=False, entered=entered)

    async def embeddings(self, request: Request) -> Response:
        entered = time.perf_counter()
        parsed = schema.parse_body(schema.EmbeddingRequest, await read_body(request, self.max_body_bytes))
        model_id = await self.calls.model_id(parsed.model)
        started = time.perf_counter()
        submitted = await self.calls.submit(model_id, parsed.job_input())
        view = await self.calls.result(submitted.job_id)
        took = time.perf_counter() - started
        vectors = load(view.output or b"")[EMBED_OUTPUT]
        tokens = sum(len(text.split()) for text in parsed.texts())
        body = schema.embeddings(parsed.model, vectors, parsed.encoding_format, tokens)
        http_s = time.perf_counter() - entered - took
        return JSONResponse(body, headers=job_headers(view, job_s=took, http_s=http_s))

    async def models(self, request: Request) -> Response:
        offers: dict[str, dict[str, Any]] = {}
        for peer in await self.calls.node.peers():
            for model in peer.models:
                offer = offers.setdefault(
                    model.model_id,
                    {
                        "created": 0,
                        "owned_by": "gpunode",
                        "providers": 0,
                        "min_price_wei": None,
                        "warm": False,
                    },
                )
                offer["providers"] += 1
                offer["warm"] = offer["warm"] or model.warm
                lowest = offer["min_price_wei"]
                offer["min_price_wei"] = str(
                    model.price_per_job_wei if lowest is None else min(int(lowest), model.price_per_job_wei)
                )
        for model_id, offer in offers.items():
            info = await self.calls.model_info(model_id)
            offer.update(name=info.name, task=info.task)
        return JSONResponse(schema.model_list(offers))

    # generation ---------------------------------------------------------------------------------

    async def _generate(
        self,
        parsed: schema.ChatRequest | schema.CompletionRequest,
        data: bytes,
        *,
        chat: bool,
        entered: float,
    ) -> Response:
        model_id = await self.calls.model_id(parsed.model)
        started = time.perf_counter()
        submitted = await self.calls.submit(model_id, data, stream=parsed.stream)
        if parsed.stream:
            matched = await self.calls.matched(submitted.job_id)
            if matched.provider is None:
                await self.calls.result(submitted.job_id)  # it ended unmatched: its error, as a 502
            usage = parsed.stream_options is not None and parsed.stream_options.include_usage
            events = self._events(submitted.job_id, parsed.model, chat=chat, started=started, usage=usage)
            return StreamingResponse(
                events,
                media_type="text/event-stream",
                headers={**job_headers(matched), "cache-control": "no-cache"},
            )
        view = await self.calls.result(submitted.job_id)
        took = time.perf_counter() - started
        result = self._generation(view)
        build = schema.chat_completion if chat else schema.text_completion
        body = build(view.job_id, parsed.model, result)
        http_s = time.perf_counter() - entered - took
        return JSONResponse(body, headers=job_headers(view, job_s=took, http_s=http_s))

    async def _events(
        self, job_id: str, model: str, *, chat: bool, started: float, usage: bool
    ) -> AsyncIterator[str]:
        finished = False
        try:
            streamed = False
            async for piece in self.calls.text(job_id):
                if not streamed:
                    self.metrics.first_token_seconds.observe(time.perf_counter() - started)
                    streamed = True
                yield _event(schema.chunk(job_id, model, chat=chat, text=piece, finish=None))
            try:
                view = await self.calls.result(job_id)
            except HttpError as exc:
                yield _event(error_body(exc))
            else:
                result = self._generation(view)
                if not streamed:
                    # It ended before we followed it (its text comes in one piece), or it made no
                    # text: what goes out now is its first.
                    self.metrics.first_token_seconds.observe(time.perf_counter() - started)
                if not streamed and result.text:
                    yield _event(schema.chunk(job_id, model, chat=chat, text=result.text, finish=None))
                finish = schema.FINISH_REASONS[result.finish_reason]
                yield _event(schema.chunk(job_id, model, chat=chat, text=None, finish=finish))
                if usage:
                    yield _event(schema.usage_chunk(job_id, model, result, chat=chat))
            yield "data: [DONE]\n\n"
            finished = True
        finally:
            if not finished:
                self.calls.abandon(job_id)

    def _generation(self, view: JobView) -> GenerationResult:
        result = parse_generation(view.output or b"")
        self.metrics.tokens.inc(result.completion_tokens)
        return result


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"
