"""`gpunode job submit … --stream` and `gpunode models add` of a Hugging Face directory, through
typer's CliRunner against real nodes (a provider serving a tiny GPT-2 in its sandbox)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_devnet import ApiDevnet
from typer.testing import CliRunner, Result

from node.cli.main import _register_groups, app
from node.executor.hf_requests import parse_generation
from node.executor.hf_tiny import write_tiny

_register_groups()


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("GPUNODE_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("GPUNODE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GPUNODE_LOG_LEVEL", "ERROR")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def gpunode(*args: str, stdin: bytes | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=stdin)


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


REQUEST = json.dumps({"prompt": "Hello", "max_tokens": 24, "temperature": 0.8, "seed": 4}).encode()


def test_can_stream_a_generation_to_stdout(api_devnet: ApiDevnet, tmp_path: Path) -> None:
    out = tmp_path / "output.json"
    api = ("--api", api_devnet.client_api)
    result = gpunode(
        "job",
        "submit",
        api_devnet.generation_model_id,
        "-",
        "--stream",
        "--out",
        str(out),
        *api,
        stdin=REQUEST,
    )
    assert result.exit_code == 0, result.output
    signed = parse_generation(out.read_bytes())
    assert signed.completion_tokens > 0
    assert result.stdout == signed.text + "\n"  # the text alone: the job's table went to stderr
    assert "settled" in result.stderr


def test_can_stream_a_generation_as_json_lines(api_devnet: ApiDevnet, tmp_path: Path) -> None:
    api = ("--api", api_devnet.client_api)
    result = gpunode(
        "job", "submit", api_devnet.generation_model_id, "-", "--stream", "--json", *api, stdin=REQUEST
    )
    assert result.exit_code == 0, result.output
    *pieces, last = [json.loads(line) for line in result.stdout.splitlines()]
    job = last if "state" in last else pytest.fail(f"no job at the end: {last}")
    assert job["state"] == "settled"
    assert len(pieces) >= 1
    out = tmp_path / "again.json"
    same = gpunode(
        "job", "submit", api_devnet.generation_model_id, "-", "--wait", "--out", str(out), *api, stdin=REQUEST
    )
    assert same.exit_code == 0, same.output
    # Seeded: the same request gives the same text, streamed or not.
    assert "".join(piece["text"] for piece in pieces) == parse_generation(out.read_bytes()).text


def test_can_add_a_hugging_face_model_directory(api_devnet: ApiDevnet, tmp_path: Path) -> None:
    model = write_tiny("gpt2", tmp_path / "micro-gpt2", layers=1, hidden=16, context=32)
    api = ("--api", api_devnet.provider_api)
    added = as_json(gpunode("models", "add", str(model), "--json", *api))
    assert added["format"] == "huggingface"
    listed = as_json(gpunode("models", "list", "--json", *api))
    assert added["model_id"] in [m["model_id"] for m in listed["models"]]


def test_cannot_add_a_hugging_face_directory_holding_a_pickle(api_devnet: ApiDevnet, tmp_path: Path) -> None:
    model = write_tiny("gpt2", tmp_path / "micro-gpt2", layers=1, hidden=16, context=32)
    (model / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    api = ("--api", api_devnet.provider_api)
    before = as_json(gpunode("models", "list", "--json", *api))
    result = gpunode("models", "add", str(model), *api)
    assert result.exit_code == 1, result.output
    assert "pytorch_model.bin is a pickle" in result.stderr
    assert as_json(gpunode("models", "list", "--json", *api)) == before


def test_can_add_an_int8_variant_offered_as_a_model_of_its_own(api_devnet: ApiDevnet, tmp_path: Path) -> None:
    model = write_tiny("llama", tmp_path / "micro-llama", layers=1, hidden=16, context=32)
    api = ("--api", api_devnet.provider_api)
    full = as_json(gpunode("models", "add", str(model), "--json", *api))
    int8 = as_json(gpunode("models", "add", str(model), "--quantization", "int8", "--json", *api))
    assert int8["model_id"] != full["model_id"]
    listed = as_json(gpunode("models", "list", "--json", *api))
    assert {full["model_id"], int8["model_id"]} <= {m["model_id"] for m in listed["models"]}


def test_cannot_add_a_quantized_variant_of_a_tensor_model(api_devnet: ApiDevnet) -> None:
    api = ("--api", api_devnet.provider_api)
    result = gpunode("models", "add", str(api_devnet.small_model_dir), "--quantization", "int8", *api)
    assert result.exit_code != 0
    assert "--quantization int8 applies to a Hugging Face model directory" in result.output
