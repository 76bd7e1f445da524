"""AnvilProcess, and the client riding out an RPC node that goes away and comes back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from eth_account import Account

from node.chain.anvil import AnvilProcess, mnemonic_accounts
from node.chain.client import ChainClient
from node.config import ChainSettings
from node.errors import ChainError

pytestmark = pytest.mark.integration

SettingsFactory = Callable[..., ChainSettings]

# The first account of anvil's well-known development mnemonic.
FIRST_DEV_ACCOUNT = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


async def test_can_start_anvil_with_funded_accounts() -> None:
    async with AnvilProcess() as anvil:
        assert anvil.port > 0
        assert anvil.rpc_url == f"http://127.0.0.1:{anvil.port}"
        assert anvil.accounts[0].address == FIRST_DEV_ACCOUNT
        assert len(anvil.accounts) == 10
        client = await ChainClient.connect(ChainSettings(rpc_url=anvil.rpc_url))
        assert client.chain_id == 31337
        assert [a.address for a in client.dev_accounts()] == [a.address for a in anvil.accounts]
        assert await client.balance(anvil.accounts[9].address) == 10_000 * 10**18
        await client.close()
    assert not anvil.running


def test_can_derive_the_mnemonic_accounts_once() -> None:
    assert mnemonic_accounts() is mnemonic_accounts()


async def test_cannot_start_anvil_from_a_missing_binary(tmp_path: Path) -> None:
    with pytest.raises(ChainError, match="cannot run anvil") as caught:
        await AnvilProcess(binary=tmp_path / "anvil").start()
    assert "scripts/dev.sh setup" in str(caught.value)


async def test_cannot_start_two_anvils_on_one_port() -> None:
    async with AnvilProcess() as first:
        with pytest.raises(ChainError, match="before listening"):
            await AnvilProcess(port=first.port).start()
        assert first.running


async def test_can_recover_when_the_rpc_node_comes_back(chain_settings: SettingsFactory) -> None:
    async with AnvilProcess() as anvil:
        client = await ChainClient.connect(chain_settings(anvil.rpc_url, rpc_retries=2))
        sender = anvil.accounts[0]
        await client.transfer(Account.create().address, 1, sender=sender)

        await anvil.kill()
        with pytest.raises(ChainError, match="is unreachable") as caught:
            await client.transfer(Account.create().address, 1, sender=sender)
        assert anvil.rpc_url in str(caught.value)
        assert "3 times" in str(caught.value)
        assert "is the chain node running" in str(caught.value)

        # Back on the same port, as a fresh chain: the client resyncs its nonce and carries on.
        await anvil.start()
        recipient = Account.create().address
        receipt = await client.transfer(recipient, 7, sender=sender)
        assert receipt["status"] == 1
        assert await client.balance(recipient) == 7
        await client.close()


@asynccontextmanager
async def flaky_gateway(upstream: str, failures: int) -> AsyncIterator[tuple[str, list[int]]]:
    """An HTTP gateway in front of anvil that answers 502 to its first `failures` requests."""
    statuses: list[int] = []
    session = aiohttp.ClientSession()

    async def forward(request: web.Request) -> web.Response:
        if len(statuses) < failures:
            statuses.append(502)
            return web.Response(status=502, text="bad gateway")
        async with session.post(upstream, data=await request.read(), headers=request.headers) as reply:
            statuses.append(reply.status)
            return web.Response(status=reply.status, body=await reply.read(), content_type="application/json")

    application = web.Application()
    application.router.add_post("/", forward)
    runner = web.AppRunner(application)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", statuses
    finally:
        await runner.cleanup()
        await session.close()


async def test_can_retry_a_briefly_failing_gateway(chain_settings: SettingsFactory) -> None:
    async with AnvilProcess() as anvil, flaky_gateway(anvil.rpc_url, failures=2) as (url, statuses):
        client = await ChainClient.connect(chain_settings(url, rpc_retries=2))
        assert client.chain_id == 31337
        assert statuses[:3] == [502, 502, 200]
        recipient = Account.create().address
        await client.transfer(recipient, 3, sender=anvil.accounts[0])
        assert await client.balance(recipient) == 3
        await client.close()


async def test_cannot_get_through_a_gateway_that_keeps_failing(chain_settings: SettingsFactory) -> None:
    async with AnvilProcess() as anvil, flaky_gateway(anvil.rpc_url, failures=100) as (url, statuses):
        with pytest.raises(ChainError, match="unreachable or failing") as caught:
            await ChainClient.connect(chain_settings(url, rpc_retries=1))
        assert "502" in str(caught.value)
        assert statuses == [502, 502]
