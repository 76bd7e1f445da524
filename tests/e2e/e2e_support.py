"""A devnet for end-to-end tests: one embedded chain with the contracts, N providers and a client
as real nodes (libp2p on 127.0.0.1, the sandboxed executor, SQLite), all in this process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import save

from node.app import Node
from node.chain.client import ChainClient
from node.chain.deploy import Deployment, deploy_contracts
from node.chain.keys import NodeKey
from node.config import (
    ChainSettings,
    ExecutorSettings,
    P2PSettings,
    ProviderSettings,
    Settings,
    StorageSettings,
)
from node.p2p.identity import peer_id_from, peer_id_to_bytes
from node.settlement.policy import RedemptionPolicy
from node.types import sha256

MIN_STAKE = 10**18
PRICE_WEI = 10**12  # 1000 gwei: a whole number of gwei, as escrow needs
CHALLENGE_WINDOW_S = 600
WITHDRAWAL_DELAY_S = 3600

EXECUTOR_LIMITS = {
    "worker_memory_bytes": int(1.5 * 2**30),
    "tmpfs_bytes": 16 * 2**20,
    "max_processes": 32,
    "worker_cpu_seconds": 600,
    "job_timeout_s": 60.0,
    "max_input_bytes": 1 * 2**20,
    "max_batch_wait_ms": 0.0,
}


def make_builtin_model(out: Path, architecture: str = "mlp", name: str | None = None, **config: int) -> str:
    """Generate a built-in model's files in a torch subprocess; returns its model id."""
    argv = [sys.executable, "-m", "node.executor.builtin_models", architecture, "--out", str(out)]
    argv += ["--name", name] if name else []
    argv += [arg for key, value in config.items() for arg in ("--set", f"{key}={value}")]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=True,
    )
    import json

    return str(json.loads(done.stdout.strip().splitlines()[-1])["model_id"])


def mlp_input(seed: int = 0, rows: int = 2) -> bytes:
    rng = np.random.default_rng(seed)
    return bytes(save({"input": rng.standard_normal((rows, 64), dtype=np.float32)}))


@dataclass
class Devnet:
    chain: ChainClient
    deployment: Deployment
    keys: list[NodeKey]
    model_dir: Path
    model_id: str
    root: Path
    providers: list[Node] = field(default_factory=list)
    client: Node | None = None
    rpc_url: str = "embedded"

    @property
    def shared(self) -> ChainClient | None:
        """Nodes in this process share the embedded chain; on an RPC URL each connects itself."""
        return self.chain if self.rpc_url == "embedded" else None

    @property
    def market(self):  # type: ignore[no-untyped-def]
        return self.deployment.market

    def settings(self, name: str, *, provider: bool, bootstrap: list[str] | None = None) -> Settings:
        home = self.root / name
        return Settings(
            home=home,
            chain=ChainSettings(
                rpc_url=self.rpc_url,
                registry_address=self.deployment.registry.address,
                market_address=self.deployment.market.address,
                receipt_timeout_s=30.0,
                poll_interval_s=0.2,
            ),
            p2p=P2PSettings(
                listen=["/ip4/127.0.0.1/tcp/0"],
                bootstrap=bootstrap or [],
                advert_refresh_s=2.0,
                advert_ttl_s=60.0,
                job_timeout_s=30.0,
                read_timeout_s=5.0,
            ),
            executor=ExecutorSettings.model_validate({"model_dir": home / "models", **EXECUTOR_LIMITS}),
            storage=StorageSettings(url=f"sqlite:///{home / 'gpunode.db'}"),
            provider=ProviderSettings(enabled=provider, price_per_job_wei=PRICE_WEI, stake_wei=MIN_STAKE),
        )

    def provider_settings(
        self, index: int, *, bootstrap: list[str], model_dir: Path | None = None
    ) -> Settings:
        settings = self.settings(f"provider{index}", provider=True, bootstrap=bootstrap)
        install_model(model_dir or self.model_dir, settings.executor.model_dir)
        return settings

    def provider_node(self, index: int, *, bootstrap: list[str], settings: Settings | None = None) -> Node:
        settings = settings or self.provider_settings(index, bootstrap=bootstrap)
        return Node(
            settings,
            key=self.keys[1 + index],
            shared_chain=self.shared,
            serve_api=False,
            redemption=RedemptionPolicy(min_amount_wei=10**30, min_vouchers=10**6),
        )

    def client_node(self, name: str = "client", *, key_index: int = 8) -> Node:
        return Node(
            self.settings(name, provider=False),
            key=self.keys[key_index],
            shared_chain=self.chain,
            serve_api=False,
        )


def install_model(source: Path, model_dir: Path) -> None:
    from node.executor.store import ModelStore

    ModelStore(model_dir, 2**30).import_dir(source)


async def register(devnet: Devnet, key: NodeKey) -> None:
    peer_id = peer_id_to_bytes(str(peer_id_from(key)))
    await devnet.deployment.registry.register(
        peer_id, sha256(b"provider"), stake=MIN_STAKE, sender=key.account
    )


async def deploy(chain: ChainClient) -> Deployment:
    return await deploy_contracts(
        chain,
        chain.dev_accounts()[0],
        min_stake=MIN_STAKE,
        unstake_cooldown_s=3600,
        challenge_window_s=CHALLENGE_WINDOW_S,
        withdrawal_delay_s=WITHDRAWAL_DELAY_S,
    )


@asynccontextmanager
async def deployed(root: Path, *, rpc_url: str = "embedded") -> AsyncIterator[Devnet]:
    chain = await ChainClient.connect(ChainSettings(rpc_url=rpc_url, receipt_timeout_s=30.0))
    try:
        deployment = await deploy(chain)
        keys = [NodeKey.from_private_key(bytes(a.key)) for a in chain.dev_accounts()]
        model_dir = root / "model-src"
        model_id = await asyncio.to_thread(make_builtin_model, model_dir)
        yield Devnet(chain, deployment, keys, model_dir, model_id, root, rpc_url=rpc_url)
    finally:
        await chain.close()


@asynccontextmanager
async def running_devnet(
    root: Path, *, providers: int = 3, rpc_url: str = "embedded"
) -> AsyncIterator[Devnet]:
    """The chain, `providers` registered providers and a client with a voucher deposit, all ready,
    every provider's advert in the client's directory."""
    async with deployed(root, rpc_url=rpc_url) as devnet, AsyncExitStack() as stack:
        client = await stack.enter_async_context(devnet.client_node().running())
        devnet.client = client
        bootstrap = [client.host.addrs[0]]
        for i in range(providers):
            await register(devnet, devnet.keys[1 + i])
        started = await asyncio.gather(
            *(
                stack.enter_async_context(devnet.provider_node(i, bootstrap=bootstrap).running())
                for i in range(providers)
            )
        )
        devnet.providers = list(started)
        await client.discovery.directory.wait_for(lambda d: len(d) >= providers, timeout_s=60.0)
        await client.client_jobs.deposit(10**17)
        yield devnet
