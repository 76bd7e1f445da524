"""The composition root: one `Settings` in, every service built and run under one TaskGroup.

    node = Node(settings, key=key)
    async with node.running():          # returns once every service is ready
        await node.services.jobs.submit(spec)

`run_node(settings)` is the daemon: it runs until SIGINT/SIGTERM and shuts down gracefully. A
service that crashes cancels the others and its error is raised from `running()`/`run_node`.
Several nodes can live in one process and share one embedded chain (`shared_chain=`), as the
devnet does; a node on an RPC URL (anvil, a testnet) connects on its own.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from node.chain.client import ChainClient
from node.chain.court import DisputeCourt
from node.chain.follower import EventFollower
from node.chain.keys import NodeKey, unlock_keystore
from node.chain.market import JobMarket
from node.chain.registry import ProviderRegistry
from node.client.fraud_gossip import FraudRecords
from node.client.jobs import ClientJobs
from node.client.matching import Matchmaker
from node.client.model_specs import ModelSpecs
from node.client.payments import VoucherBook
from node.client.pipeline import ClientPipeline
from node.client.reputation import ReputationBook
from node.client.spot_checks import ConfirmedFraud, FraudHook, SpotChecker
from node.config import Settings
from node.discovery.advert import Benchmark, Device, DeviceKind, ModelPrice, Offer
from node.discovery.dht_records import dht_validators
from node.discovery.registry_view import CachedRegistryView
from node.discovery.service import DiscoveryService
from node.domain.service import NodeServices
from node.domain.state import Role
from node.errors import ConfigError, GpunodeError, JobError
from node.executor.errors import UnknownModel
from node.executor.inventory import Inventory, take_inventory
from node.executor.manifest import MANIFEST_FILE, ModelManifest
from node.executor.pool import ExecutorPool
from node.executor.store import ModelStore
from node.jobstore.blobs import JobBlobs, ReceiptFiles
from node.jobstore.events import JobEvents
from node.jobstore.store import JobStore
from node.logging import get_logger
from node.metrics import NodeMetrics, Sample
from node.p2p.blob_protocol import serve_blobs
from node.p2p.blob_store import BlobSources, SharedBlobs
from node.p2p.hold_protocol import serve_holds
from node.p2p.host import P2PHost
from node.p2p.identity import peer_id_to_bytes
from node.p2p.job_protocol import JobClient, serve_jobs
from node.provider.holds import HoldDesk
from node.provider.info import ProviderInfo
from node.provider.jobs import ProviderJobs
from node.provider.jury import (
    JURY_FOLLOWER_NAME,
    JuryDuty,
    blob_evidence,
    chain_evidence,
    manifest_tolerance,
    store_has_model,
)
from node.provider.model_fetch import ModelFetcher
from node.provider.model_manifests import ModelManifests
from node.provider.models import Models
from node.provider.onchain import FOLLOWER_NAME, OnchainJobs
from node.provider.runner import JobRunner
from node.scheduler import AdmissionPolicy
from node.settlement.client import ClientSettlement
from node.settlement.disputes import DisputeDesk
from node.settlement.evidence import DisputeEvidence
from node.settlement.policy import RedemptionPolicy
from node.settlement.provider import ProviderSettlement
from node.settlement.service import SettlementService
from node.status import NodeInfo
from node.storage import Database
from node.types import FetchTerms, Hash32, ResultReceipt, sha256

log = get_logger(__name__)

# Providers settle this often (seconds) unless poked.
SETTLEMENT_INTERVAL_S = 5.0


@dataclass(frozen=True, slots=True)
class Contracts:
    client: ChainClient
    registry: ProviderRegistry
    market: JobMarket
    court: DisputeCourt | None  # None on a deployment without one


@dataclass(frozen=True, slots=True)
class ProviderParts:
    store: ModelStore
    pool: ExecutorPool
    runner: JobRunner
    jobs: ProviderJobs
    onchain: OnchainJobs
    jury: JuryDuty | None
    policy: AdmissionPolicy
    inventory: Inventory
    fetcher: ModelFetcher | None


def load_key(settings: Settings) -> NodeKey:
    """The node's key from its keystore, unlocked with the password in `keys.password_env`."""
    password = os.environ.get(settings.keys.password_env)
    if password is None:
        raise ConfigError(
            f"no keystore password in ${settings.keys.password_env}",
            hint=f"export {settings.keys.password_env}=… (the password given to `gpunode keys new`)",
        )
    return unlock_keystore(settings.keys.keystore, password)


