"""The building blocks of a local marketplace: a chain with the contracts, a model every provider
serves, and nodes configured for loopback — used by `gpunode devnet`, the end-to-end tests and
the benchmarks alike."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from eth_account.signers.local import LocalAccount
from safetensors.numpy import save

from node.app import Node
from node.chain.anvil import AnvilProcess
from node.chain.client import ChainClient
from node.chain.deploy import Deployment, deploy_contracts
from node.chain.keys import NodeKey
from node.config import (
    ApiSettings,
    ChainSettings,
    ExecutorSettings,
    HttpSettings,
    P2PSettings,
    ProviderSettings,
    Settings,
    StorageSettings,
)
from node.errors import ExecutorError
from node.executor.hf_model import is_hf_dir
from node.executor.manifest import ModelManifest
from node.executor.store import ModelStore
from node.p2p.identity import peer_id_from, peer_id_to_bytes
from node.settlement.policy import RedemptionPolicy
from node.types import sha256

MIN_STAKE_WEI = 10**18
PRICE_WEI = 10**12  # a whole number of gwei, as escrowed prices must be
UNSTAKE_COOLDOWN_S = 7200
CHALLENGE_WINDOW_S = 600
WITHDRAWAL_DELAY_S = 3600
# A node's account starts with this much, from the dev chain's funded accounts.
NODE_FUNDING_WEI = 10 * 10**18

# Executor limits sized for several providers sharing one small machine.
DEVNET_EXECUTOR: dict[str, Any] = {
    "worker_memory_bytes": int(1.5 * 2**30),
    "tmpfs_bytes": 16 * 2**20,
    "max_processes": 32,
    "worker_cpu_seconds": 600,
    "job_timeout_s": 60.0,
    "max_input_bytes": 1 * 2**20,
    "max_batch_wait_ms": 0.0,
}

# Redeem only when asked (settle()), so a run or a test decides when vouchers go on-chain.
REDEEM_ON_REQUEST = RedemptionPolicy(min_amount_wei=2**255, min_vouchers=2**31)


def make_builtin_model(
    out: Path, architecture: str = "mlp", name: str | None = None, **overrides: int
) -> str:
    """Generate a built-in model's files in a torch subprocess (torch stays out of the node process);
    returns its model id. The weights are deterministic, so every provider gets the same id."""
    argv = [sys.executable, "-m", "node.executor.builtin_models", architecture, "--out", str(out)]
    argv += ["--name", name] if name else []
    argv += [arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ExecutorError(f"could not generate the built-in model {architecture!r}: {done.stderr.strip()}")
    return str(json.loads(done.stdout.strip().splitlines()[-1])["model_id"])


def sample_input(manifest: ModelManifest, seed: int, rows: int = 2) -> bytes:
    """A valid random input for `manifest` (safetensors bytes), reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    for spec in manifest.inputs:
        shape = tuple(rows if dim is None else dim for dim in spec.shape)
        # safetensors names: F32, I64, … (BF16 has no numpy type; no built-in model takes it).
        dtype = np.dtype(("float" if spec.dtype.startswith("F") else "int") + spec.dtype.lstrip("FIU"))
        if spec.dtype.startswith("F"):
            tensors[spec.name] = rng.standard_normal(shape).astype(dtype)
        else:
            tensors[spec.name] = rng.integers(0, manifest.config.get("vocab", 2), size=shape, dtype=dtype)
    return bytes(save(tensors))


async def deploy_devnet_contracts(
    client: ChainClient, *, challenge_window_s: int = CHALLENGE_WINDOW_S
) -> Deployment:
    """The contracts with the devnet's parameters, deployed by the chain's first dev account."""
    return await deploy_contracts(
        client,
        client.dev_accounts()[0],
        min_stake=MIN_STAKE_WEI,
        unstake_cooldown_s=UNSTAKE_COOLDOWN_S,
        challenge_window_s=challenge_window_s,
        withdrawal_delay_s=WITHDRAWAL_DELAY_S,
    )


