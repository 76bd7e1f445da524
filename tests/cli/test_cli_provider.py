"""`gpunode provider register` and `gpunode provider start` as a user runs them: the installed
command in its own process, against contracts deployed on a real anvil."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from node.chain.anvil import AnvilProcess
from node.chain.client import ChainClient
from node.chain.deploy import Deployment, deploy_contracts
from node.chain.keys import NodeKey, create_keystore
from node.config import ChainSettings

pytestmark = pytest.mark.integration

GPUNODE = Path(sys.executable).parent / "gpunode"
PASSWORD = "correct horse"
MIN_STAKE = 10**18
START_TIMEOUT_S = 180.0


@dataclass
class Chain:
    anvil: AnvilProcess
    client: ChainClient
    deployment: Deployment


@pytest.fixture
async def chain() -> AsyncIterator[Chain]:
    async with AnvilProcess() as anvil:
        client = await ChainClient.connect(ChainSettings(rpc_url=anvil.rpc_url))
        try:
            deployment = await deploy_contracts(
                client,
                anvil.accounts[0],
                min_stake=MIN_STAKE,
                unstake_cooldown_s=3600,
                challenge_window_s=600,
                withdrawal_delay_s=3600,
            )
            yield Chain(anvil, client, deployment)
        finally:
            await client.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _home(
    tmp_path: Path, chain: Chain, account: int, *, stake: int, name: str = "node"
) -> tuple[Path, NodeKey]:
    """A node home: a keystore holding one of anvil's funded keys and a config naming the contracts."""
    home = tmp_path / name
    home.mkdir()
    key = NodeKey.from_private_key(bytes(chain.anvil.accounts[account].key))
    create_keystore(home / "keystore.json", PASSWORD, key=key, work_factor=2**10)
    api_port = _free_port()
    (home / "config.toml").write_text(
        f"""
[chain]
rpc_url = "{chain.anvil.rpc_url}"
registry_address = "{chain.deployment.registry.address}"
market_address = "{chain.deployment.market.address}"
poll_interval_s = 0.2

[keys]
keystore = "{home / "keystore.json"}"

[api]
listen = "127.0.0.1:{api_port}"
grace_s = 0.5

[p2p]
listen = ["/ip4/127.0.0.1/tcp/0"]

[provider]
stake_wei = {stake}
price_per_job_wei = 1000000000000

[executor]
model_dir = "{home / "models"}"
worker_memory_bytes = {int(1.5 * 2**30)}
tmpfs_bytes = {16 * 2**20}
max_processes = 32
max_input_bytes = 262144
"""
    )
    return home, key


def _env(home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "GPUNODE_HOME": str(home),
        "GPUNODE_CONFIG": str(home / "config.toml"),
        "GPUNODE_KEY_PASSWORD": PASSWORD,
    }


async def _gpunode(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    process = await asyncio.create_subprocess_exec(
        str(GPUNODE), *args, env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return subprocess.CompletedProcess(list(args), process.returncode, out.decode(), err.decode())


async def test_can_register_a_provider_once(chain: Chain, tmp_path: Path) -> None:
    home, key = _home(tmp_path, chain, 3, stake=2 * MIN_STAKE)
    first = await _gpunode(home, "provider", "register", "--json")
    assert first.returncode == 0, first.stderr
    registered = json.loads(first.stdout)
    assert registered["address"] == key.address
    assert registered["newly_registered"] is True
    assert registered["stake_wei"] == 2 * MIN_STAKE
    assert await chain.deployment.registry.is_active(key.address)
    again = await _gpunode(home, "provider", "register", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["newly_registered"] is False
    record = await chain.deployment.registry.provider(key.address)
    assert record.stake == 2 * MIN_STAKE


async def test_cannot_register_with_a_stake_below_the_minimum(chain: Chain, tmp_path: Path) -> None:
    home, key = _home(tmp_path, chain, 4, stake=MIN_STAKE)
    done = await _gpunode(home, "provider", "register", "--stake", str(MIN_STAKE - 1))
    assert done.returncode == 1
    assert done.stdout == ""
    assert f"a stake of {MIN_STAKE - 1} wei is below the registry's minimum of {MIN_STAKE} wei" in done.stderr
    assert f"--stake {MIN_STAKE}" in done.stderr
    assert not (await chain.deployment.registry.provider(key.address)).registered


async def test_cannot_register_without_the_keystore_password(chain: Chain, tmp_path: Path) -> None:
    home, key = _home(tmp_path, chain, 5, stake=MIN_STAKE)
    env = _env(home)
    del env["GPUNODE_KEY_PASSWORD"]
    process = await asyncio.create_subprocess_exec(
        str(GPUNODE), "provider", "register", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 1
    assert "no keystore password in $GPUNODE_KEY_PASSWORD" in err.decode()
    assert not (await chain.deployment.registry.provider(key.address)).registered


async def _wait_for_line(stream: asyncio.StreamReader, needle: str) -> str:
    seen: list[str] = []
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            while line := (await stream.readline()).decode():
                seen.append(line)
                if needle in line:
                    return line
    except TimeoutError:
        pass
    raise AssertionError(f"no {needle!r} line; the node said:\n{''.join(seen[-40:])}")


async def test_can_start_a_provider_serve_the_api_and_stop_on_sigterm(chain: Chain, tmp_path: Path) -> None:
    home, key = _home(tmp_path, chain, 6, stake=MIN_STAKE)
    registered = await _gpunode(home, "provider", "register")
    assert registered.returncode == 0, registered.stderr
    process = await asyncio.create_subprocess_exec(
        str(GPUNODE), "provider", "start", env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert process.stderr is not None
        ready = await _wait_for_line(process.stderr, "ready — API at")
        assert key.address in ready
        node = await _gpunode(home, "node", "status", "--json")
        assert node.returncode == 0, node.stderr
        assert json.loads(node.stdout)["provider"] is True
        provider = await _gpunode(home, "provider", "status", "--json")
        assert provider.returncode == 0, provider.stderr
        status = json.loads(provider.stdout)["status"]
        assert (status["address"], status["active"], status["enabled"]) == (key.address, True, True)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 60) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_cannot_start_a_provider_on_a_taken_api_port(chain: Chain, tmp_path: Path) -> None:
    home, _ = _home(tmp_path, chain, 7, stake=MIN_STAKE)
    config = (home / "config.toml").read_text()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (home / "config.toml").write_text(
            re.sub(r'listen = "127\.0\.0\.1:\d+"', f'listen = "127.0.0.1:{port}"', config)
        )
        done = await _gpunode(home, "provider", "start")
    assert done.returncode == 1
    assert f"the API cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "set api.listen" in done.stderr
    assert "Traceback" not in done.stderr