# builders, one per layer ----------------------------------------------------------------------


async def build_chain(settings: Settings, *, shared: ChainClient | None = None) -> Contracts:
    """Connect (sharing `shared`'s embedded chain and nonce book when given) and bind the contracts."""
    chain = settings.chain
    if chain.registry_address is None or chain.market_address is None:
        raise ConfigError(
            "chain.registry_address and chain.market_address must be set",
            hint="deploy them with `gpunode contracts deploy` and put the addresses in [chain] of the config",
        )
    if shared is not None:
        client = await ChainClient.connect(chain, provider=shared.w3.provider, nonces=shared.nonces)
    else:
        client = await ChainClient.connect(chain)
    registry = ProviderRegistry(client, chain.registry_address)
    court_address = await registry.court()
    court = None if court_address is None else DisputeCourt(client, court_address)
    return Contracts(client, registry, JobMarket(client, chain.market_address), court)


async def build_storage(settings: Settings) -> Database:
    settings.home.mkdir(parents=True, exist_ok=True)
    return await asyncio.to_thread(_open_database, settings.storage.url)


# Alembic keeps its migration context in module globals: several nodes starting in one process
# (a devnet) must not migrate their databases at the same time.
_MIGRATING = threading.Lock()


def _open_database(url: str) -> Database:
    with _MIGRATING:
        return Database.open(url)


def served_models(settings: Settings, store: ModelStore) -> dict[Hash32, int]:
    """Model id → price floor for every model this provider offers."""
    ids = settings.provider.models or [m.model_id for m in store.models()]
    price = settings.provider.price_per_job_wei
    return {Hash32(bytes.fromhex(store.get(i).model_id)): price for i in ids}


def fetch_terms(settings: Settings) -> FetchTerms | None:
    """What this provider asks to fetch a model it does not hold, if it does."""
    provider = settings.provider
    if not provider.fetch_models:
        return None
    return FetchTerms(provider.max_fetch_bytes, provider.price_per_job_wei, provider.cold_start_price_wei)


def build_offer(
    policy: AdmissionPolicy, warm: list[Hash32], inventory: Inventory, store: ModelStore | None = None
) -> Offer:
    """The advertised offer: measured devices and benchmark figures, prices (with each model's
    task and precision, read from `store`), warm models, slots."""
    healthy = [d for d in inventory.devices if d.healthy]
    devices = tuple(
        Device(DeviceKind(d.kind), d.name, d.memory_bytes, d.compute_capability or "") for d in healthy
    )
    # Benchmark figures name their device as torch does ("cuda:0", "cpu"); adverts by position.
    index = {("cpu" if d.kind == "cpu" else f"{d.kind}:{d.index}"): i for i, d in enumerate(healthy)}
    benchmarks = tuple(
        Benchmark(
            Hash32(bytes.fromhex(b.reference_model_id)),
            index.get(b.device, 0),
            b.throughput_items_per_s,
            b.latency_ms_p50,
        )
        for b in inventory.benchmarks
    )
    return Offer(
        devices=devices,
        warm_models=tuple(warm),
        prices=tuple(_priced(m, p, store) for m, p in policy.price_floor_wei.items()),
        free_slots=policy.slots,
        benchmarks=benchmarks,
        fetch=policy.fetch,
    )


def _priced(model_id: Hash32, price: int, store: ModelStore | None) -> ModelPrice:
    try:
        manifest = store.get(model_id) if store is not None else None
    except UnknownModel:  # removed while its price stays (a job already admitted finishes)
        manifest = None
    if manifest is None:
        return ModelPrice(model_id, price)
    return ModelPrice(
        model_id,
        price,
        task=manifest.offered_task,
        precision=manifest.precision,
        weights_id=Hash32(bytes.fromhex(manifest.weights_id)),
    )


