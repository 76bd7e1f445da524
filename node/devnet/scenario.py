"""`gpunode devnet`: a whole marketplace on one machine — the chain, the contracts, N providers
and a client — run once, settled and checked.

`run_devnet` deploys `ProviderRegistry` and `JobMarket` on the embedded chain (or anvil, or any dev
chain's RPC URL), starts providers and a client as real nodes — libp2p hosts on 127.0.0.1, the
sandboxed executor, SQLite — registers and stakes the providers, waits for their adverts to reach
the client, runs jobs through both payment paths plus a dApp's consumer contract, verifies every
receipt, settles everything and checks that each provider was paid exactly what it earned and that
the market holds exactly what it owes.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

from node.app import Node
from node.chain.artifacts import load_artifact
from node.chain.client import ChainClient
from node.chain.deploy import Deployment
from node.chain.eip712 import verify_receipt
from node.chain.follower import ChainEvent, EventFollower, JsonCursorStore
from node.config import ApiSettings, HttpSettings, Settings
from node.devnet.marketplace import CHALLENGE_WINDOW_S, MIN_STAKE_WEI, PRICE_WEI, Marketplace, sample_input
from node.domain.service import JobFilter, JobSpec, JobView
from node.domain.state import JobState, PaymentPath, Role
from node.errors import GpunodeError
from node.executor.hf_model import read_hf_dir
from node.logging import get_logger
from node.types import Address

log = get_logger(__name__)

Progress = Callable[[str], None]

CLIENT_DEPOSIT_WEI = 10**17


@dataclass(frozen=True, slots=True)
class DevnetOptions:
    providers: int = 3
    jobs: int = 20
    # Share of the client's jobs paid through on-chain escrow; the rest use vouchers.
    escrow_share: float = 0.5
    # Jobs a dApp's consumer contract asks for on-chain, answered through its callback.
    dapp_jobs: int = 2
    # "embedded" (in-process chain), "anvil" (started here, from npm), or a dev chain's RPC URL.
    chain: str = "embedded"
    architecture: str = "mlp"
    price_wei: int = PRICE_WEI
    concurrency: int = 4
    home: Path | None = None  # kept when given; otherwise a temporary directory removed at the end
    # After the run, keep every node up and the client's gRPC API listening here (None: stop).
    serve_api: str | None = None
    # With serve_api: where the client's HTTP face (OpenAI-compatible API, dashboard) listens.
    serve_http: str = "127.0.0.1:8000"


@dataclass(frozen=True, slots=True)
class ProviderSummary:
    address: Address
    jobs_served: int
    # Price times the jobs it completed (spot checks' re-runs too), as the client and the dApp saw them.
    earned_wei: int
    paid_wei: int  # what the market credited to it: its escrowed jobs finalized, vouchers redeemed
    advertised_items_per_s: float | None = None  # its benchmark, as its advert told the client


@dataclass(frozen=True, slots=True)
class DevnetSummary:
    chain: str
    providers: int
    jobs: int
    completed: int
    by_path: dict[str, int]
    receipts_verified: int
    latency_p50_ms: float
    latency_p99_ms: float
    gas_per_job: dict[str, float]
    provider_summaries: tuple[ProviderSummary, ...]
    market_balance_wei: int
    market_owed_wei: int
    elapsed_s: float
    problems: tuple[str, ...] = field(default=())
    spot_checks: int = 0  # re-runs of sampled jobs on other providers, submitted by the client

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def max_share_vs_equal(self) -> float:
        """The most jobs any provider served over an equal share of the jobs served (1.0: even)."""
        served = [p.jobs_served for p in self.provider_summaries]
        total = sum(served)
        return max(served) * len(served) / total if total else 0.0

    def as_json(self) -> str:
        return json.dumps(
            {
                "chain": self.chain,
                "providers": self.providers,
                "jobs": self.jobs,
                "completed": self.completed,
                "by_path": self.by_path,
                "receipts_verified": self.receipts_verified,
                "spot_checks": self.spot_checks,
                "latency_p50_ms": round(self.latency_p50_ms, 2),
                "latency_p99_ms": round(self.latency_p99_ms, 2),
                "gas_per_job": {k: round(v) for k, v in self.gas_per_job.items()},
                "provider_earnings": [
                    {
                        "address": p.address,
                        "jobs": p.jobs_served,
                        "earned_wei": str(p.earned_wei),
                        "paid_wei": str(p.paid_wei),
                        "advertised_items_per_s": p.advertised_items_per_s,
                    }
                    for p in self.provider_summaries
                ],
                "max_share_vs_equal": round(self.max_share_vs_equal, 2),
                "market_balance_wei": str(self.market_balance_wei),
                "market_owed_wei": str(self.market_owed_wei),
                "elapsed_s": round(self.elapsed_s, 2),
                "ok": self.ok,
                "problems": list(self.problems),
            }
        )


@dataclass(frozen=True, slots=True)
class Serving:
    """Where a served devnet's client can be reached, and the text model its providers offer."""

    client_home: Path
    api: str  # the client's gRPC API, host:port
    http_url: str  # its HTTP face: the dashboard at /, OpenAI's API under /v1
    chat_model_id: str  # a tiny GPT-2 (seeded weights) every provider serves


