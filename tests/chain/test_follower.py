"""EventFollower: confirmation depth, bounded ranges, resume from a cursor, at-least-once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from web3.contract import AsyncContract

from node.chain.client import ChainClient, ContractArtifact
from node.chain.follower import ChainEvent, EventFollower, JsonCursorStore
from node.errors import ChainError, StorageError


class Collected:
    """A handler that records what it is given and can be told to fail on a given call."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.batches: list[list[ChainEvent]] = []
        self.calls = 0
        self.fail_on_call = fail_on_call

    async def __call__(self, events: Sequence[ChainEvent]) -> None:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("handler crashed")
        self.batches.append(list(events))

    @property
    def values(self) -> list[int]:
        return [event.args["value"] for batch in self.batches for event in batch]


async def poke(client: ChainClient, probe: AsyncContract, sender: LocalAccount, *values: int) -> None:
    for value in values:
        await client.transact(probe.functions.poke(value), sender=sender)


@pytest.fixture
async def probe(
    client: ChainClient, accounts: list[LocalAccount], probe_artifact: ContractArtifact
) -> AsyncContract:
    address = await client.deploy(probe_artifact, sender=accounts[0])
    return client.contract(probe_artifact, address)


async def test_can_follow_only_confirmed_blocks(
    client: ChainClient, accounts: list[LocalAccount], probe: AsyncContract, tmp_path: Path
) -> None:
    start = await client.block_number()
    await poke(client, probe, accounts[1], 1, 2, 3)
    follower = EventFollower(
        client,
        probe,
        name="probe",
        cursors=JsonCursorStore(tmp_path / "c.json"),
        confirmations=2,
        start_block=start,
    )
    handler = Collected()
    await follower.catch_up(handler)
    # Each poke is mined in its own block; the last two are not yet two blocks deep.
    assert handler.values == [1]
    await client.mine(2)
    await follower.catch_up(handler)
    assert handler.values == [1, 2, 3]
    event = handler.batches[-1][-1]
    assert event.name == "Poked"
    assert event.args["who"] == accounts[1].address
    assert event.args["seq"] == 3
    assert event.address == probe.address
    assert event.transaction_hash.startswith("0x")
    assert JsonCursorStore(tmp_path / "c.json").load("probe") == await client.block_number() - 2


async def test_can_resume_from_the_cursor_without_loss(
    client: ChainClient, accounts: list[LocalAccount], probe: AsyncContract, tmp_path: Path
) -> None:
    start = await client.block_number()
    await poke(client, probe, accounts[2], *range(10))
    store_path = tmp_path / "cursors.json"

    def follower() -> EventFollower:
        # Two blocks per batch: ten pokes make several batches.
        return EventFollower(
            client,
            probe,
            name="probe",
            cursors=JsonCursorStore(store_path),
            confirmations=0,
            start_block=start,
            max_block_range=2,
        )

    crashing = Collected(fail_on_call=3)
    with pytest.raises(RuntimeError, match="handler crashed"):
        await follower().catch_up(crashing)
    assert crashing.values == [0, 1, 2]  # the deploy block had no pokes, so batch 1 holds one
    saved = JsonCursorStore(store_path).load("probe")
    assert saved is not None

    # A new follower (a restart) picks up at the saved cursor: the failed batch comes again.
    resumed = Collected()
    await follower().catch_up(resumed)
    assert crashing.values + resumed.values == list(range(10))

    await poke(client, probe, accounts[2], 10, 11)
    later = Collected()
    assert await follower().catch_up(later) == 2
    assert later.values == [10, 11]


async def test_can_run_until_stopped(
    client: ChainClient, accounts: list[LocalAccount], probe: AsyncContract, tmp_path: Path
) -> None:
    received: asyncio.Queue[ChainEvent] = asyncio.Queue()

    async def handler(events: Sequence[ChainEvent]) -> None:
        for event in events:
            received.put_nowait(event)

    follower = EventFollower(
        client,
        probe,
        name="live",
        cursors=JsonCursorStore(tmp_path / "c.json"),
        confirmations=0,
        poll_interval_s=0.05,
        start_block=await client.block_number(),
    )
    task = asyncio.create_task(follower.run(handler))
    await asyncio.wait_for(follower.ready.wait(), 10)
    await poke(client, probe, accounts[3], 42)
    event = await asyncio.wait_for(received.get(), 10)
    assert event.args["value"] == 42
    follower.stop()
    await asyncio.wait_for(task, 10)


async def test_cannot_follow_an_undeclared_event(
    client: ChainClient, probe: AsyncContract, tmp_path: Path
) -> None:
    with pytest.raises(ChainError, match="no event named Withdrawn"):
        EventFollower(client, probe, name="x", cursors=JsonCursorStore(tmp_path / "c"), events=["Withdrawn"])


def test_can_keep_several_cursors_in_one_file(tmp_path: Path) -> None:
    store = JsonCursorStore(tmp_path / "nested" / "cursors.json")
    assert store.load("market") is None
    store.save("market", 12)
    store.save("registry", 7)
    reopened = JsonCursorStore(tmp_path / "nested" / "cursors.json")
    assert (reopened.load("market"), reopened.load("registry")) == (12, 7)


@pytest.mark.parametrize(("content", "message"), [("{broken", "unreadable"), ("[]", "JSON object")])
def test_cannot_load_a_corrupt_cursor_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "cursors.json"
    path.write_text(content)
    with pytest.raises(StorageError, match=message):
        JsonCursorStore(path).load("market")
    assert path.read_text() == content


def test_cannot_save_a_negative_cursor(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot be saved"):
        JsonCursorStore(tmp_path / "c.json").save("market", -1)


async def test_can_follow_several_contracts_in_chain_order(
    client: ChainClient,
    accounts: list[LocalAccount],
    probe: AsyncContract,
    probe_artifact: ContractArtifact,
    tmp_path: Path,
) -> None:
    other = client.contract(probe_artifact, await client.deploy(probe_artifact, sender=accounts[0]))
    start = await client.block_number()
    await poke(client, probe, accounts[4], 1)
    await poke(client, other, accounts[4], 2)
    await poke(client, probe, accounts[4], 3)
    follower = EventFollower(
        client,
        [probe, other],
        name="both",
        cursors=JsonCursorStore(tmp_path / "c.json"),
        confirmations=0,
        start_block=start + 1,
        events=["Poked"],
    )
    handler = Collected()
    assert await follower.catch_up(handler) == 3
    assert handler.values == [1, 2, 3]
    emitters = [event.address for batch in handler.batches for event in batch]
    assert emitters == [probe.address, other.address, probe.address]
