"""OpenAI's request bodies as the HTTP face reads them: the job input each becomes, and the clear
400 (naming the field) each bad one gets. Pure: no node."""

from __future__ import annotations

import json

import numpy as np
import pytest

from node.errors import ChainError, JobError, SchedulerError, SettlementError
from node.executor.errors import InputTooLarge, UnknownModel
from node.executor.hf_requests import EmbedRequest, GenerateRequest
from node.http.errors import HttpError, as_http_error
from node.http.openai_schema import ChatRequest, CompletionRequest, EmbeddingRequest, embeddings, parse_body

MODEL = "ab" * 32


def body(**fields: object) -> bytes:
    return json.dumps({"model": MODEL, **fields}).encode()


def test_can_turn_a_chat_request_into_a_generate_job() -> None:
    request = parse_body(
        ChatRequest,
        body(
            messages=[
                {"role": "developer", "content": "Be brief"},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}],
                },
            ],
            max_completion_tokens=7,
            temperature=0,
            stop="\n",
            seed=5,
            user="someone",  # OpenAI fields the node has no use for are ignored
        ),
    )
    job = GenerateRequest.model_validate_json(request.job_input())
    assert job.messages is not None
    assert [(m.role, m.content) for m in job.messages] == [("system", "Be brief"), ("user", "Hi there")]
    assert (job.max_tokens, job.temperature, job.stop, job.seed) == (7, 0.0, ("\n",), 5)


def test_can_turn_completions_and_embeddings_into_jobs() -> None:
    completion = parse_body(CompletionRequest, body(prompt=["Once"], max_tokens=3))
    assert GenerateRequest.model_validate_json(completion.job_input()).prompt == "Once"
    embedding = parse_body(EmbeddingRequest, body(input="one text"))
    assert EmbedRequest.model_validate_json(embedding.job_input()).texts == ("one text",)


def test_can_answer_embeddings_as_floats_or_base64() -> None:
    vectors = np.array([[0.5, -1.0]], dtype=np.float32)
    assert embeddings(MODEL, vectors, "float", 2)["data"][0]["embedding"] == [0.5, -1.0]
    encoded = embeddings(MODEL, vectors, "base64", 2)["data"][0]["embedding"]
    import base64

    assert np.frombuffer(base64.b64decode(encoded), dtype="<f4").tolist() == [0.5, -1.0]


@pytest.mark.parametrize(
    ("kind", "raw", "param"),
    [
        (ChatRequest, b"{", None),
        (ChatRequest, b'"a string"', None),
        (ChatRequest, body(messages=[]), "messages"),
        (ChatRequest, body(messages=[{"role": "tool", "content": "x"}]), "messages.0.role"),
        (ChatRequest, body(messages=[{"role": "user", "content": "x"}], temperature=9), "temperature"),
        (ChatRequest, body(messages=[{"role": "user", "content": "x"}], n=2), "n"),
        (CompletionRequest, body(prompt=["a", "b"]), "prompt"),
        (EmbeddingRequest, body(input=[]), "input"),
        (EmbeddingRequest, body(input="x", encoding_format="int8"), "encoding_format"),
        (EmbeddingRequest, json.dumps({"input": "x"}).encode(), "model"),
    ],
)
def test_cannot_send_a_malformed_request(kind: type, raw: bytes, param: str | None) -> None:
    with pytest.raises(HttpError) as caught:
        parse_body(kind, raw)
    assert caught.value.status == 400
    assert caught.value.param == param


def test_cannot_send_an_image_part() -> None:
    request = parse_body(
        ChatRequest, body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}])
    )
    with pytest.raises(HttpError, match="only text"):
        request.job_input()


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (UnknownModel("no such model"), 404, "model_not_found"),
        (SchedulerError("no provider"), 503, "no_provider"),
        (SettlementError("no deposit"), 402, "insufficient_funds"),
        (InputTooLarge("too big"), 400, "invalid_input"),
        (JobError("bad id"), 400, "invalid_request"),
        (ChainError("down"), 503, "chain_unavailable"),
    ],
)
def test_can_map_the_error_tree_to_openai_codes(error: Exception, status: int, code: str) -> None:
    mapped = as_http_error(error)  # type: ignore[arg-type]
    assert (mapped.status, mapped.code) == (status, code)