# Called with the summary and where to reach the client while the nodes still run
# (`DevnetOptions.serve_api`).
Serve = Callable[[DevnetSummary, Serving], Awaitable[None]]


# the run ------------------------------------------------------------------------------------------


@dataclass
class _Run:
    options: DevnetOptions
    market: Marketplace
    progress: Progress
    providers: list[Node] = field(default_factory=list)
    client: Node | None = None
    consumer: Address | None = None
    first_block: int = 0
    chat_model: Path | None = None  # served too when the devnet keeps serving

    @property
    def chain(self) -> ChainClient:
        return self.market.chain

    @property
    def deployment(self) -> Deployment:
        return self.market.deployment


async def run_devnet(
    options: DevnetOptions, progress: Progress = lambda _: None, serve: Serve | None = None
) -> DevnetSummary:
    """Run the whole marketplace once and return what happened; raises only for faults.

    With `options.serve_api`, `serve(summary, serving)` runs before anything stops, so the
    marketplace stays up for the CLI (`GPUNODE_HOME=<client_home> gpunode job submit …`) and for
    OpenAI's clients (`OPENAI_BASE_URL=<http_url>/v1`); the providers then also serve a tiny GPT-2.
    """
    if options.providers < 1 or options.jobs < 0 or options.dapp_jobs < 0:
        raise GpunodeError("a devnet needs at least one provider and a non-negative number of jobs")
    started = time.monotonic()
    root = options.home or Path(tempfile.mkdtemp(prefix="gpunode-devnet-"))
    progress(f"chain {options.chain}: deploying the contracts, generating the {options.architecture} model")
    try:
        async with Marketplace.open(
            root, chain=options.chain, architecture=options.architecture, price_wei=options.price_wei
        ) as market:
            progress(
                f"registry {market.deployment.registry.address}, market {market.deployment.market.address} "
                f"on chain {market.chain.chain_id}"
            )
            run = _Run(options, market, progress)
            if options.serve_api is not None:
                progress("generating a tiny GPT-2 (seeded weights) for the OpenAI-compatible API")
                run.chat_model = await asyncio.to_thread(make_tiny_causal_lm, root / "tiny-gpt2")
            async with AsyncExitStack() as stack:
                await _start_nodes(run, stack)
                run.first_block = await run.chain.block_number()
                views = await _run_client_jobs(run)
                dapp = await _run_dapp_jobs(run)
                await _finish_spot_checks(run)
                await _settle(run, views)
                summary = await _summarize(run, views, dapp, time.monotonic() - started)
                if serve is not None and run.client is not None and run.chat_model is not None:
                    await serve(summary, _serving(run, root / "client"))
                return summary
    finally:
        if options.home is None:
            shutil.rmtree(root, ignore_errors=True)


# How long the client waits for every provider's advert once all of them are up.
DISCOVERY_TIMEOUT_S = 60.0


