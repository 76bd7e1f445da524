"""Chain fixtures: every chain test runs on the embedded py-evm chain and on a real anvil.

`chain_backend` is "embedded" or "anvil" (the latter marked `integration`); `client` is a connected
ChainClient on it; `accounts` are ten funded LocalAccounts with the same API on both;
`advance_time(client, seconds)` moves the chain's clock. One anvil serves the whole session; each
embedded client gets a fresh chain.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from eth_account.signers.local import LocalAccount

from node.chain.anvil import AnvilProcess
from node.chain.client import ChainClient
from node.config import ChainSettings

REPOSITORY = Path(__file__).resolve().parents[2]
NODE_MODULES = REPOSITORY / "contracts" / "node_modules"
PROBE_SOURCE = Path(__file__).with_name("Probe.sol")

# Compiles one test-only source with the project's pinned solc-js and the project's evmVersion.
_COMPILE_JS = """
const solc = require('solc');
const fs = require('fs');
const input = {
  language: 'Solidity',
  sources: {'Probe.sol': {content: fs.readFileSync(process.argv[1], 'utf8')}},
  settings: {evmVersion: 'prague', optimizer: {enabled: true, runs: 200},
             outputSelection: {'*': {'*': ['abi', 'evm.bytecode.object']}}},
};
const out = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (out.errors || []).filter((e) => e.severity === 'error');
if (errors.length) { console.error(errors.map((e) => e.formattedMessage).join('\\n')); process.exit(1); }
const c = out.contracts['Probe.sol'].Probe;
process.stdout.write(JSON.stringify({abi: c.abi, bytecode: '0x' + c.evm.bytecode.object}));
"""


@dataclass(frozen=True)
class TestArtifact:
    """A compiled test-only contract, shaped like `node.chain.artifacts.Artifact`."""

    name: str
    abi: Sequence[Mapping[str, Any]]
    bytecode: str


def compile_probe() -> TestArtifact:
    node = shutil.which("node")
    if node is None or not (NODE_MODULES / "solc").is_dir():
        pytest.fail("node and solc-js are needed to compile Probe.sol: run `bash scripts/dev.sh setup`")
    completed = subprocess.run(
        [node, "-e", _COMPILE_JS, str(PROBE_SOURCE)],
        capture_output=True,
        check=False,
        env={"NODE_PATH": str(NODE_MODULES), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    if completed.returncode != 0:
        pytest.fail(f"compiling Probe.sol failed: {completed.stderr.decode()}")
    output = json.loads(completed.stdout)
    return TestArtifact(name="Probe", abi=output["abi"], bytecode=output["bytecode"])


@pytest.fixture(scope="session")
def probe_artifact() -> TestArtifact:
    return compile_probe()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def anvil_process() -> AsyncIterator[AnvilProcess]:
    async with AnvilProcess() as anvil:
        yield anvil


@pytest.fixture(params=["embedded", pytest.param("anvil", marks=pytest.mark.integration)])
def chain_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def chain_settings(rpc_url: str, **overrides: Any) -> ChainSettings:
    # Short timeouts: a test that waits on a dead chain should fail in seconds, not minutes.
    defaults: dict[str, Any] = {"receipt_timeout_s": 20.0, "rpc_retries": 2, "poll_interval_s": 0.05}
    return ChainSettings(rpc_url=rpc_url, **{**defaults, **overrides})


@pytest.fixture
def rpc_url(chain_backend: str, request: pytest.FixtureRequest) -> str:
    """Where the backend listens; anvil is started only when an anvil test runs."""
    if chain_backend == "anvil":
        anvil: AnvilProcess = request.getfixturevalue("anvil_process")
        return anvil.rpc_url
    return "embedded"


@pytest_asyncio.fixture
async def client(rpc_url: str) -> AsyncIterator[ChainClient]:
    connected = await ChainClient.connect(chain_settings(rpc_url))
    try:
        yield connected
    finally:
        await connected.close()


@pytest.fixture
def accounts(client: ChainClient) -> list[LocalAccount]:
    return client.dev_accounts()


async def advance_time(client: ChainClient, seconds: int) -> None:
    """Move the chain's clock `seconds` forward and mine a block, on either backend."""
    await client.increase_time(seconds)


@pytest.fixture(name="chain_settings")
def chain_settings_fixture() -> Any:
    return chain_settings


@pytest.fixture(name="advance_time")
def advance_time_fixture() -> Any:
    return advance_time
