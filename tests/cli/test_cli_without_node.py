"""The node-facing commands when no node answers, and the parts of the CLI that need no node."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from node.cli.main import _register_groups, app
from node.cli.models import parse_tensor_spec
from node.cli.output import format_wei, format_wei_exact, job_json, jsonable
from node.domain.service import AttemptView, JobView, ModelView
from node.domain.state import AttemptOutcome, JobState, PaymentPath, Role
from node.types import Address

GPUNODE = Path(sys.executable).parent / "gpunode"
PROVIDER = Address("0x5B38Da6a701c568545dCfcB03FcB875f56beddC4")

_register_groups()


@pytest.fixture
def free_port() -> int:
    """A port nobody listens on: bound once to learn it, then released."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    return port


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUNODE_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("GPUNODE_HOME", str(tmp_path / "home"))


def test_cannot_reach_a_node_that_is_not_running(free_port: int, tmp_path: Path) -> None:
    """The installed command, as a user runs it: one line, exit status 1, no traceback."""
    done = subprocess.run(
        [str(GPUNODE), "job", "list", "--api", f"127.0.0.1:{free_port}"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "GPUNODE_CONFIG": str(tmp_path / "absent.toml"), "HOME": str(tmp_path)},
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    hint = "start one with `gpunode provider start` or `gpunode devnet`"
    assert done.stderr.strip() == f"error: no node at 127.0.0.1:{free_port} — {hint}"


@pytest.mark.parametrize(
    "command",
    [
        ["node", "status"],
        ["node", "peers"],
        ["models", "list"],
        ["provider", "status"],
        ["job", "get", "00" * 32],
    ],
)
def test_cannot_run_a_node_command_without_a_node(command: list[str], free_port: int) -> None:
    result = CliRunner().invoke(app, [*command, "--api", f"127.0.0.1:{free_port}", "--json"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert f"no node at 127.0.0.1:{free_port}" in result.stderr


def test_can_take_the_api_address_from_the_settings(free_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUNODE_API__LISTEN", f"0.0.0.0:{free_port}")
    result = CliRunner().invoke(app, ["node", "status"])
    assert result.exit_code == 1
    assert f"no node at 127.0.0.1:{free_port}" in result.stderr


def test_can_parse_a_program_input_spec() -> None:
    spec = parse_tensor_spec("input:f32:*,64")
    assert (spec.name, spec.dtype, spec.shape) == ("input", "F32", (None, 64))
    assert parse_tensor_spec("ids:I64:-1,16").shape == (None, 16)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("input:F32", "name:dtype:shape"),
        ("input:F99:4", "dtype must be one of"),
        ("x:F32:a,b", "invalid literal"),
    ],
)
def test_cannot_pass_a_malformed_input_spec(text: str, reason: str, tmp_path: Path, free_port: int) -> None:
    program = tmp_path / "tiny.pt2"
    program.write_bytes(b"PK")
    result = CliRunner().invoke(
        app,
        ["models", "add", str(program), "--name", "tiny", "--input", text, "--api", f"127.0.0.1:{free_port}"],
    )
    assert result.exit_code == 2
    assert reason in result.output


def test_cannot_add_a_file_that_is_neither_a_model_dir_nor_a_program(tmp_path: Path, free_port: int) -> None:
    stray = tmp_path / "weights.bin"
    stray.write_bytes(b"\0")
    result = CliRunner().invoke(app, ["models", "add", str(stray), "--api", f"127.0.0.1:{free_port}"])
    assert result.exit_code == 2
    assert "neither a model directory nor a .pt2 file" in result.output


def test_can_print_views_as_json_without_output_bytes() -> None:
    job = JobView(
        job_id="ab" * 32,
        role=Role.CLIENT,
        model_id="cd" * 32,
        payment=PaymentPath.ESCROW,
        state=JobState.VERIFIED,
        terminal=False,
        attempts=(AttemptView(provider=PROVIDER, paid=True, outcome=AttemptOutcome.COMPLETED),),
        provider=PROVIDER,
        price_wei=10**12,
        output=b"\x01\x02\x03",
        receipt=None,
        error=None,
        created_at=1.0,
        updated_at=2.0,
    )
    data = job_json(job)
    assert json.loads(json.dumps(data)) == data
    assert "output" not in data
    assert data["output_bytes"] == 3
    assert data["output_sha256"] == "039058c6f2c0cb492c533b0a4d14ef77cc0f78abccced5287d84a1a2011cfb81"
    assert data["payment"] == "escrow"
    assert data["attempts"] == [{"provider": PROVIDER, "paid": True, "outcome": "completed"}]
    model = ModelView(
        model_id="ef" * 32, name="mlp", format="builtin", size_bytes=10, batchable=True, warm=False
    )
    assert jsonable((model,)) == [
        {
            "model_id": "ef" * 32,
            "name": "mlp",
            "format": "builtin",
            "size_bytes": 10,
            "batchable": True,
            "warm": False,
        }
    ]


def test_can_show_wei_amounts_readably() -> None:
    assert format_wei(0) == "0"
    assert format_wei(10**12) == "1000 gwei"
    assert format_wei(1234) == "1234 wei"
    assert format_wei(10**18) == "1.000000 ETH"
    assert format_wei_exact(10**12) == "1000 gwei (1000000000000 wei)"
    assert format_wei_exact(1234) == "1234 wei"