async def _start_nodes(run: _Run, stack: AsyncExitStack) -> None:
    options, market = run.options, run.market
    client_key = await market.funded_key()
    serving = options.serve_api is not None
    api = ApiSettings(listen=options.serve_api) if options.serve_api is not None else None
    http = HttpSettings(listen=options.serve_http) if serving else None
    client_settings = market.settings("client", provider=False, api=api, http=http)
    if serving:
        _write_cli_config(client_settings)
    client = await stack.enter_async_context(
        market.node(client_settings, client_key, serve_api=serving).running()
    )
    run.client = client
    bootstrap = [client.host.addrs[0]]
    run.progress(f"client {client_key.address} up at {bootstrap[0]}")

    keys = [await market.funded_key() for _ in range(options.providers)]
    for key in keys:
        await market.register(key)
    run.progress(f"{len(keys)} providers registered with a stake of {MIN_STAKE_WEI} wei each")
    # The providers redeem only when asked: the devnet settles at the end, one batch each.
    provider_settings = [
        market.settings(f"provider{i}", provider=True, bootstrap=bootstrap, benchmark=True)
        for i in range(len(keys))
    ]
    if run.chat_model is not None:
        for settings in provider_settings:
            market.install_model(settings, run.chat_model)
    nodes = [market.node(settings, key) for settings, key in zip(provider_settings, keys, strict=True)]
    run.progress("starting providers: warming sandboxed workers")
    run.providers = list(await asyncio.gather(*(stack.enter_async_context(n.running()) for n in nodes)))
    directory = client.discovery.directory
    try:
        await directory.wait_for(lambda d: len(d) >= options.providers, timeout_s=DISCOVERY_TIMEOUT_S)
    except TimeoutError:
        raise GpunodeError(
            f"only {len(directory)} of {options.providers} providers' adverts reached the client "
            f"in {DISCOVERY_TIMEOUT_S:.0f} s",
            hint="the machine may be too busy for this many nodes in one process: try fewer --providers",
        ) from None
    run.progress(f"every provider's advert reached the client ({options.providers} live)")
    await client.client_jobs.deposit(CLIENT_DEPOSIT_WEI)


def make_tiny_causal_lm(out: Path) -> Path:
    """A tiny GPT-2 in the Hugging Face layout, written by a subprocess (torch and transformers stay
    out of the node process)."""
    argv = [sys.executable, "-m", "node.executor.hf_tiny", "gpt2", "--out", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise GpunodeError(f"could not write the tiny GPT-2: {done.stderr.strip()[-2000:]}")
    return out


def _serving(run: _Run, client_home: Path) -> Serving:
    client, chat = run.client, run.chat_model
    if client is None or chat is None:
        raise GpunodeError("the devnet's client is not running")
    return Serving(
        client_home=client_home,
        api=client.api.address if client.api is not None else "",
        http_url=client.http.url if client.http is not None else "",
        chat_model_id=read_hf_dir(chat)[0].model_id,
    )


def _write_cli_config(settings: Settings) -> None:
    """What the CLI needs to reach this node: its API address (the token lives beside it)."""
    settings.home.mkdir(parents=True, exist_ok=True)
    (settings.home / "config.toml").write_text(f'[api]\nlisten = "{settings.api.listen}"\n')


async def _run_client_jobs(run: _Run) -> list[tuple[JobView, float]]:
    options, client = run.options, run.client
    manifest = run.market.manifest
    if client is None:
        raise GpunodeError("the devnet's client is not running")
    escrow_jobs = round(options.jobs * options.escrow_share)
    limit = asyncio.Semaphore(options.concurrency)
    done: list[tuple[JobView, float]] = []

    async def one(i: int) -> None:
        payment = PaymentPath.ESCROW if i < escrow_jobs else PaymentPath.VOUCHER
        spec = JobSpec(
            model_id=run.market.model_id,
            input=sample_input(manifest, seed=i),
            payment=payment,
            max_price_wei=options.price_wei,
            timeout_s=60.0,
        )
        async with limit:
            t0 = time.perf_counter()
            submitted = await client.client_jobs.submit(spec)
            view = submitted
            async for view in client.client_jobs.watch(submitted.job_id):
                if view.state is JobState.VERIFIED or view.terminal:
                    break
            done.append((view, (time.perf_counter() - t0) * 1000))
            run.progress(
                f"job {len(done)}/{options.jobs} {payment.value}: {view.state.value} by {view.provider}"
            )

    await asyncio.gather(*(one(i) for i in range(options.jobs)))
    return done


async def _run_dapp_jobs(run: _Run) -> list[Address | None]:
    """A dApp's consumer contract asks for jobs on-chain and gets each result in its callback."""
    options = run.options
    if options.dapp_jobs == 0:
        return []
    artifact = load_artifact("ExampleConsumer")
    model_id = bytes.fromhex(run.market.model_id)
    funder = run.market.funder
    address = await run.chain.deploy(artifact, run.deployment.market.address, model_id, sender=funder)
    consumer = run.chain.contract(artifact, address)
    run.consumer = Address(address)
    answered: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_answers(events: Sequence[ChainEvent]) -> None:
        for event in events:
            answered.put_nowait(bytes(event.args["jobId"]))

    follower = EventFollower(
        run.chain,
        consumer,
        name="devnet-consumer",
        cursors=JsonCursorStore(run.market.root / "consumer-cursor.json"),
        events=("Answered",),
        poll_interval_s=0.2,
        start_block=await run.chain.block_number(),
    )
    watching = asyncio.create_task(follower.run(on_answers))
    try:
        block = await run.chain.w3.eth.get_block("latest")
        deadline = int(block["timestamp"]) + 3600
        for i in range(options.dapp_jobs):
            sample = sample_input(run.market.manifest, seed=10_000 + i)
            await run.chain.transact(
                consumer.functions.ask(sample, deadline), sender=funder, value=options.price_wei
            )
        run.progress(f"dApp consumer {address} asked for {options.dapp_jobs} on-chain jobs")
        jobs = [await asyncio.wait_for(answered.get(), timeout=120.0) for _ in range(options.dapp_jobs)]
        run.progress(f"dApp consumer received {len(jobs)} results through its callback")
        # Who served each job, read while the market still holds it (finalizing clears it).
        return [(await run.deployment.market.job(job_id)).provider for job_id in jobs]
    finally:
        follower.stop()
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)


