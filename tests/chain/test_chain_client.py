"""ChainClient on both backends: sends, nonces, receipts, decoded reverts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3.contract import AsyncContract

from node.chain.client import ChainClient, ContractArtifact
from node.config import ChainSettings
from node.errors import ChainError, TransactionReverted

SettingsFactory = Callable[..., ChainSettings]


async def wait_until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    """Poll the chain for a state no event announces (a transaction reaching the mempool)."""
    async with asyncio.timeout(timeout_s):
        while not await condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def deploy_probe(
    client: ChainClient, artifact: ContractArtifact, sender: LocalAccount
) -> AsyncContract:
    address = await client.deploy(artifact, sender=sender)
    return client.contract(artifact, address)


async def test_can_transfer_ether(client: ChainClient, accounts: list[LocalAccount]) -> None:
    recipient = Account.create().address
    receipt = await client.transfer(recipient, 12345, sender=accounts[0])
    assert receipt["status"] == 1
    assert await client.balance(recipient) == 12345


async def test_can_deploy_transact_and_call(
    client: ChainClient, accounts: list[LocalAccount], probe_artifact: ContractArtifact
) -> None:
    probe = await deploy_probe(client, probe_artifact, accounts[0])
    receipt = await client.transact(probe.functions.poke(7), sender=accounts[1])
    assert receipt["status"] == 1
    assert await client.call(probe.functions.count()) == 1
    assert await client.call(probe.functions.quote(21)) == 42


@pytest.mark.parametrize(
    ("function", "args", "error_name", "error_args"),
    [
        ("needAtLeast", (3,), "TooLow", (3, 10)),
        ("requireNonZero", (0,), "Error", ("value must be non-zero",)),
        ("divide", (1, 0), "Panic", (0x12,)),
    ],
)
async def test_cannot_transact_a_reverting_call(
    client: ChainClient,
    accounts: list[LocalAccount],
    probe_artifact: ContractArtifact,
    function: str,
    args: tuple[int, ...],
    error_name: str,
    error_args: tuple[object, ...],
) -> None:
    probe = await deploy_probe(client, probe_artifact, accounts[0])
    sender = accounts[2]
    nonce_before = await client.w3.eth.get_transaction_count(sender.address)
    with pytest.raises(TransactionReverted) as caught:
        await client.transact(probe.functions[function](*args), sender=sender)
    assert caught.value.error_name == error_name
    assert caught.value.error_args == error_args
    assert function in str(caught.value)
    # Simulation caught it: nothing was sent, no gas spent, the nonce is untouched.
    assert await client.w3.eth.get_transaction_count(sender.address) == nonce_before
    assert await client.call(probe.functions.count()) == 0


async def test_cannot_call_a_reverting_view(
    client: ChainClient, accounts: list[LocalAccount], probe_artifact: ContractArtifact
) -> None:
    probe = await deploy_probe(client, probe_artifact, accounts[0])
    with pytest.raises(TransactionReverted) as caught:
        await client.call(probe.functions.quote(2))
    assert (caught.value.error_name, caught.value.error_args) == ("TooLow", (2, 10))
    assert "TooLow(2, 10)" in str(caught.value)


async def test_cannot_pass_a_revert_mined_after_simulation(
    client: ChainClient, accounts: list[LocalAccount], probe_artifact: ContractArtifact
) -> None:
    probe = await deploy_probe(client, probe_artifact, accounts[0])
    first, second = accounts[3], accounts[4]
    sent_before = {s.address: await client.w3.eth.get_transaction_count(s.address) for s in (first, second)}
    await client.set_automine(False)
    try:
        # Both simulate against a state where the probe is open; only one can close it.
        closing = [
            asyncio.create_task(client.transact(probe.functions.close(), sender=sender))
            for sender in (first, second)
        ]

        async def both_sent() -> bool:
            # Submitted, not merely given a nonce: the client moves past a nonce once it is sent.
            return all((client.nonces.peek(a) or 0) > n for a, n in sent_before.items())

        await wait_until(both_sent)
        await client.mine()
        results = await asyncio.gather(*closing, return_exceptions=True)
    finally:
        await client.set_automine(True)
    receipts = [r for r in results if not isinstance(r, BaseException)]
    failures = [r for r in results if isinstance(r, TransactionReverted)]
    assert len(receipts) == 1, results
    assert len(failures) == 1, results
    failure = failures[0]
    loser = second if receipts[0]["from"] == first.address else first
    assert failure.error_name == "Closed"
    assert failure.error_args == (loser.address,)
    assert "transaction 0x" in str(failure)


async def test_can_send_concurrently_from_one_account(
    client: ChainClient, accounts: list[LocalAccount]
) -> None:
    sender = accounts[5]
    start = await client.w3.eth.get_transaction_count(sender.address)
    recipients = [Account.create().address for _ in range(20)]
    receipts = await asyncio.gather(
        *(client.transfer(recipient, 1000 + i, sender=sender) for i, recipient in enumerate(recipients))
    )
    assert all(r["status"] == 1 for r in receipts)
    transactions = [await client.w3.eth.get_transaction(r["transactionHash"]) for r in receipts]
    assert sorted(tx["nonce"] for tx in transactions) == list(range(start, start + 20))
    assert await client.w3.eth.get_transaction_count(sender.address) == start + 20
    for i, recipient in enumerate(recipients):
        assert await client.balance(recipient) == 1000 + i


async def test_can_resync_a_stale_nonce(
    rpc_url: str, accounts: list[LocalAccount], chain_settings: SettingsFactory
) -> None:
    """Another process spends the same account: the client learns the new nonce and carries on."""
    settings = chain_settings(rpc_url)
    first = await ChainClient.connect(settings)
    try:
        provider = first.w3.provider if first.embedded else None
        other = await ChainClient.connect(settings, provider=provider)
        sender = accounts[6]
        await first.transfer(Account.create().address, 1, sender=sender)
        await other.transfer(Account.create().address, 1, sender=sender)
        recipient = Account.create().address
        receipt = await first.transfer(recipient, 5, sender=sender)
        assert receipt["status"] == 1
        assert await first.balance(recipient) == 5
        await other.close()
    finally:
        await first.close()


async def test_cannot_wait_forever_for_a_receipt(
    rpc_url: str, accounts: list[LocalAccount], chain_settings: SettingsFactory
) -> None:
    client = await ChainClient.connect(chain_settings(rpc_url, receipt_timeout_s=0.5))
    await client.set_automine(False)
    try:
        with pytest.raises(ChainError, match=r"not mined within 0\.5 s"):
            await client.transfer(Account.create().address, 1, sender=accounts[7])
    finally:
        await client.set_automine(True)
        await client.mine()
        await client.close()


async def test_can_share_one_embedded_chain_between_clients(chain_settings: SettingsFactory) -> None:
    settings = chain_settings("embedded")
    first = await ChainClient.connect(settings)
    second = await ChainClient.connect(settings, provider=first.w3.provider, nonces=first.nonces)
    sender = first.dev_accounts()[0]
    recipient = Account.create().address
    await asyncio.gather(*(c.transfer(recipient, 10, sender=sender) for c in (first, second, first, second)))
    assert await second.balance(recipient) == 40
    assert await first.block_number() == await second.block_number()
    await second.close()
    await first.close()


async def test_cannot_connect_to_an_unsupported_url() -> None:
    # Settings validation refuses such a URL already; the client checks on its own too.
    settings = ChainSettings.model_construct(rpc_url="ftp://example.org")
    with pytest.raises(ChainError, match=r"unsupported chain\.rpc_url"):
        await ChainClient.connect(settings)


async def test_can_advance_the_chain_clock(
    client: ChainClient, advance_time: Callable[..., Awaitable[None]]
) -> None:
    before = (await client.w3.eth.get_block("latest"))["timestamp"]
    height = await client.block_number()
    await advance_time(client, 3600)
    after = await client.w3.eth.get_block("latest")
    assert after["timestamp"] >= before + 3600
    assert after["number"] == height + 1
    with pytest.raises(ChainError, match="only moves forward"):
        await advance_time(client, -1)


async def test_can_read_the_chain_clock(
    client: ChainClient, advance_time: Callable[..., Awaitable[None]]
) -> None:
    before = await client.chain_time()
    await advance_time(client, 600)
    assert await client.chain_time() == float((await client.w3.eth.get_block("latest"))["timestamp"])
    assert await client.chain_time() >= before + 600


@pytest.mark.parametrize("failure", [ConnectionRefusedError("refused"), ValueError("not a block")])
async def test_cannot_read_the_chain_clock_while_the_chain_is_away(
    client: ChainClient, monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    async def away(*_: object, **__: object) -> object:
        raise failure

    monkeypatch.setattr(client.w3.eth, "get_block", away)
    with pytest.raises(ChainError, match=r"check chain\.rpc_url"):
        await client.chain_time()


async def test_can_list_the_same_ten_funded_accounts(
    client: ChainClient, accounts: list[LocalAccount]
) -> None:
    assert len(accounts) >= 10
    assert len({a.address for a in accounts}) == len(accounts)
    for account in accounts:
        assert await client.balance(account.address) > 10**21
