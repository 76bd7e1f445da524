"""The OpenAI-compatible API, driven by OpenAI's own Python client against real nodes: chat and
text completions (streamed token by token and whole), embeddings from the pretrained MiniLM, the
models on the overlay, and errors in OpenAI's shape."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from grpc_view import job_of
from http_devnet import HttpDevnet


def client_for(url: str, token: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0, timeout=120.0)


def test_can_list_the_models_on_the_overlay_with_prices(http_devnet: HttpDevnet) -> None:
    models = client_for(http_devnet.client_url).models.list()
    offered = {m.id: m for m in models.data}
    assert http_devnet.generation_model_id in offered
    assert http_devnet.embedding_model_id in offered
    model = offered[http_devnet.generation_model_id].model_dump()
    assert int(model["min_price_wei"]) > 0
    assert model["providers"] == 1
    assert (model["name"], model["task"]) == ("tiny-gpt2", "generate")
    assert offered[http_devnet.embedding_model_id].model_dump()["task"] == "embed"


def test_can_name_a_model_as_its_manifest_does(http_devnet: HttpDevnet) -> None:
    completion = client_for(http_devnet.client_url).completions.create(
        model="tiny-gpt2", prompt="Hi", max_tokens=3, temperature=0
    )
    assert completion.model == "tiny-gpt2"
    assert completion.choices[0].text


def test_can_complete_a_chat_and_find_its_job(http_devnet: HttpDevnet) -> None:
    raw = client_for(http_devnet.client_url).chat.completions.with_raw_response.create(
        model=http_devnet.generation_model_id,
        messages=[{"role": "user", "content": "Hello there"}],
        max_tokens=12,
        temperature=0,
    )
    completion = raw.parse()
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage is not None
    assert completion.usage.completion_tokens > 0
    assert raw.headers["x-gpunode-provider"] == http_devnet.provider_address
    job_id = raw.headers["x-gpunode-job-id"]
    job = job_of(http_devnet.client_api, job_id)
    assert job.provider == http_devnet.provider_address
    assert job.receipt is not None
    assert job.receipt.verified
    assert job.output is not None
    assert json.loads(job.output)["text"] == completion.choices[0].message.content


def test_can_stream_a_chat_token_by_token(http_devnet: HttpDevnet) -> None:
    stream = client_for(http_devnet.client_url).chat.completions.create(
        model=http_devnet.generation_model_id,
        messages=[{"role": "user", "content": "Tell me a story"}],
        max_tokens=16,
        temperature=0.8,
        seed=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        usage = chunk.usage or usage
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        if choice.delta.content:
            pieces.append(choice.delta.content)
        finish = choice.finish_reason or finish
    assert len(pieces) > 1  # token by token, not the whole text at once
    assert finish in ("stop", "length")
    assert usage is not None
    assert 0 < usage.completion_tokens <= 16


def test_can_stream_a_text_completion_ending_with_done(http_devnet: HttpDevnet) -> None:
    body = {"model": http_devnet.generation_model_id, "prompt": "Once", "max_tokens": 8, "stream": True}
    with httpx.stream("POST", f"{http_devnet.client_url}/v1/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert len(response.headers["x-gpunode-job-id"]) == 64
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    whole = client_for(http_devnet.client_url).completions.create(
        model=http_devnet.generation_model_id, prompt="Once", max_tokens=8, temperature=0
    )
    assert whole.choices[0].text


def test_can_embed_texts_with_the_pretrained_minilm(http_devnet: HttpDevnet) -> None:
    client = client_for(http_devnet.client_url)
    texts = ["a cat sits on the mat", "a kitten rests on a rug", "stock markets fell today"]
    result = client.embeddings.create(model=http_devnet.embedding_model_id, input=texts)
    vectors = [d.embedding for d in result.data]
    assert [len(v) for v in vectors] == [384, 384, 384]

    def cosine(a: list[float], b: list[float]) -> float:
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        return float(dot / (sum(x * x for x in a) ** 0.5 * sum(y * y for y in b) ** 0.5))

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])
    floats = client.embeddings.create(
        model=http_devnet.embedding_model_id, input=texts[0], encoding_format="float"
    )
    assert floats.data[0].embedding == pytest.approx(vectors[0], abs=1e-6)


def test_cannot_use_a_model_nobody_offers(http_devnet: HttpDevnet) -> None:
    client = client_for(http_devnet.client_url)
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="f" * 64, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4o", prompt="hi")


def test_cannot_run_a_job_without_a_deposit(http_devnet: HttpDevnet) -> None:
    client = client_for(http_devnet.pauper_url, http_devnet.pauper_token)
    with pytest.raises(openai.APIStatusError) as caught:
        client.completions.create(model=http_devnet.generation_model_id, prompt="hi", max_tokens=4)
    assert caught.value.status_code == 402
    assert caught.value.code == "insufficient_funds"
