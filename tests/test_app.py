"""The composition root: settings turned into a running node, start-up failures reported with
an actionable error, and a graceful stop on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path

import pytest

from node.app import Node, build_chain, load_key, run_node
from node.chain.client import ChainClient
from node.chain.deploy import deploy_contracts
from node.chain.keys import NodeKey, create_keystore
from node.config import ChainSettings, KeySettings, P2PSettings, Settings, StorageSettings
from node.errors import ConfigError, KeyStoreError, P2PError, StorageError


def settings_for(home: Path, chain: ChainSettings, **overrides: object) -> Settings:
    return Settings(
        home=home,
        chain=chain,
        storage=StorageSettings(url=f"sqlite:///{home / 'gpunode.db'}"),
        p2p=P2PSettings(listen=["/ip4/127.0.0.1/tcp/0"]),
        **overrides,  # type: ignore[arg-type]
    )


async def deployed_chain() -> tuple[ChainClient, ChainSettings]:
    client = await ChainClient.connect(ChainSettings(rpc_url="embedded"))
    deployment = await deploy_contracts(
        client,
        client.dev_accounts()[0],
        min_stake=10**18,
        unstake_cooldown_s=3600,
        challenge_window_s=60,
        withdrawal_delay_s=60,
    )
    settings = ChainSettings(
        rpc_url="embedded",
        registry_address=deployment.registry.address,
        market_address=deployment.market.address,
    )
    return client, settings


async def test_cannot_build_a_node_without_contract_addresses(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="market_address"):
        await build_chain(settings_for(tmp_path, ChainSettings()))


def test_can_load_the_key_only_with_its_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keystore = tmp_path / "keystore.json"
    created = create_keystore(keystore, "correct horse")
    settings = settings_for(
        tmp_path, ChainSettings(), keys=KeySettings(keystore=keystore, password_env="TEST_PW")
    )
    monkeypatch.delenv("TEST_PW", raising=False)
    with pytest.raises(ConfigError, match="TEST_PW"):
        load_key(settings)
    monkeypatch.setenv("TEST_PW", "wrong")
    with pytest.raises(KeyStoreError):
        load_key(settings)
    monkeypatch.setenv("TEST_PW", "correct horse")
    assert load_key(settings).address == created.address


async def test_a_node_that_cannot_start_says_why_and_leaves_nothing_running(tmp_path: Path) -> None:
    chain, chain_settings = await deployed_chain()
    try:
        settings = settings_for(tmp_path, chain_settings)
        settings.p2p.listen = ["/ip4/192.0.2.1/tcp/0"]  # an address this machine does not have
        node = Node(settings, key=NodeKey.generate(), shared_chain=chain, serve_api=False)
        with pytest.raises(P2PError, match="cannot listen"):
            async with node.running():
                pass
        assert not node.ready.is_set()
        # The database was opened and closed again: the same home serves a node that does start.
        settings.p2p.listen = ["/ip4/127.0.0.1/tcp/0"]
        async with Node(
            settings, key=NodeKey.generate(), shared_chain=chain, serve_api=False
        ).running() as ok:
            status = await ok.services.node.status()
            assert status.chain_id == chain.chain_id
            assert status.market_address == chain_settings.market_address
            assert status.provider is False
            assert ok.services.provider is None
    finally:
        await chain.close()


async def test_can_stop_gracefully_on_sigterm(tmp_path: Path) -> None:
    chain, chain_settings = await deployed_chain()
    try:
        settings = settings_for(
            tmp_path, chain_settings, api={"listen": "127.0.0.1:0"}, http={"listen": "127.0.0.1:0"}
        )
        started = asyncio.Event()
        seen: list[Node] = []

        def ready(node: Node) -> None:
            seen.append(node)
            started.set()

        daemon = asyncio.create_task(
            run_node(settings, key=NodeKey.generate(), on_ready=ready, shared_chain=chain)
        )
        await asyncio.wait_for(started.wait(), 60)
        assert seen[0].api is not None
        assert seen[0].http is not None  # a client serves its HTTP face by default
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(daemon, 30)
        assert not seen[0].ready.is_set()
    finally:
        await chain.close()


async def test_cannot_start_with_the_http_port_taken(tmp_path: Path) -> None:
    chain, chain_settings = await deployed_chain()
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        settings = settings_for(
            tmp_path, chain_settings, api={"listen": "127.0.0.1:0"}, http={"listen": f"127.0.0.1:{port}"}
        )
        node = Node(settings, key=NodeKey.generate(), shared_chain=chain)
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}") as caught:
            async with node.running():
                pass
        assert caught.value.hint is not None
        assert "http.listen" in caught.value.hint
    finally:
        taken.close()
        await chain.close()


async def test_a_crashed_service_stops_the_node_and_is_reported(tmp_path: Path) -> None:
    """The database disappears under a running node: the settlement service fails on its next
    round, the TaskGroup cancels every other service, and `running()` raises the failure."""
    chain, chain_settings = await deployed_chain()
    try:
        settings = settings_for(tmp_path, chain_settings)
        node = Node(settings, key=NodeKey.generate(), shared_chain=chain, serve_api=False)
        with pytest.raises(BaseExceptionGroup) as caught:
            await _lose_database_while_running(node, tmp_path)
        assert caught.group_contains(StorageError)
        assert not node.ready.is_set()
    finally:
        await chain.close()


async def _lose_database_while_running(node: Node, home: Path) -> None:
    async with node.running():
        node.db.close()
        await asyncio.to_thread(_remove_database_files, home)
        node.settlement.poke()
        await asyncio.wait_for(_stopped(node), 30)


def _remove_database_files(home: Path) -> None:
    for leftover in home.glob("gpunode.db*"):
        leftover.unlink()


async def _stopped(node: Node) -> None:
    while node.ready.is_set():  # noqa: ASYNC110 (the node offers no stopped event; a crash clears ready)
        await asyncio.sleep(0.05)


async def test_can_advertise_the_measured_devices_and_benchmark() -> None:
    from node.app import build_offer
    from node.discovery.advert import DeviceKind
    from node.executor.inventory import take_inventory
    from node.scheduler import AdmissionPolicy
    from node.types import Hash32

    inventory = await take_inventory(benchmark=True, repeats=3)
    model = Hash32(bytes.fromhex(inventory.benchmarks[0].reference_model_id))
    policy = AdmissionPolicy(price_floor_wei={model: 10**12}, slots=4, max_queue=8, max_input_bytes=2**20)
    offer = build_offer(policy, [model], inventory)
    assert [d.kind for d in offer.devices] == [DeviceKind(d.kind) for d in inventory.devices if d.healthy]
    assert offer.devices[0].memory_bytes == inventory.devices[0].memory_bytes > 0
    (figure,) = offer.benchmarks
    assert figure.model_id == model
    assert figure.throughput_per_s == inventory.benchmarks[0].throughput_items_per_s > 0
    assert figure.latency_p50_ms > 0
