"""A small marketplace behind the gRPC API, shared by the API and CLI tests of this directory
(the `api_devnet` fixture in conftest.py starts one per test module).

One embedded chain with the contracts, one registered provider (the sandboxed executor with a
built-in MLP) and two clients — `client` with a voucher deposit, `pauper` without — all real nodes
built by `node.app` on 127.0.0.1, each serving its API on a free port; `pauper`'s API asks for
its token. They run in a child process (ChildMarketplace), so the tests reach them only through
gRPC, as the CLI and SDK do.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from child_marketplace import ChildMarketplace, serve
from safetensors.numpy import save

from node.app import Node
from node.chain.keys import NodeKey
from node.config import ApiSettings
from node.devnet import Marketplace, make_builtin_model
from node.devnet.marketplace import PRICE_WEI
from node.logging import configure_logging

DEPOSIT_WEI = 10**17
MAX_INPUT_BYTES = 256 * 1024
MAX_UPLOAD_BYTES = 64 * 1024
START_TIMEOUT_S = 240.0

EXECUTOR_LIMITS = {"max_input_bytes": MAX_INPUT_BYTES}


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
    generation_model_id: str  # a tiny Hugging Face causal LM the provider also serves


def mlp_input(seed: int = 0, rows: int = 2) -> bytes:
    rng = np.random.default_rng(seed)
    return bytes(save({"input": rng.standard_normal((rows, 64), dtype=np.float32)}))


@asynccontextmanager
async def _marketplace(root: Path) -> AsyncIterator[ApiDevnet]:
    async with Marketplace.open(root, price_wei=PRICE_WEI) as market, AsyncExitStack() as stack:
        keys = market.dev_keys()
        small, large = root / "model-small", root / "model-large"
        await asyncio.to_thread(make_builtin_model, small, hidden=8)
        await asyncio.to_thread(make_builtin_model, large, hidden=128)
        # Imported here: only this child process (not the tests') pays for transformers.
        from node.executor.hf_model import read_hf_dir
        from node.executor.hf_tiny import write_tiny

        generator = await asyncio.to_thread(write_tiny, "gpt2", root / "tiny-gpt2")
        generation_model_id = read_hf_dir(generator)[0].model_id

        def node(name: str, key: NodeKey, *, provider: bool, bootstrap: list[str]) -> Node:
            api = ApiSettings(
                listen="127.0.0.1:0",
                max_upload_bytes=MAX_UPLOAD_BYTES,
                grace_s=0.5,
                require_token=name == "pauper",
            )
            settings = market.settings(
                name, provider=provider, bootstrap=bootstrap, executor=EXECUTOR_LIMITS, api=api
            )
            if provider:
                market.install_model(settings, generator)
            return market.node(settings, key, serve_api=True, redemption=None)

        client = await stack.enter_async_context(
            node("client", keys[8], provider=False, bootstrap=[]).running()
        )
        bootstrap = [client.host.addrs[0]]
        provider_key = keys[1]
        await market.register(provider_key)
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
            model_id=market.model_id,
            registry_address=market.deployment.registry.address,
            market_address=market.deployment.market.address,
            chain_id=market.chain.chain_id,
            small_model_dir=small,
            large_model_dir=large,
            generation_model_id=generation_model_id,
        )


def child_marketplace(root: Path) -> ChildMarketplace[ApiDevnet]:
    """The marketplace, to start in a child process (see child_marketplace)."""
    return ChildMarketplace(__file__, root, _parse, name="API", start_timeout_s=START_TIMEOUT_S)


def _parse(fields: dict[str, Any]) -> ApiDevnet:
    for name in ("pauper_home", "small_model_dir", "large_model_dir"):
        fields[name] = Path(fields[name])
    return ApiDevnet(**fields)


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


if __name__ == "__main__":
    configure_logging("INFO")
    asyncio.run(serve(_marketplace(Path(sys.argv[1]))))
