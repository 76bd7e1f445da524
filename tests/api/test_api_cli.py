"""The `gpunode` commands that talk to a node, run through typer's CliRunner against real nodes."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from api_devnet import MAX_INPUT_BYTES, PRICE_WEI, ApiDevnet, exported_program, mlp_input
from typer.testing import CliRunner, Result

from node.cli.main import _register_groups, app

_register_groups()


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No config from the developer's home leaks in; the node is named with --api.

    Each command points logging at the stderr CliRunner lends it and closes afterwards; the
    handlers are put back so no later test logs into a closed stream.
    """
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
    """The command's JSON; of JSON lines (`submit --wait --json`, one per state), the last."""
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def refused(result: Result) -> str:
    """A refusal: status 1, nothing on stdout, one error line on stderr (which is returned)."""
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture
def input_file(tmp_path: Path) -> Path:
    path = tmp_path / "input.safetensors"
    path.write_bytes(mlp_input(seed=21))
    return path


def test_can_submit_wait_and_save_the_output(api_devnet: ApiDevnet, input_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "output.safetensors"
    api = ("--api", api_devnet.client_api)
    job = as_json(
        gpunode(
            "job", "submit", api_devnet.model_id, str(input_file), "--wait", "--out", str(out), "--json", *api
        )
    )
    assert job["state"] == "settled"
    assert job["provider"] == api_devnet.provider_address
    assert job["receipt"]["verified"] is True
    assert job["receipt"]["receipt"]["output_hash"] == "0x" + hashlib.sha256(out.read_bytes()).hexdigest()
    assert job["output_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    got = as_json(gpunode("job", "get", job["job_id"], "--json", *api))
    assert got["state"] == "settled"
    assert got["output_bytes"] == out.stat().st_size
    listed = as_json(gpunode("job", "list", "--state", "settled", "--json", *api))
    assert job["job_id"] in [j["job_id"] for j in listed["jobs"]]
    table = gpunode("job", "list", *api)
    assert table.exit_code == 0
    assert job["job_id"][:6] in table.stdout  # the table folds long ids to the terminal's width


def test_can_submit_then_watch_as_json_lines(api_devnet: ApiDevnet, input_file: Path) -> None:
    api = ("--api", api_devnet.client_api)
    submitted = as_json(gpunode("job", "submit", api_devnet.model_id, str(input_file), "--json", *api))
    assert submitted["state"] == "submitted"
    watched = gpunode("job", "watch", submitted["job_id"], "--json", *api)
    assert watched.exit_code == 0, watched.output
    states = [json.loads(line)["state"] for line in watched.stdout.splitlines()]
    assert states[-1] == "settled"
    assert len(states) == len(set(states)), "one line per transition"


def test_can_submit_from_stdin_and_follow_it_live(api_devnet: ApiDevnet) -> None:
    result = gpunode(
        "job",
        "submit",
        api_devnet.model_id,
        "-",
        "--wait",
        "--api",
        api_devnet.client_api,
        stdin=mlp_input(seed=22),
    )
    assert result.exit_code == 0, result.output
    assert "settled" in result.stderr
    assert "verified" in result.stdout


def test_cannot_submit_for_an_unknown_model(api_devnet: ApiDevnet, input_file: Path) -> None:
    api = ("--api", api_devnet.client_api)
    before = as_json(gpunode("job", "list", "--json", *api))
    unknown = hashlib.sha256(b"unknown").hexdigest()
    line = refused(gpunode("job", "submit", unknown, str(input_file), *api))
    assert f"no live provider offers model {unknown}" in line
    assert "check the model id" in line
    assert as_json(gpunode("job", "list", "--json", *api)) == before


def test_cannot_submit_an_oversize_input(api_devnet: ApiDevnet, tmp_path: Path) -> None:
    api = ("--api", api_devnet.client_api)
    before = as_json(gpunode("job", "list", "--json", *api))
    big = tmp_path / "big.safetensors"
    big.write_bytes(b"\0" * (MAX_INPUT_BYTES + 1))
    line = refused(gpunode("job", "submit", api_devnet.model_id, str(big), *api))
    assert f"the input is {MAX_INPUT_BYTES + 1} bytes; at most {MAX_INPUT_BYTES}" in line
    assert as_json(gpunode("job", "list", "--json", *api)) == before


def test_cannot_submit_without_a_deposit(
    api_devnet: ApiDevnet, input_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Run with the node's home, so the CLI finds the token the node's API asks for.
    monkeypatch.setenv("GPUNODE_HOME", str(api_devnet.pauper_home))
    api = ("--api", api_devnet.pauper_api)
    line = refused(gpunode("job", "submit", api_devnet.model_id, str(input_file), *api))
    assert "deposit" in line
    assert as_json(gpunode("job", "list", "--json", *api)) == {"jobs": []}


def test_cannot_cancel_a_finished_job(api_devnet: ApiDevnet, input_file: Path) -> None:
    api = ("--api", api_devnet.client_api)
    job = as_json(gpunode("job", "submit", api_devnet.model_id, str(input_file), "--wait", "--json", *api))
    line = refused(gpunode("job", "cancel", job["job_id"], *api))
    assert "already settled" in line
    after = as_json(gpunode("job", "get", job["job_id"], "--json", *api))
    assert after == job


@pytest.mark.parametrize("bad_id", ["nope", "0x1234"])
def test_cannot_name_a_job_by_a_malformed_id(api_devnet: ApiDevnet, bad_id: str) -> None:
    for command in ("get", "cancel", "watch", "verify"):
        line = refused(gpunode("job", command, bad_id, "--api", api_devnet.client_api))
        assert "is not an id" in line
        assert "64 hex digits" in line


def test_cannot_verify_a_job_without_another_provider_and_loses_nothing(
    api_devnet: ApiDevnet, input_file: Path
) -> None:
    """The market has one provider: `job verify` says no other can re-run the job, and the job,
    the provider's standing and this node's peers are as they were."""
    api = ("--api", api_devnet.client_api)
    job = as_json(gpunode("job", "submit", api_devnet.model_id, str(input_file), "--wait", "--json", *api))
    line = refused(gpunode("job", "verify", job["job_id"], *api))
    assert "no live provider" in line or "already had a try" in line, line
    assert as_json(gpunode("job", "get", job["job_id"], "--json", *api)) == job
    peers = as_json(gpunode("node", "peers", "--json", *api))
    (provider,) = [p for p in peers["peers"] if p["address"] == api_devnet.provider_address]
    assert provider["reputation"]["jobs_seen"] >= 1
    assert provider["reputation"]["checks_failed"] == 0
    assert provider["reputation"]["excluded"] is False
    table = gpunode("node", "peers", *api)
    assert table.exit_code == 0
    assert "checks" in table.stdout


def test_cannot_verify_a_job_that_has_no_result(api_devnet: ApiDevnet) -> None:
    line = refused(gpunode("job", "verify", "ab" * 32, "--api", api_devnet.client_api))
    assert "no job" in line


def test_cannot_read_a_missing_input_file(api_devnet: ApiDevnet, tmp_path: Path) -> None:
    line = refused(
        gpunode(
            "job", "submit", api_devnet.model_id, str(tmp_path / "absent"), "--api", api_devnet.client_api
        )
    )
    assert "cannot read the input" in line


def test_can_show_node_status_and_peers(api_devnet: ApiDevnet) -> None:
    api = ("--api", api_devnet.client_api)
    status = as_json(gpunode("node", "status", "--json", *api))
    assert status["address"] == api_devnet.client_address
    assert status["chain_id"] == api_devnet.chain_id
    peers = as_json(gpunode("node", "peers", "--json", *api))
    assert api_devnet.provider_address in [p["address"] for p in peers["peers"] if p["provider"]]
    table = gpunode("node", "status", *api)
    assert table.exit_code == 0
    assert api_devnet.market_address in table.stdout


def test_can_show_provider_status_and_settle(api_devnet: ApiDevnet) -> None:
    api = ("--api", api_devnet.provider_api)
    shown = as_json(gpunode("provider", "status", "--json", *api))
    assert shown["status"]["address"] == api_devnet.provider_address
    assert shown["status"]["active"] is True
    assert shown["status"]["price_per_job_wei"] == PRICE_WEI
    # Idle between jobs: no client's hold waits, and no slot is kept for one.
    assert (shown["status"]["holds_waiting"], shown["status"]["holds_granted"]) == (0, 0)
    table = gpunode("provider", "status", *api)
    assert "holds waiting / granted" in table.stdout
    settled = as_json(gpunode("provider", "settle", "--json", *api))
    assert settled["redeemed_wei"] % PRICE_WEI == 0
    after = as_json(gpunode("provider", "status", "--json", *api))
    assert after["earnings"]["unredeemed_voucher_wei"] == 0


def test_cannot_ask_a_client_node_for_provider_status(api_devnet: ApiDevnet) -> None:
    line = refused(gpunode("provider", "status", "--api", api_devnet.client_api))
    assert "does not serve jobs" in line
    assert "gpunode provider start" in line


def test_can_add_and_list_models(api_devnet: ApiDevnet) -> None:
    api = ("--api", api_devnet.provider_api)
    added = as_json(gpunode("models", "add", str(api_devnet.small_model_dir), "--json", *api))
    listed = as_json(gpunode("models", "list", "--json", *api))
    ids = [m["model_id"] for m in listed["models"]]
    assert added["model_id"] in ids
    assert api_devnet.model_id in ids


def test_cannot_add_a_model_over_the_upload_limit(api_devnet: ApiDevnet) -> None:
    api = ("--api", api_devnet.provider_api)
    before = as_json(gpunode("models", "list", "--json", *api))
    line = refused(gpunode("models", "add", str(api_devnet.large_model_dir), *api))
    assert "more than the 65536 this node accepts" in line
    assert "api.max_upload_bytes" in line
    assert as_json(gpunode("models", "list", "--json", *api)) == before


def test_cannot_call_a_token_guarded_node_from_another_home(api_devnet: ApiDevnet) -> None:
    line = refused(gpunode("node", "status", "--api", api_devnet.pauper_api))
    assert "needs its token" in line
    assert "api.token" in line


def test_can_deposit_into_the_voucher_deposit(api_devnet: ApiDevnet) -> None:
    api = ("--api", api_devnet.client_api)
    first = as_json(gpunode("deposit", "1000000", "--json", *api))
    second = as_json(gpunode("deposit", "2000000", "--json", *api))
    assert first["deposited_wei"] == 1000000
    assert second["balance_wei"] - first["balance_wei"] == 2000000
    assert gpunode("deposit", "0", *api).exit_code == 2


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return exported_program(tmp_path_factory.mktemp("program") / "small.pt2")


def test_can_add_a_torch_export_program(api_devnet: ApiDevnet, program: Path) -> None:
    api = ("--api", api_devnet.provider_api)
    added = as_json(
        gpunode(
            "models",
            "add",
            str(program),
            "--name",
            "small",
            "--input",
            "x:F32:*,4",
            "--batchable",
            "--json",
            *api,
        )
    )
    assert (added["name"], added["format"], added["batchable"]) == ("small", "torch_export", True)
    listed = as_json(gpunode("models", "list", "--json", *api))
    assert added["model_id"] in [m["model_id"] for m in listed["models"]]


def test_cannot_add_a_pickle_dressed_as_a_program(api_devnet: ApiDevnet, tmp_path: Path) -> None:
    api = ("--api", api_devnet.provider_api)
    before = as_json(gpunode("models", "list", "--json", *api))
    fake = tmp_path / "evil.pt2"
    fake.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    line = refused(gpunode("models", "add", str(fake), "--name", "evil", "--input", "x:F32:4", *api))
    assert "evil" not in [m["name"] for m in as_json(gpunode("models", "list", "--json", *api))["models"]]
    assert as_json(gpunode("models", "list", "--json", *api)) == before
    assert "is a raw pickle, which can run arbitrary code" in line
    assert "torch.export.save" in line


def test_job_list_reads_at_80_columns_and_agrees_with_job_get(
    api_devnet: ApiDevnet, input_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = ("--api", api_devnet.client_api)
    job = as_json(gpunode("job", "submit", api_devnet.model_id, str(input_file), "--wait", "--json", *api))
    got = as_json(gpunode("job", "get", job["job_id"], "--json", *api))
    listed = {j["job_id"]: j for j in as_json(gpunode("job", "list", "--json", *api))["jobs"]}
    assert listed[job["job_id"]]["output_bytes"] == got["output_bytes"] > 0
    assert listed[job["job_id"]]["output_sha256"] == got["output_sha256"]
    monkeypatch.setenv("COLUMNS", "80")
    import node.cli.output as output

    monkeypatch.setattr(output.console, "_width", 80)
    table = gpunode("job", "list", *api)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    # The whole id, folded over two lines, and the state and price beside it.
    assert job["job_id"][:32] in table.stdout
    assert job["job_id"][32:] in table.stdout
    assert "settled" in table.stdout


def test_can_list_the_models_offered_on_the_network(
    api_devnet: ApiDevnet, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = ("--api", api_devnet.client_api)
    offered = as_json(gpunode("models", "available", "--json", *api))["providers"]
    by_provider = {p["address"]: p for p in offered}
    models = {m["model_id"]: m for m in by_provider[api_devnet.provider_address]["models"]}
    assert models[api_devnet.model_id]["price_per_job_wei"] == PRICE_WEI
    assert models[api_devnet.model_id]["task"] == "tensor"
    assert by_provider[api_devnet.provider_address]["devices"]
    # The provider fetches models it lacks, on the terms its advert states (the defaults here).
    fetch = by_provider[api_devnet.provider_address]["fetch"]
    assert fetch == {"max_bytes": 4 * 2**30, "price_per_job_wei": PRICE_WEI, "cold_start_price_wei": 10**13}
    monkeypatch.setenv("COLUMNS", "80")
    import node.cli.output as output

    monkeypatch.setattr(output.console, "_width", 80)
    table = gpunode("models", "available", *api)
    assert table.exit_code == 0
    assert max(len(line) for line in table.stdout.splitlines()) <= 80
    assert "precision" in table.stdout
    assert "providers that fetch models they lack" in table.stdout
    assert "4 GiB" in table.stdout
    peers = gpunode("node", "peers", *api)
    assert peers.exit_code == 0
    assert max(len(line) for line in peers.stdout.splitlines()) <= 80
    assert "4 GiB" in peers.stdout
    assert "cold start" in peers.stdout
    # The whole id, folded over lines of the table.
    id_lines = [line.split("│")[1].strip() for line in table.stdout.splitlines() if line.count("│") > 2]
    assert api_devnet.model_id in "".join(id_lines)


def test_an_escrowed_wait_ends_at_the_verified_result(
    api_devnet: ApiDevnet, input_file: Path, tmp_path: Path
) -> None:
    api = ("--api", api_devnet.client_api)
    out = tmp_path / "escrowed.safetensors"
    args = ("job", "submit", api_devnet.model_id, str(input_file), "--payment", "escrow", "--timeout", "60")
    result = gpunode(*args, "--wait", "--out", str(out), "--json", *api)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    states = [line["state"] for line in lines]
    # One line per state, the last the verified job with its output; the challenge window (and
    # the settling after it) is the node's business.
    assert states[-1] == "verified"
    assert len(states) == len(set(states))
    assert lines[-1]["output_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()


def test_can_offer_a_model_added_while_the_provider_runs_and_withdraw_it(api_devnet: ApiDevnet) -> None:
    """A model added to a running provider is in its advert at once; removed, it leaves the advert
    at once and the store with it."""
    provider = ("--api", api_devnet.provider_api)
    client = ("--api", api_devnet.client_api)
    added = as_json(gpunode("models", "add", str(api_devnet.small_model_dir), "--json", *provider))

    def offered() -> set[str]:
        providers = as_json(gpunode("models", "available", "--json", *client))["providers"]
        mine = [p for p in providers if p["address"] == api_devnet.provider_address]
        return {m["model_id"] for p in mine for m in p["models"]}

    def eventually(condition: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.5)
        return False

    assert eventually(lambda: added["model_id"] in offered())
    removed = as_json(gpunode("models", "remove", added["model_id"], "--json", *provider))
    assert removed["model_id"] == added["model_id"]
    assert eventually(lambda: added["model_id"] not in offered())
    assert api_devnet.model_id in offered()
    listed = as_json(gpunode("models", "list", "--json", *provider))["models"]
    assert added["model_id"] not in [m["model_id"] for m in listed]
    line = refused(gpunode("models", "remove", added["model_id"], *provider))
    assert "not in the store" in line