class Node:
    """One gpunode node: client always, provider when `settings.provider.enabled`."""

    def __init__(
        self,
        settings: Settings,
        *,
        key: NodeKey | None = None,
        shared_chain: ChainClient | None = None,
        serve_api: bool = True,
        redemption: RedemptionPolicy | None = None,
        on_confirmed_fraud: FraudHook | None = None,
    ) -> None:
        self.settings = settings
        self.key = key if key is not None else load_key(settings)
        self._shared_chain = shared_chain
        self._serve_api = serve_api
        self._redemption = redemption or RedemptionPolicy()
        self._on_confirmed_fraud = on_confirmed_fraud
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self.metrics = NodeMetrics(self._sample)
        self.events = JobEvents(observe=self.metrics.observe_job)
        self.services: NodeServices
        self.contracts: Contracts
        self.db: Database
        self.job_store: JobStore
        self.host: P2PHost
        self.discovery: DiscoveryService
        self.registry_view: CachedRegistryView
        self.client_jobs: ClientJobs
        self.spot_checks: SpotChecker
        self.reputation: ReputationBook
        self.fraud_records: FraudRecords
        self.settlement: SettlementService
        self.disputes: DisputeDesk | None = None
        self.evidence: DisputeEvidence
        self.provider: ProviderParts | None = None
        self.model_store: ModelStore
        self.api: Any = None
        self.http: Any = None
        # Large job inputs and outputs in flight, served to the one peer each is shared with.
        self.shared_blobs = SharedBlobs()

    def stop(self) -> None:
        """Ask `run()` to shut down gracefully."""
        self._stop.set()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Node]:
        """Run the node in the background; yields once it is ready, stops it on exit."""
        task = asyncio.create_task(self.run(), name=f"node-{self.key.address}")
        try:
            await _started(task, self.ready)
        except BaseException:
            # Cancelled while starting: the node stops with its caller.
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise
        if task.done():
            task.result()  # raises what stopped the node during start-up
            raise GpunodeError("the node stopped while starting")
        try:
            yield self
        finally:
            self.stop()
            await task

    async def run(self) -> None:
        """Build everything, run until `stop()` (or a crash, which is raised), then tear down."""
        async with AsyncExitStack() as stack:
            try:
                await self._build(stack)
            except BaseExceptionGroup as failed:
                # Libraries that run nurseries wrap start-up failures in groups; a user wants the
                # one error that says what to fix.
                raise _first_error(failed) from failed
            try:
                async with asyncio.TaskGroup() as group:
                    await self._start_services(group)
                    await self._stop.wait()
                    raise _Stopping
            except* _Stopping:
                pass
            except* Exception as crashed:
                # One service failed and the TaskGroup cancelled the others: say which and why.
                for error in crashed.exceptions:
                    log.error("node_service_crashed", address=self.key.address, error=repr(error))
                raise
            finally:
                self.ready.clear()
        log.info("node_stopped", address=self.key.address)

    # building ---------------------------------------------------------------------------------

    async def _build(self, stack: AsyncExitStack) -> None:
        settings = self.settings
        self.contracts = await build_chain(settings, shared=self._shared_chain)
        stack.push_async_callback(self.contracts.client.close)
        self.db = await build_storage(settings)
        stack.callback(self.db.close)
        self.job_store = JobStore(self.db, self.events)
        self.host = await stack.enter_async_context(
            P2PHost.start(self.key, settings.p2p, dht_validators=dht_validators())
        )
        if settings.provider.enabled:
            self.provider = await self._build_provider(stack)
        self.model_store = (
            self.provider.store
            if self.provider
            else await asyncio.to_thread(
                ModelStore, settings.executor.model_dir, settings.executor.model_cache_bytes
            )
        )
        self.registry_view = CachedRegistryView(self.contracts.registry)
        self.discovery = await stack.enter_async_context(
            DiscoveryService.subscribed(
                self.host,
                self.registry_view,
                settings.p2p,
                key=self.key if self.provider else None,
                offer=None,
            )
        )
        # Jurors fetch the input and output of this node's disputes from its job store.
        self.evidence = DisputeEvidence(JobBlobs(settings.home / "blobs", fsync=self.db.survives_power_loss))
        self._build_client()
        self._build_disputes()
        self._build_services()
        if self._serve_api and settings.http.serves(provider=self.provider is not None):
            self.http = _http_server(self.services, settings, self.metrics)
            if self.http is not None:
                stack.callback(self.http.close)

    async def _build_provider(self, stack: AsyncExitStack) -> ProviderParts:
        settings = self.settings
        store = await asyncio.to_thread(
            ModelStore, settings.executor.model_dir, settings.executor.model_cache_bytes
        )
        pool = await stack.enter_async_context(ExecutorPool(settings.executor, store))
        prices = await asyncio.to_thread(served_models, settings, store)
        policy = AdmissionPolicy(
            price_floor_wei=prices,
            slots=settings.executor.workers_per_model * settings.executor.max_batch,
            max_queue=settings.provider.max_queue,
            max_input_bytes=settings.executor.max_input_bytes,
            fetch=fetch_terms(settings),
        )
        market = self.contracts.market
        runner = JobRunner(self.job_store, pool, self.key, market.domain(), slots=policy.slots)
        blobs = JobBlobs(settings.home / "blobs", fsync=self.db.survives_power_loss)
        fetcher = None
        if policy.fetch is not None:
            fetcher = ModelFetcher(
                self.host,
                store,
                max_bytes=policy.fetch.max_bytes,
                offer=self.offer_model,
                holders=self._holders_of,
                max_models=settings.provider.max_fetched_models,
            )
        jobs = ProviderJobs(
            runner,
            market,
            policy,
            blobs,
            spawn=self._spawn,
            host=self.host,
            shared=self.shared_blobs,
            fetcher=fetcher,
        )
        follower = EventFollower(
            self.contracts.client,
            market.contract,
            name=FOLLOWER_NAME,
            cursors=self.db.cursors,
            events=("JobRequested", "JobInput"),
            start_block=await self.contracts.client.block_number(),
        )
        onchain = OnchainJobs(
            runner,
            market,
            blobs,
            follower,
            policy,
            spawn=self._spawn,
            max_callback_gas=settings.provider.max_callback_gas,
        )
        # Probed in a torch subprocess: torch never loads in the node process.
        inventory = await take_inventory(
            benchmark=settings.provider.benchmark_on_start, threads=settings.executor.threads
        )
        jury = await self._build_jury(store, pool)
        return ProviderParts(store, pool, runner, jobs, onchain, jury, policy, inventory, fetcher)

    def _holds_model(self, model_id: Hash32) -> bool:
        """Whether this node's store holds `model_id` (to serve to a provider that fetches it)."""
        return (self.settings.executor.model_dir / model_id.hex() / MANIFEST_FILE).is_file()

    def _own_manifest(self, model_id: Hash32) -> ModelManifest | None:
        if not self._holds_model(model_id):
            return None
        try:
            return self.model_store.get(model_id.hex())
        except GpunodeError:
            return None

    def _holders_of(self, model_id: Hash32) -> list[str]:
        """Peers whose adverts offer `model_id`: where a model may be fetched besides its client."""
        return [advert.peer_id for advert in self.discovery.directory.find(model_id=model_id)]

    async def _build_jury(self, store: ModelStore, pool: ExecutorPool) -> JuryDuty | None:
        """Jury duty for the court's disputes, served for the models this node has."""
        court, client = self.contracts.court, self.contracts.client
        if court is None:
            return None
        follower = EventFollower(
            client,
            court.contract,
            name=JURY_FOLLOWER_NAME,
            cursors=self.db.cursors,
            events=("JurorDrawn",),
            start_block=await client.block_number(),
        )
        return JuryDuty(
            court,
            self.key,
            pool,
            blob_evidence(
                self.host,
                chain_evidence(self.contracts.market),
                max_size=max(self.settings.executor.max_input_bytes, self.settings.executor.max_output_bytes),
            ),
            manifest_tolerance(store),
            store_has_model(store),
            follower=follower,
            spawn=self._spawn,
            poll_interval_s=self.settings.chain.poll_interval_s,
        )

    def _build_client(self) -> None:
        market = self.contracts.market
        pipeline = ClientPipeline(
            store=self.job_store,
            blobs=JobBlobs(self.settings.home / "blobs", fsync=self.db.survives_power_loss),
            matchmaker=Matchmaker(
                self.discovery.directory,
                exploration=self.settings.client.exploration,
                held_here=self._holds_model,
            ),
            jobs=JobClient(self.host),
            host=self.host,
            market=market,
            key=self.key,
            vouchers=VoucherBook(self.key.address, self.key.private_key, market.domain()),
            receipts=ReceiptFiles(self.settings.home / "receipts", fsync=self.db.survives_power_loss),
            shared=self.shared_blobs,
            max_output_bytes=self.settings.executor.max_output_bytes,
        )
        specs = ModelSpecs(self.host, local=self._own_manifest)
        self.client_jobs = ClientJobs(
            pipeline,
            max_input_bytes=self.settings.executor.max_input_bytes,
            specs=specs,
            discovery_wait_s=self.settings.client.discovery_wait_s,
        )
        self._build_spot_checks(pipeline, specs)
        provider_settlement = None
        if self.provider is not None:
            provider_settlement = ProviderSettlement(
                self.job_store,
                market,
                self.key,
                self._redemption,
                blobs=JobBlobs(self.settings.home / "blobs", fsync=self.db.survives_power_loss),
            )
        self.settlement = SettlementService(
            ClientSettlement(self.job_store, market, self.key),
            provider_settlement,
            interval_s=SETTLEMENT_INTERVAL_S,
        )

    def _build_spot_checks(self, pipeline: ClientPipeline, specs: ModelSpecs) -> None:
        book = self.reputation = ReputationBook(self.db)
        self.fraud_records = FraudRecords(
            self.host,
            book,
            specs,
            self.contracts.market.domain(),
            self.key.address,
            registry=self.registry_view,
        )
        self.spot_checks = SpotChecker(
            self.client_jobs,
            book,
            specs,
            self.key,
            share=self.settings.client.spot_check_share,
            publish=self.fraud_records.publish,
            # The port where a result proven wrong by a third run opens a dispute on chain.
            on_confirmed=self._on_confirmed_fraud,
        )
        pipeline.on_verified = self.spot_checks.verified

    def _build_disputes(self) -> None:
        """The dispute desk, where the deployment has a court; a fraud that two other providers
        confirmed is disputed on chain unless the node was given another port for it."""
        court = self.contracts.court
        if court is None:
            return
        self.disputes = DisputeDesk(
            court,
            self.key,
            self._verified_receipt,
            evidence_peer=peer_id_to_bytes(self.host.peer_id),
            evidence=self.evidence,
            poll_interval_s=self.settings.chain.poll_interval_s,
        )
        if self.spot_checks.on_confirmed is None:
            self.spot_checks.on_confirmed = self._dispute_fraud

    async def _verified_receipt(self, job_id: str) -> tuple[ResultReceipt, bytes]:
        view = await self.client_jobs.get(job_id)
        if view.receipt is None or not view.receipt.verified:
            raise JobError(f"job {job_id} has no verified receipt to dispute")
        return view.receipt.receipt, view.receipt.signature

    async def _dispute_fraud(self, fraud: ConfirmedFraud) -> None:
        if self.disputes is None:
            return
        try:
            await self.disputes.open(fraud.job_id)
        except GpunodeError as exc:
            log.warning("fraud_not_disputed", job=fraud.job_id, error=str(exc))

    def _build_services(self) -> None:
        c = self.contracts
        provider_api = None
        if self.provider is not None:
            provider_api = ProviderInfo(
                self.provider.jobs,
                c.registry,
                self.settlement,
                price_per_job_wei=self.settings.provider.price_per_job_wei,
                jury=self.provider.jury,
            )
        store = self.model_store
        self.services = NodeServices(
            jobs=self.client_jobs,
            provider=provider_api,
            models=Models(
                store,
                self.provider.pool if self.provider else None,
                on_added=self.offer_model if self.provider else None,
                on_removed=self.withdraw_model if self.provider else None,
            ),
            node=NodeInfo(
                self.host,
                c.client,
                c.registry,
                c.market,
                self.discovery.directory,
                self.db,
                provider=self.provider is not None,
                reputation=self.reputation.known,
            ),
            verification=self.spot_checks,
            disputes=self.disputes,
        )

    # running ----------------------------------------------------------------------------------

    async def _start_services(self, group: asyncio.TaskGroup) -> None:
        self._group = group
        waits: list[Awaitable[Any]] = []
        # Models (manifests, to check inputs against; files, for providers that fetch them), the
        # large inputs and outputs of jobs in flight, to the peers they are shared with, and the
        # evidence of this node's disputes, to their jurors.
        serve_blobs(
            self.host, BlobSources(ModelManifests(self.model_store), self.shared_blobs, self.evidence)
        )
        group.create_task(self.discovery.run(), name="discovery")
        waits.append(self.discovery.ready.wait())
        group.create_task(self.client_jobs.run(), name="client-jobs")
        waits.append(self.client_jobs.ready.wait())
        group.create_task(self.spot_checks.run(), name="spot-checks")
        waits.append(self.spot_checks.ready.wait())
        group.create_task(self.fraud_records.run(), name="fraud-records")
        waits.append(self.fraud_records.ready.wait())
        group.create_task(self.settlement.run(), name="settlement")
        waits.append(self.settlement.ready.wait())
        if self.disputes is not None:
            group.create_task(self.disputes.run(), name="disputes")
            waits.append(self.disputes.ready.wait())
        if self.provider is not None:
            await self._start_provider(group, waits)
        if self._serve_api:
            self.api = _api_server(self.services, self.settings)
            if self.api is not None:
                group.create_task(self.api.run(), name="api")
                waits.append(self.api.ready.wait())
        if self.http is not None:
            group.create_task(self.http.run(), name="http")
            waits.append(self.http.ready.wait())
        await _all_ready(waits)
        self.ready.set()
        log.info(
            "node_ready",
            address=self.key.address,
            peer_id=self.host.peer_id,
            addrs=self.host.addrs,
            provider=self.provider is not None,
        )

    async def _start_provider(self, group: asyncio.TaskGroup, waits: list[Awaitable[Any]]) -> None:
        parts = self.provider
        if parts is None:
            return
        jobs = await self.db.run(self.db.jobs.list, role=Role.PROVIDER, limit=2**31 - 1)
        parts.jobs.load_covered(jobs)
        # Claims a restart cut off are served to the end: an unfinished claim costs stake.
        await parts.jobs.resume()
        # Warm every served model first, so the first job does not pay the cold start.
        warm = list(parts.policy.price_floor_wei)
        for model_id in warm:
            await parts.pool.warm(model_id)
        serve_jobs(self.host, parts.jobs.handle)
        # Clients' holds are granted as slots free (node.scheduler.holds).
        desk = parts.jobs.holds = HoldDesk(
            parts.runner.load, lambda: parts.jobs.policy, refuse=parts.jobs.model_refusal
        )
        serve_holds(self.host, desk.handle)
        group.create_task(parts.onchain.run(), name="onchain-jobs")
        waits.append(parts.onchain.ready.wait())
        if parts.jury is not None:
            group.create_task(parts.jury.run(), name="jury-duty")
            waits.append(parts.jury.ready.wait())
        try:
            await self.discovery.announce(build_offer(parts.jobs.policy, warm, parts.inventory, parts.store))
        except GpunodeError as exc:
            # The offer is kept: the advert refresher publishes it on its next round.
            log.warning("advert_publish_failed", error=str(exc))
        # Adverts carry the free slots and the queue as the load changes (paced by discovery).
        parts.runner.load.listeners.append(self.discovery.set_load)

    async def offer_model(self, model_id: str) -> None:
        """Serve a model installed while the provider runs: warm it, then advertise it at once."""
        parts = self.provider
        if parts is None:
            return
        key = Hash32(bytes.fromhex(model_id))
        await parts.pool.warm(model_id)
        if key not in parts.jobs.policy.price_floor_wei:
            parts.jobs.set_price(key, self.settings.provider.price_per_job_wei)
        if parts.fetcher is not None and parts.fetcher.full:
            parts.jobs.stop_fetching()
        parts.onchain.policy = parts.jobs.policy
        warm = [Hash32(bytes.fromhex(m)) for m in parts.pool.lanes()]
        offer = build_offer(parts.jobs.policy, warm, parts.inventory, parts.store)
        try:
            await self.discovery.announce(offer)
        except GpunodeError as exc:
            # The offer is kept: the advert refresher publishes it on its next round.
            log.warning("advert_publish_failed", error=str(exc))
        log.info("model_offered", model_id=model_id)

    async def withdraw_model(self, model_id: str) -> None:
        """Stop offering a model: jobs for it are refused from now on and the advert drops it at
        once. Its warm workers stay until the node stops (a job already admitted finishes)."""
        parts = self.provider
        if parts is None:
            return
        parts.jobs.withdraw(Hash32(bytes.fromhex(model_id)))
        parts.onchain.policy = parts.jobs.policy
        warm = [Hash32(bytes.fromhex(m)) for m in parts.pool.lanes() if m != model_id]
        try:
            await self.discovery.announce(build_offer(parts.jobs.policy, warm, parts.inventory, parts.store))
        except GpunodeError as exc:
            log.warning("advert_publish_failed", error=str(exc))
        log.info("model_withdrawn", model_id=model_id)

    def _sample(self) -> Sample:
        """What the components count, for `/metrics` (zeros until the node is built)."""
        if not hasattr(self, "discovery"):
            return Sample()
        validator = self.discovery.validator
        parts = self.provider
        return Sample(
            peers_connected=len(self.host.connected_peers()),
            adverts_live=len(self.discovery.directory),
            adverts_accepted=validator.accepted,
            adverts_rejected={reason.value: n for reason, n in validator.rejected.items()},
            gossip_dropped=self.discovery.gossip_dropped,
            chain_calls=self.contracts.client.rpc_calls,
            chain_errors=self.contracts.client.rpc_failures,
            warm_workers=(
                {m: len(lane.workers()) for m, lane in parts.pool.lanes().items()} if parts else {}
            ),
            vouchers_promised_wei=self.client_jobs.pipeline.vouchers.total_promised(),
        )

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Background work of a job (submitting a result on-chain) under the node's TaskGroup."""
        self._group.create_task(_logged(work))

    # on-chain registration --------------------------------------------------------------------

    async def register(self, stake_wei: int | None = None) -> None:
        """Register this node as a provider in the on-chain registry (once)."""
        registry = self.contracts.registry
        record = await registry.provider(self.key.address)
        if record.registered:
            return
        await registry.register(
            peer_id_to_bytes(self.host.peer_id),
            sha256(self.host.peer_id.encode()),
            stake=self.settings.provider.stake_wei if stake_wei is None else stake_wei,
            sender=self.key.account,
        )


