"""A small marketplace behind the gRPC API, shared by the API and CLI tests of this directory
(the `api_devnet` fixture in conftest.py starts one per test module).

One embedded chain with the contracts, one registered provider (the sandboxed executor with a
built-in MLP) and two clients — `client` with a voucher deposit, `pauper` without — all real nodes
built by `node.app` on 127.0.0.1, each serving its API on a free port; `pauper`'s API asks for
its token. They run on their own event
loop in a thread, so the tests reach them only through gRPC, as the CLI and SDK do, and the CLI's
own `asyncio.run` works from plain test functions.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import save

from node.app import Node
from node.chain.client import ChainClient
from node.chain.deploy import Deployment, deploy_contracts
from node.chain.keys import NodeKey
from node.config import (
    ApiSettings,
    ChainSettings,
    ExecutorSettings,
    P2PSettings,
    ProviderSettings,
    Settings,
    StorageSettings,
)
from node.executor.store import ModelStore
from node.p2p.identity import peer_id_from, peer_id_to_bytes
from node.types import sha256

MIN_STAKE = 10**18
PRICE_WEI = 10**12
DEPOSIT_WEI = 10**17
MAX_INPUT_BYTES = 256 * 1024
MAX_UPLOAD_BYTES = 64 * 1024
START_TIMEOUT_S = 240.0

EXECUTOR_LIMITS = {
    "worker_memory_bytes": int(1.5 * 2**30),
    "tmpfs_bytes": 16 * 2**20,
    "max_processes": 32,
    "worker_cpu_seconds": 600,
    "job_timeout_s": 60.0,
    "max_input_bytes": MAX_INPUT_BYTES,
    "max_batch_wait_ms": 0.0,
}


@dataclass(frozen=True)
class ApiDevnet:
    """Where each node's API listens, and what the tests need to know about the marketplace."""

    client_api: str
    provider_api: str
    pauper_api: str
    pauper_home: Path  # holds the api.token its API asks for
    provider_address: str
    client_address: str
    model_id: str
    registry_address: str
    market_address: str
    chain_id: int
    small_model_dir: Path  # fits under the provider's upload limit
    large_model_dir: Path  # does not