async def _finish_spot_checks(run: _Run) -> None:
    """The client re-runs a sample of its verified jobs on other providers (paid like any job):
    they are done before anything is settled, so that every provider's pay can be checked."""
    if run.client is None:
        return
    run.progress("finishing the client's spot checks")
    await run.client.spot_checks.until_idle()


async def _client_jobs(run: _Run) -> list[JobView]:
    """Every job the client ran: the devnet's own and its spot checks' re-runs."""
    if run.client is None:
        return []
    return list(await run.client.client_jobs.list(JobFilter(role=Role.CLIENT, limit=2**31 - 1)))


async def _settle(run: _Run, views: list[tuple[JobView, float]]) -> None:
    """Redeem vouchers, let the challenge window pass, finalize escrowed jobs, withdraw earnings."""
    run.progress("providers redeem their vouchers, one batch each")
    await _settle_providers(run)
    run.progress(f"challenge window: moving the chain's clock {CHALLENGE_WINDOW_S} s on")
    await run.chain.increase_time(CHALLENGE_WINDOW_S + 1)
    await _settle_providers(run)
    client = run.client
    if client is None:
        return
    every = await _client_jobs(run)
    escrowed = [v.job_id for v in every if v.payment is PaymentPath.ESCROW and not v.terminal]
    client.settlement.poke()
    for job_id in escrowed:
        async for view in client.client_jobs.watch(job_id):
            if view.terminal:
                break
    await _settle_providers(run)  # the client may have finalized jobs after a provider's last try
    run.progress("every escrowed job finalized; providers withdrew their earnings")


async def _settle_providers(run: _Run) -> None:
    for node in run.providers:
        if node.services.provider is not None:
            await node.services.provider.settle()