async def _started(node: asyncio.Task[None], ready: asyncio.Event) -> None:
    """Until the node is ready or has stopped; the wait for `ready` never outlives the call."""
    waiting = asyncio.create_task(ready.wait())
    try:
        await asyncio.wait({node, waiting}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    leaves: list[BaseException] = []

    def walk(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                walk(inner)
        else:
            leaves.append(error)

    walk(group)
    ours = [e for e in leaves if isinstance(e, GpunodeError)]
    return (ours or leaves or [group])[0]


class _Stopping(Exception):
    """Raised inside the TaskGroup to cancel every service on a requested stop."""


async def _all_ready(waits: list[Awaitable[Any]]) -> None:
    for wait in waits:
        await wait


async def _logged(work: Coroutine[Any, Any, None]) -> None:
    try:
        await work
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("background_job_work_failed")


def _api_server(services: NodeServices, settings: Settings) -> Any:
    """The gRPC API from `node.api.server.serve`, when that package is installed with the node."""
    try:
        from node.api.server import serve
    except ImportError:
        log.warning("api_unavailable")
        return None
    return serve(services, settings)


def _http_server(services: NodeServices, settings: Settings, metrics: NodeMetrics) -> Any:
    """The HTTP face from `node.http.server`, when that package is installed with the node."""
    try:
        from node.http.server import HttpServer
    except ImportError:
        log.warning("http_unavailable")
        return None
    return HttpServer(services, settings, metrics)


async def run_node(
    settings: Settings,
    *,
    key: NodeKey | None = None,
    on_ready: Callable[[Node], None] | None = None,
    shared_chain: ChainClient | None = None,
) -> None:
    """The daemon: run one node until SIGINT or SIGTERM, then stop gracefully.

    `on_ready` is called with the node once every service is ready (the CLI prints its address).
    """
    node = Node(settings, key=key, shared_chain=shared_chain)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, node.stop)
    try:
        running = asyncio.create_task(node.run(), name="node")
        try:
            await _started(running, node.ready)
            if node.ready.is_set() and on_ready is not None:
                on_ready(node)
            # Returns after a signal's graceful stop; raises what crashed a service.
            await running
        finally:
            running.cancel()  # a no-op once it ended; stops the node if this was cancelled
            await asyncio.gather(running, return_exceptions=True)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