def make_builtin_model(out: Path, architecture: str = "mlp", **overrides: int) -> str:
    """Generate a built-in model's files in a torch subprocess; returns its model id."""
    argv = [sys.executable, "-m", "node.executor.builtin_models", architecture, "--out", str(out)]
    argv += [arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return str(json.loads(done.stdout.strip().splitlines()[-1])["model_id"])


def mlp_input(seed: int = 0, rows: int = 2) -> bytes:
    rng = np.random.default_rng(seed)
    return bytes(save({"input": rng.standard_normal((rows, 64), dtype=np.float32)}))


def _settings(
    root: Path,
    name: str,
    deployment: Deployment,
    *,
    provider: bool,
    bootstrap: list[str],
    require_token: bool = False,
) -> Settings:
    home = root / name
    return Settings(
        home=home,
        chain=ChainSettings(
            rpc_url="embedded",
            registry_address=deployment.registry.address,
            market_address=deployment.market.address,
            receipt_timeout_s=30.0,
            poll_interval_s=0.2,
        ),
        p2p=P2PSettings(
            listen=["/ip4/127.0.0.1/tcp/0"],
            bootstrap=bootstrap,
            advert_refresh_s=2.0,
            advert_ttl_s=120.0,
            job_timeout_s=30.0,
            read_timeout_s=5.0,
        ),
        executor=ExecutorSettings.model_validate({"model_dir": home / "models", **EXECUTOR_LIMITS}),
        storage=StorageSettings(url=f"sqlite:///{home / 'gpunode.db'}"),
        api=ApiSettings(
            listen="127.0.0.1:0", max_upload_bytes=MAX_UPLOAD_BYTES, grace_s=0.5, require_token=require_token
        ),
        provider=ProviderSettings(enabled=provider, price_per_job_wei=PRICE_WEI, stake_wei=MIN_STAKE),
    )


@asynccontextmanager
async def _marketplace(root: Path) -> AsyncIterator[ApiDevnet]:
    chain = await ChainClient.connect(ChainSettings(rpc_url="embedded", receipt_timeout_s=30.0))
    async with AsyncExitStack() as stack:
        stack.push_async_callback(chain.close)
        accounts = chain.dev_accounts()
        deployment = await deploy_contracts(
            chain,
            accounts[0],
            min_stake=MIN_STAKE,
            unstake_cooldown_s=3600,
            challenge_window_s=600,
            withdrawal_delay_s=3600,
        )
        keys = [NodeKey.from_private_key(bytes(a.key)) for a in accounts]
        served, small, large = root / "model-served", root / "model-small", root / "model-large"
        model_id = await asyncio.to_thread(make_builtin_model, served)
        await asyncio.to_thread(make_builtin_model, small, hidden=8)
        await asyncio.to_thread(make_builtin_model, large, hidden=128)

        def node(name: str, key: NodeKey, *, provider: bool, bootstrap: list[str]) -> Node:
            settings = _settings(
                root, name, deployment, provider=provider, bootstrap=bootstrap, require_token=name == "pauper"
            )
            if provider:
                ModelStore(settings.executor.model_dir, 2**30).import_dir(served)
            return Node(settings, key=key, shared_chain=chain)

        client = await stack.enter_async_context(
            node("client", keys[8], provider=False, bootstrap=[]).running()
        )
        bootstrap = [client.host.addrs[0]]
        provider_key = keys[1]
        await deployment.registry.register(
            peer_id_to_bytes(str(peer_id_from(provider_key))),
            sha256(b"provider"),
            stake=MIN_STAKE,
            sender=provider_key.account,
        )
        provider = await stack.enter_async_context(
            node("provider", provider_key, provider=True, bootstrap=bootstrap).running()
        )
        pauper = await stack.enter_async_context(
            node("pauper", keys[7], provider=False, bootstrap=bootstrap).running()
        )
        for watcher in (client, pauper):
            await watcher.discovery.directory.wait_for(lambda d: len(d) >= 1, timeout_s=60.0)
        await client.client_jobs.deposit(DEPOSIT_WEI)
        yield ApiDevnet(
            client_api=client.api.address,
            provider_api=provider.api.address,
            pauper_api=pauper.api.address,
            pauper_home=root / "pauper",
            provider_address=provider_key.address,
            client_address=keys[8].address,
            model_id=model_id,
            registry_address=deployment.registry.address,
            market_address=deployment.market.address,
            chain_id=chain.chain_id,
            small_model_dir=small,
            large_model_dir=large,
        )


class Background:
    """Runs the marketplace on its own loop in a thread until told to stop."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.devnet: ApiDevnet | None = None
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="api-devnet", daemon=True)

    def start(self) -> ApiDevnet:
        self._thread.start()
        if not self.ready.wait(START_TIMEOUT_S):
            raise TimeoutError(f"the API test marketplace did not start in {START_TIMEOUT_S} s")
        if self.error is not None:
            raise self.error
        assert self.devnet is not None
        return self.devnet

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60.0)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the test session through start()
            self.error = exc
        finally:
            self.ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with _marketplace(self.root) as devnet:
            self.devnet = devnet
            self.ready.set()
            await self._stop.wait()


_EXPORT_SMALL_PROGRAM = """
import sys, torch
class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)
    def forward(self, x):
        return torch.relu(self.linear(x))
torch.manual_seed(0)
batch = torch.export.Dim("batch", min=1, max=1024)
program = torch.export.export(Small(), (torch.randn(2, 4),), dynamic_shapes=({0: batch},))
torch.export.save(program, sys.argv[1])
"""


def exported_program(path: Path) -> Path:
    """A small real `.pt2` (relu(linear(x)), dynamic batch), exported in a torch subprocess."""
    subprocess.run([sys.executable, "-c", _EXPORT_SMALL_PROGRAM, str(path)], check=True, capture_output=True)
    return path
