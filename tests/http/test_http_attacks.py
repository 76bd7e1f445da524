"""Attacks on the HTTP face, each the attacker's steps then the proof that it lost: calls without
or with a wrong token on a listener other machines reach, oversize and malformed bodies (refused
in OpenAI's shape before anything is paid), and a caller that drops a stream mid-way (the job
still ends, the node keeps serving)."""

from __future__ import annotations

import json

import httpx
import pytest
from grpc_view import jobs_of, until_terminal
from http_devnet import MAX_BODY_BYTES, HttpDevnet

from node.config import HttpSettings
from node.errors import ConfigError
from node.http.server import check_exposure

PROTECTED = ("/v1/models", "/metrics", "/api/dashboard")


def openai_error(response: httpx.Response) -> dict[str, str]:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error  # type: ignore[no-any-return]


@pytest.mark.parametrize("listen", ["0.0.0.0:8000", "[::]:8000", "192.0.2.7:8000"])
def test_cannot_listen_beyond_loopback_without_a_token(listen: str) -> None:
    with pytest.raises(ConfigError, match="without a token") as caught:
        check_exposure(HttpSettings(listen=listen))
    assert caught.value.hint is not None
    assert "require_token" in caught.value.hint
    check_exposure(HttpSettings(listen=listen, require_token=True))
    check_exposure(HttpSettings(listen="127.0.0.1:8000"))


def test_cannot_call_an_exposed_node_without_its_token(http_devnet: HttpDevnet) -> None:
    url = http_devnet.pauper_url
    for path in PROTECTED:
        missing = httpx.get(url + path)
        wrong = httpx.get(url + path, headers={"authorization": "Bearer " + "x" * 43})
        almost = httpx.get(url + path, headers={"authorization": http_devnet.pauper_token})  # no scheme
        for refused in (missing, wrong, almost):
            assert refused.status_code == 401, path
            assert openai_error(refused)["code"] == "invalid_api_key"
    body = {"model": http_devnet.generation_model_id, "prompt": "hi", "max_tokens": 4}
    stolen = httpx.post(url + "/v1/completions", json=body, headers={"authorization": "Bearer guess"})
    assert stolen.status_code == 401
    allowed = httpx.get(url + "/v1/models", headers={"authorization": f"Bearer {http_devnet.pauper_token}"})
    assert allowed.status_code == 200
    # The page holds no data: it stays open, and asks for the token for what it shows.
    assert httpx.get(url + "/").status_code == 200


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"model": "%s"}', "messages"),
        (b'{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -3}', "max_tokens"),
        (b'{"model": "%s", "messages": [{"role": "wizard", "content": "hi"}]}', "messages.0.role"),
        (b'{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "n": 4}', "n"),
        (b"\xff\xfe\x00garbage", None),
    ],
)
def test_cannot_pay_for_a_malformed_request(http_devnet: HttpDevnet, body: bytes, param: str | None) -> None:
    before = jobs_of(http_devnet.client_api)
    if b"%s" in body:
        body = body.replace(b"%s", http_devnet.generation_model_id.encode())
    response = httpx.post(
        f"{http_devnet.client_url}/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    error = openai_error(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert jobs_of(http_devnet.client_api) == before  # no job stored, nothing paid


def test_cannot_pay_for_an_oversize_request(http_devnet: HttpDevnet) -> None:
    before = jobs_of(http_devnet.client_api)
    huge = {
        "model": http_devnet.generation_model_id,
        "messages": [{"role": "user", "content": "a" * (MAX_BODY_BYTES + 1)}],
    }
    declared = httpx.post(f"{http_devnet.client_url}/v1/chat/completions", json=huge)
    assert declared.status_code == 400
    assert openai_error(declared)["code"] == "request_too_large"

    def chunks() -> object:
        # No content-length: the body is counted as it arrives.
        for _ in range(MAX_BODY_BYTES // 1024 + 2):
            yield b" " * 1024

    streamed = httpx.post(f"{http_devnet.client_url}/v1/embeddings", content=chunks())  # type: ignore[arg-type]
    assert streamed.status_code == 400
    assert openai_error(streamed)["code"] == "request_too_large"
    assert jobs_of(http_devnet.client_api) == before


def test_cannot_leave_a_job_hanging_by_dropping_its_stream(http_devnet: HttpDevnet) -> None:
    body = {
        "model": http_devnet.generation_model_id,
        "messages": [{"role": "user", "content": "Write a long story"}],
        "max_tokens": 200,
        "stream": True,
    }
    with httpx.stream(
        "POST", f"{http_devnet.client_url}/v1/chat/completions", json=body, timeout=120
    ) as response:
        assert response.status_code == 200
        job_id = response.headers["x-gpunode-job-id"]
        for line in response.iter_lines():
            if line.startswith("data: "):
                json.loads(line.removeprefix("data: "))
                break  # the caller goes away after its first token
    ended = until_terminal(http_devnet.client_api, job_id)
    assert ended.state.value in ("settled", "cancelled")
    # The node serves the next caller as before.
    again = httpx.post(
        f"{http_devnet.client_url}/v1/completions",
        json={"model": http_devnet.generation_model_id, "prompt": "Hi", "max_tokens": 4},
        timeout=120,
    )
    assert again.status_code == 200