@dataclass
class Marketplace:
    """A chain with the contracts deployed and a built-in model ready to install, under `root`."""

    chain: ChainClient
    rpc_url: str
    deployment: Deployment
    root: Path
    model_source: Path
    model_id: str
    manifest: ModelManifest
    price_wei: int = PRICE_WEI

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        root: Path,
        *,
        chain: str = "embedded",
        architecture: str = "mlp",
        price_wei: int = PRICE_WEI,
        challenge_window_s: int = CHALLENGE_WINDOW_S,
    ) -> AsyncIterator[Marketplace]:
        """`chain` is "embedded" (in process), "anvil" (started here) or a dev chain's RPC URL."""
        async with AsyncExitStack() as stack:
            rpc_url = chain
            if chain == "anvil":
                rpc_url = (await stack.enter_async_context(AnvilProcess())).rpc_url
            client = await ChainClient.connect(ChainSettings(rpc_url=rpc_url, receipt_timeout_s=30.0))
            stack.push_async_callback(client.close)
            deployment = await deploy_devnet_contracts(client, challenge_window_s=challenge_window_s)
            source = root / "model-src"
            model_id = await asyncio.to_thread(make_builtin_model, source, architecture)
            manifest = ModelStore(root / "model-cache", 2**30).import_dir(source)
            yield cls(client, rpc_url, deployment, root, source, model_id, manifest, price_wei)

    @property
    def funder(self) -> LocalAccount:
        return self.chain.dev_accounts()[0]

    def dev_keys(self) -> list[NodeKey]:
        """The chain's funded development accounts as node keys (index 0 deployed the contracts)."""
        return [NodeKey.from_private_key(bytes(a.key)) for a in self.chain.dev_accounts()]

    async def funded_key(self) -> NodeKey:
        key = NodeKey.generate()
        await self.chain.transfer(key.address, NODE_FUNDING_WEI, sender=self.funder)
        return key

    async def register(self, key: NodeKey, stake_wei: int = MIN_STAKE_WEI) -> None:
        peer_id = peer_id_to_bytes(str(peer_id_from(key)))
        await self.deployment.registry.register(peer_id, sha256(peer_id), stake=stake_wei, sender=key.account)

    def settings(
        self,
        name: str,
        *,
        provider: bool,
        bootstrap: Sequence[str] = (),
        executor: dict[str, Any] | None = None,
        api: ApiSettings | None = None,
        http: HttpSettings | None = None,
        benchmark: bool = False,
    ) -> Settings:
        """Settings of one node under `root/name`: loopback only, quick advert refresh, small limits;
        a provider's store gets the marketplace's model. `benchmark` runs the start-up device
        benchmark (seconds of CPU per provider) so adverts carry its figures."""
        home = self.root / name
        settings = Settings(
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
                bootstrap=list(bootstrap),
                advert_refresh_s=2.0,
                advert_ttl_s=60.0,
                job_timeout_s=30.0,
                read_timeout_s=5.0,
            ),
            executor=ExecutorSettings.model_validate(
                {"model_dir": home / "models", **DEVNET_EXECUTOR, **(executor or {})}
            ),
            storage=StorageSettings(url=f"sqlite:///{home / 'gpunode.db'}"),
            api=api or ApiSettings(listen="127.0.0.1:0"),
            http=http or HttpSettings(listen="127.0.0.1:0"),
            provider=ProviderSettings(
                enabled=provider, price_per_job_wei=self.price_wei, stake_wei=MIN_STAKE_WEI
            ),
        )
        if provider:
            self.install_model(settings)
        return settings

    def install_model(self, settings: Settings, source: Path | None = None) -> None:
        store = ModelStore(settings.executor.model_dir, settings.executor.model_cache_bytes)
        model = source or self.model_source
        if is_hf_dir(model):
            store.import_hf_dir(model)
        else:
            store.import_dir(model)

    def node(
        self,
        settings: Settings,
        key: NodeKey,
        *,
        serve_api: bool = False,
        redemption: RedemptionPolicy | None = REDEEM_ON_REQUEST,
    ) -> Node:
        """A node of this marketplace; in one process nodes share the embedded chain."""
        shared = self.chain if self.rpc_url == "embedded" else None
        return Node(settings, key=key, shared_chain=shared, serve_api=serve_api, redemption=redemption)
