"""`gpunode keys import` and `gpunode contracts deploy` against a real anvil."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from node.chain.anvil import AnvilProcess
from node.chain.client import ChainClient
from node.chain.market import JobMarket
from node.chain.registry import ProviderRegistry
from node.cli.main import _register_groups, app
from node.config import ChainSettings

pytestmark = pytest.mark.integration

runner = CliRunner()
_register_groups()


@pytest.fixture
async def anvil() -> AsyncIterator[AnvilProcess]:
    async with AnvilProcess() as process:
        yield process


async def test_can_import_a_dev_key_and_deploy_the_contracts(
    anvil: AnvilProcess, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployer = anvil.accounts[0]
    monkeypatch.setenv("GPUNODE_IMPORT_KEY", bytes(deployer.key).hex())
    imported = runner.invoke(app, ["keys", "import", "--json"])
    assert imported.exit_code == 0, imported.output
    assert json.loads(imported.stdout)["address"] == deployer.address

    # The command runs its own event loop, so it goes on a thread of its own.
    deployed = await asyncio.to_thread(
        runner.invoke, app, ["contracts", "deploy", "--rpc-url", anvil.rpc_url, "--json"]
    )
    assert deployed.exit_code == 0, deployed.output
    addresses = json.loads(deployed.stdout)
    client = await ChainClient.connect(ChainSettings(rpc_url=anvil.rpc_url))
    try:
        registry = ProviderRegistry(client, addresses["registry_address"])
        assert await registry.min_stake() == 10**18
        assert await client.w3.eth.get_code(addresses["market_address"]) != b""
    finally:
        await client.close()


def test_cannot_import_a_malformed_key(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUNODE_IMPORT_KEY", "0x1234")
    result = runner.invoke(app, ["keys", "import"])
    assert result.exit_code != 0
    assert "32 bytes" in str(result.exception)
    assert not (home / "keystore.json").exists()


def test_cannot_deploy_without_a_reachable_chain(home: Path) -> None:
    assert runner.invoke(app, ["keys", "new", "--json"]).exit_code == 0
    result = runner.invoke(app, ["contracts", "deploy", "--rpc-url", "http://127.0.0.1:9", "--json"])
    assert result.exit_code == 1
    assert "unreachable" in result.output


async def test_a_new_home_is_funded_deployed_and_checked_on_a_dev_chain(
    anvil: AnvilProcess, home: Path
) -> None:
    from node.config import load_settings

    def gpunode(*args: str) -> Any:
        return runner.invoke(app, list(args))

    assert (await asyncio.to_thread(gpunode, "init", "--provider", "--rpc-url", anvil.rpc_url)).exit_code == 0
    funded = await asyncio.to_thread(gpunode, "keys", "fund", "--from-dev", "--json")
    assert funded.exit_code == 0, funded.output
    assert json.loads(funded.stdout)["balance_wei"] == 10 * 10**18
    deployed = await asyncio.to_thread(gpunode, "contracts", "deploy", "--dev", "--write-config", "--json")
    assert deployed.exit_code == 0, deployed.output
    addresses = json.loads(deployed.stdout)
    chain = load_settings(home / "config.toml").chain
    assert (chain.registry_address, chain.market_address) == (
        addresses["registry_address"],
        addresses["market_address"],
    )
    client = await ChainClient.connect(chain)
    try:
        market = JobMarket(client, addresses["market_address"])
        assert await market.withdrawal_delay() == 60
    finally:
        await client.close()
    doctor = await asyncio.to_thread(gpunode, "doctor", "--json")
    checks = {c["name"]: c["status"] for c in json.loads(doctor.stdout)["checks"]}
    assert (checks["key"], checks["chain"], checks["contracts"]) == ("ok", "ok", "ok")


def test_cannot_fund_from_a_dev_account_on_the_embedded_chain(home: Path) -> None:
    assert runner.invoke(app, ["init"]).exit_code == 0
    result = runner.invoke(app, ["keys", "fund", "--from-dev"])
    assert result.exit_code != 0
    assert "embedded chain" in str(result.exception)
