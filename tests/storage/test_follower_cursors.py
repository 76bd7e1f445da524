"""The database's chain cursors serve the chain follower: it resumes after a restart of the node."""

from __future__ import annotations

from collections.abc import Sequence

from node.chain.client import ChainClient
from node.chain.deploy import deploy_contracts
from node.chain.follower import ChainEvent, CursorStore, EventFollower
from node.config import ChainSettings
from node.storage import Database


async def test_follower_resumes_from_the_cursor_stored_in_the_database(database_url: str) -> None:
    client = await ChainClient.connect(ChainSettings(rpc_url="embedded", confirmations=0))
    try:
        accounts = client.dev_accounts()
        deployment = await deploy_contracts(
            client,
            accounts[0],
            min_stake=1,
            unstake_cooldown_s=3600,
            challenge_window_s=60,
            withdrawal_delay_s=60,
        )
        registry = deployment.registry
        start = await client.block_number()
        seen: list[str] = []

        async def handle(events: Sequence[ChainEvent]) -> None:
            seen.extend(e.args["provider"] for e in events if e.name == "ProviderRegistered")

        await registry.register(b"\x01" * 8, b"\x01" * 32, stake=10, sender=accounts[1])
        with Database.open(database_url) as db:
            cursors: CursorStore = db.cursors
            follower = EventFollower(
                client, registry.contract, name="registry", cursors=cursors, start_block=start
            )
            assert await follower.catch_up(handle) >= 1
            assert db.cursors.load("registry") == await client.block_number()
        assert seen == [accounts[1].address]

        await registry.register(b"\x02" * 8, b"\x02" * 32, stake=10, sender=accounts[2])
        with Database.open(database_url) as reopened:
            follower = EventFollower(
                client, registry.contract, name="registry", cursors=reopened.cursors, start_block=start
            )
            await follower.catch_up(handle)
            assert reopened.cursors.load("registry") == await client.block_number()
        # Only the new registration is delivered after the restart.
        assert seen == [accounts[1].address, accounts[2].address]
    finally:
        await client.close()