async def _gas_by_path(run: _Run) -> dict[str, int]:
    """Gas of every market transaction since the jobs began, grouped by what it paid for."""
    market = run.deployment.market.contract
    names = {
        "requestJob": "escrow",
        "claimJob": "escrow",
        "submitResult": "escrow",
        "finalize": "escrow",
        "redeemVouchers": "voucher",
    }
    totals: Counter[str] = Counter()
    last = await run.chain.block_number()
    for number in range(run.first_block + 1, last + 1):
        block = await run.chain.w3.eth.get_block(number, full_transactions=True)
        for tx in block["transactions"]:
            if not isinstance(tx, Mapping) or tx.get("to") != market.address:
                continue
            function, _ = market.decode_function_input(tx.get("input") or tx["data"])
            path = names.get(function.fn_name)
            if path is not None:
                receipt = await run.chain.w3.eth.get_transaction_receipt(tx["hash"])
                totals[path] += int(receipt["gasUsed"])
    return dict(totals)


async def _summarize(
    run: _Run, views: list[tuple[JobView, float]], dapp_jobs: list[Address | None], elapsed: float
) -> DevnetSummary:
    problems: list[str] = []
    domain = run.deployment.market.domain()
    completed = [v for v, _ in views if v.receipt is not None]
    verified = sum(
        1
        for v in completed
        if v.receipt is not None
        and v.provider is not None
        and verify_receipt(domain, v.receipt.receipt, v.receipt.signature, v.provider)
    )
    if verified != len(views):
        problems.append(f"{len(views) - verified} of {len(views)} client jobs have no verified receipt")
    latencies = sorted(ms for _, ms in views)
    by_path = Counter(v.payment.value for v, _ in views)
    # The spot checks' re-runs are jobs of the client too, paid like the rest.
    own = {v.job_id for v, _ in views}
    checks = [v for v in await _client_jobs(run) if v.job_id not in own]
    ran = [*completed, *checks]
    served = Counter(v.provider for v in ran if v.receipt is not None and v.provider is not None)
    served.update(p for p in dapp_jobs if p is not None)
    by_path["dapp"] = len(dapp_jobs)
    gas = await _gas_by_path(run)
    gas_per_job = {
        "escrow": gas.get("escrow", 0) / max(1, by_path["escrow"] + by_path["dapp"]),
        "voucher": gas.get("voucher", 0) / max(1, by_path["voucher"]),
    }
    # From the chain: the client finalizes escrowed jobs too, and may get there first.
    credited = await run.deployment.market.credited(run.first_block + 1)
    summaries = []
    for node in run.providers:
        address = node.key.address
        earned = served[address] * run.options.price_wei
        advert = run.client.discovery.directory.get(address) if run.client else None
        figures = advert.offer.benchmarks if advert else ()
        throughput = figures[0].throughput_per_s if figures else None
        paid = credited.get(address, 0)
        summaries.append(ProviderSummary(address, served[address], earned, paid, throughput))
        if paid != earned:
            problems.append(f"provider {address} earned {earned} wei but was paid {paid} wei")
    market = run.deployment.market
    balance = await run.chain.balance(market.address)
    owed = await _market_owed(run)
    if balance != owed:
        problems.append(f"the market holds {balance} wei but owes {owed} wei")
    return DevnetSummary(
        chain=run.options.chain,
        providers=len(run.providers),
        jobs=len(views) + len(dapp_jobs),
        spot_checks=len(checks),
        completed=len(completed) + len(dapp_jobs),
        by_path=dict(by_path),
        receipts_verified=verified,
        latency_p50_ms=_percentile(latencies, 50),
        latency_p99_ms=_percentile(latencies, 99),
        gas_per_job=gas_per_job,
        provider_summaries=tuple(summaries),
        market_balance_wei=balance,
        market_owed_wei=owed,
        elapsed_s=elapsed,
        problems=tuple(problems),
    )


async def _market_owed(run: _Run) -> int:
    """What the market owes everyone who took part: deposits and reserves left, unwithdrawn credit."""
    market = run.deployment.market
    providers: list[str] = [n.key.address for n in run.providers]
    accounts = providers + [a for a in (run.client.key.address if run.client else None, run.consumer) if a]
    owed = 0
    for account in accounts:
        owed += await market.withdrawable(account)
        owed += (await market.client_account(account)).balance
        for provider in providers:
            owed += (await market.reserve_of(account, provider)).amount
    return owed


def _percentile(values: list[float], pct: int) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]
