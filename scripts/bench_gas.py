"""Gas of every contract call, of one on-chain job's lifecycle and of vouchers per paid job.

Deploys the contracts on the embedded chain (or `--rpc-url` of a dev chain such as anvil; gas is
identical), runs every call through the typed wrappers and reads `gasUsed` from each receipt,
21,000 base included. Figures are for steady state: the provider has been paid before, so its
earnings slot and its voucher book-keeping are already non-zero, as they are for a working node.

    .venv/bin/python scripts/bench_gas.py            a table
    .venv/bin/python scripts/bench_gas.py --json     one JSON object:
        {"lifecycle_gas": N, "voucher_gas_per_job": {"1": N, ...}, "reserve_gas": N,
         "dispute_gas": N, "calls": {name: gas}}
    reserve_gas is the one-time cost a client pays to reserve money for a provider it has not
    paid before (its first `reserve` for that provider, out of an existing deposit).
    dispute_gas is one dispute decided by a full jury: open + draw + commit x5 + reveal x5 + resolve,
    drawn out of `--jurors` staked providers.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import secrets
from dataclasses import dataclass, field

from eth_account import Account
from eth_account.signers.local import LocalAccount

from node.chain.artifacts import load_artifact
from node.chain.client import ChainClient
from node.chain.deploy import Deployment, deploy_contracts
from node.chain.eip712 import sign_receipt, sign_voucher
from node.chain.market import JobRequested, JobTerms, job_requested_from_log
from node.chain.registry import events_in
from node.config import ChainSettings
from node.domain import disputes
from node.logging import configure_logging
from node.types import Address, Hash32, ResultReceipt, Voucher

MIN_STAKE = 10**18
COOLDOWN_S = 7_200
WINDOW_S = 600
DELAY_S = 1_800
PRICE = 10**15
JOBS_PER_REDEMPTION = (1, 10, 100, 1000)
MODEL_ID = Hash32(hashlib.sha256(b"model").digest())
PROFILE_HASH = Hash32(hashlib.sha256(b"profile").digest())
INLINE = 64  # bytes of input and output in the "inline" lifecycle


def sha(data: bytes) -> Hash32:
    return Hash32(hashlib.sha256(data).digest())


@dataclass
class Figures:
    calls: dict[str, int] = field(default_factory=dict)
    lifecycles: dict[str, int] = field(default_factory=dict)
    voucher_gas_per_job: dict[str, int] = field(default_factory=dict)
    reserve_gas: int = 0
    dispute_gas: int = 0

    def record(self, name: str, gas: int) -> int:
        self.calls[name] = gas
        return gas


@dataclass(frozen=True)
class Bench:
    client: ChainClient
    deployment: Deployment
    provider: LocalAccount
    requester: LocalAccount
    relayer: LocalAccount
    payer: LocalAccount
    figures: Figures

    async def now(self) -> int:
        return int((await self.client.w3.eth.get_block("latest"))["timestamp"])

    async def request(self, *, inline: bool, name: str | None = None) -> JobRequested:
        market = self.deployment.market
        deadline = await self.now() + 3_600
        data = b"i" * INLINE
        job = await market.request_job(
            MODEL_ID,
            price=PRICE,
            deadline=deadline,
            input=data if inline else b"",
            input_hash=None if inline else sha(data),
            sender=self.requester,
        )
        if name:
            self.figures.record(name, job.tx.gas_used)
        return job

    def signed(self, terms: JobTerms, output: bytes, signer: LocalAccount) -> tuple[ResultReceipt, bytes]:
        receipt = ResultReceipt(
            job_id=terms.job_id,
            model_id=terms.model_id,
            input_hash=terms.input_hash,
            output_hash=sha(output),
            profile_hash=PROFILE_HASH,
            provider=Address(signer.address),
        )
        return receipt, sign_receipt(bytes(signer.key), self.deployment.market.domain(), receipt)

    async def lifecycle(self, *, inline: bool, label: str | None) -> int:
        """request -> claim -> submit -> finalize; returns the four receipts' total gas."""
        market = self.deployment.market
        suffix = " (inline)" if inline else ""
        name = (lambda call: f"{call}{suffix}") if label else (lambda call: None)
        job = await self.request(inline=inline, name=name("request_job"))
        claim = await market.claim_job(job.job_id, sender=self.provider)
        output = b"o" * INLINE
        receipt, signature = self.signed(job.terms, output, self.provider)
        result = await market.submit_result(
            job.terms, receipt, signature, output=output if inline else b"", sender=self.relayer
        )
        await self.client.increase_time(WINDOW_S)
        finalized = await market.finalize(job.job_id, sender=self.provider)
        total = job.tx.gas_used + claim.tx.gas_used + result.tx.gas_used + finalized.tx.gas_used
        if label:
            if not inline:
                self.figures.record("claim_job", claim.tx.gas_used)
                self.figures.record("finalize", finalized.tx.gas_used)
            self.figures.record(f"submit_result{suffix}", result.tx.gas_used)
            self.figures.lifecycles[label] = total
        return total


async def record_deployment(bench: Bench) -> None:
    """Gas of deploy_contracts' five transactions, read from the last five (automined) blocks."""
    latest = await bench.client.block_number()
    names = ("deploy ProviderRegistry", "deploy JobMarket", "set_market", "deploy DisputeCourt", "set_court")
    for name, number in zip(names, range(latest - 4, latest + 1), strict=True):
        block = await bench.client.w3.eth.get_block(number)
        (tx_hash,) = block["transactions"]
        receipt = await bench.client.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        bench.figures.record(name, int(receipt["gasUsed"]))


async def bench_registry(bench: Bench, spare: LocalAccount) -> None:
    registry = bench.deployment.registry
    peer_id = bytes.fromhex("0025") + bytes(35)
    registered = await registry.register(peer_id, sha(b"meta"), stake=MIN_STAKE, sender=bench.provider)
    bench.figures.record("register", registered.tx.gas_used)
    await registry.register(peer_id, sha(b"meta"), stake=MIN_STAKE, sender=spare)
    bench.figures.record("add_stake", (await registry.add_stake(10**9, sender=spare)).tx.gas_used)
    bench.figures.record(
        "update_metadata", (await registry.update_metadata(sha(b"v2"), sender=spare)).tx.gas_used
    )
    bench.figures.record("request_unstake", (await registry.request_unstake(sender=spare)).tx.gas_used)
    await bench.client.increase_time(COOLDOWN_S)
    bench.figures.record("withdraw_stake", (await registry.withdraw_stake(sender=spare)).tx.gas_used)


async def bench_jobs(bench: Bench) -> None:
    market = bench.deployment.market
    # Warm-up: the provider's earnings slot becomes non-zero, as it is for any working provider.
    await bench.lifecycle(inline=False, label=None)
    await bench.lifecycle(inline=False, label="input and output by hash")
    await bench.lifecycle(inline=True, label=f"{INLINE}-byte input and output inline")
    await bench_callback(bench)
    job = await bench.request(inline=False)
    await bench.client.increase_time(3_601)
    bench.figures.record("refund", (await market.refund(job.terms, sender=bench.relayer)).tx.gas_used)
    bench.figures.record(
        "withdraw_earnings", (await market.withdraw_earnings(sender=bench.provider)).tx.gas_used
    )


async def bench_callback(bench: Bench) -> None:
    """submit_result delivering to the example consumer, which stores the output."""
    client, market = bench.client, bench.deployment.market
    artifact = load_artifact("ExampleConsumer")
    consumer = client.contract(
        artifact, await client.deploy(artifact, market.address, MODEL_ID, sender=bench.requester)
    )
    deadline = await bench.now() + 3_600
    asked = await client.transact(
        consumer.functions.ask(b"i" * INLINE, deadline), sender=bench.requester, value=PRICE
    )
    job = job_requested_from_log(events_in(market.contract.events.JobRequested(), asked)[0])
    await market.claim_job(job.job_id, sender=bench.provider)
    receipt, signature = bench.signed(job.terms, b"o" * INLINE, bench.provider)
    result = await market.submit_result(
        job.terms, receipt, signature, output=b"o" * INLINE, sender=bench.relayer
    )
    if result.callback_failed:
        raise SystemExit("the ExampleConsumer callback failed")
    bench.figures.record("submit_result (callback to ExampleConsumer)", result.tx.gas_used)


async def bench_vouchers(bench: Bench, clients: list[LocalAccount]) -> None:
    market = bench.deployment.market
    domain = market.domain()
    provider = Address(bench.provider.address)
    bench.figures.record("deposit", (await market.deposit(2 * 10**18, sender=bench.payer)).tx.gas_used)
    reserved = await market.reserve(provider, 15 * 10**17, sender=bench.payer)
    bench.figures.reserve_gas = bench.figures.record("reserve (first for a provider)", reserved.tx.gas_used)
    topped = await market.reserve(provider, 10**17, sender=bench.payer)
    bench.figures.record("reserve (top-up)", topped.tx.gas_used)

    def voucher(payer: LocalAccount, cumulative: int) -> tuple[Voucher, bytes]:
        v = Voucher(client=Address(payer.address), provider=provider, cumulative_amount=cumulative)
        return v, sign_voucher(bytes(payer.key), domain, v)

    # Warm-up redemption: afterwards what the provider was paid by this client is non-zero.
    owed = PRICE
    await market.redeem_vouchers([voucher(bench.payer, owed)], sender=bench.provider)
    for jobs in JOBS_PER_REDEMPTION:
        # One cumulative voucher per job; only the latest is redeemed.
        signed = []
        for _ in range(jobs):
            owed += PRICE
            signed.append(voucher(bench.payer, owed))
        latest = signed[-1]
        redemption = await market.redeem_vouchers([latest], sender=bench.provider)
        if redemption.total != jobs * PRICE:
            raise SystemExit(f"redemption paid {redemption.total}, expected {jobs * PRICE}")
        bench.figures.voucher_gas_per_job[str(jobs)] = round(redemption.tx.gas_used / jobs)
        if jobs == 1:
            bench.figures.record("redeem_vouchers (1 voucher)", redemption.tx.gas_used)

    for payer in clients:
        await market.reserve(provider, 10**17, deposit=10**17, sender=payer)
    batch = [voucher(payer, PRICE) for payer in clients]
    redemption = await market.redeem_vouchers(batch, sender=bench.provider)
    bench.figures.record(
        f"redeem_vouchers ({len(batch)} clients, first redemption each)", redemption.tx.gas_used
    )

    releasing = await market.request_release(provider, 10**16, sender=bench.payer)
    bench.figures.record("request_release", releasing.tx.gas_used)
    await bench.client.increase_time(DELAY_S)
    bench.figures.record("release", (await market.release(provider, sender=bench.payer)).tx.gas_used)
    withdrawal = await market.request_withdrawal(10**16, sender=bench.payer)
    bench.figures.record("request_withdrawal", withdrawal.tx.gas_used)
    await bench.client.increase_time(DELAY_S)
    bench.figures.record("withdraw", (await market.withdraw(sender=bench.payer)).tx.gas_used)


async def bench_equivocation(bench: Bench) -> None:
    market = bench.deployment.market
    job = await bench.request(inline=False)
    await market.claim_job(job.job_id, sender=bench.provider)
    receipt_a, sig_a = bench.signed(job.terms, b"one answer", bench.provider)
    receipt_b, sig_b = bench.signed(job.terms, b"another answer", bench.provider)
    await market.submit_result(job.terms, receipt_a, sig_a, sender=bench.relayer)
    proven = await market.prove_equivocation(receipt_a, sig_a, receipt_b, sig_b, sender=bench.relayer)
    bench.figures.record("prove_equivocation", proven.tx.gas_used)


async def bench_dispute(bench: Bench, pool_size: int) -> None:
    """One dispute on an escrowed job, decided by a full jury that finds the provider wrong."""
    client, market, court = bench.client, bench.deployment.market, bench.deployment.court
    pool = [Account.create() for _ in range(pool_size)]
    for juror in pool:
        await client.transfer(juror.address, 2 * MIN_STAKE, sender=bench.requester)
        await bench.deployment.registry.register(
            bytes.fromhex("0025") + bytes(35), sha(b"meta"), stake=MIN_STAKE, sender=juror
        )
    by_address = {juror.address: juror for juror in pool}
    job = await bench.request(inline=False)
    await market.claim_job(job.job_id, sender=bench.provider)
    receipt, signature = bench.signed(job.terms, b"a wrong answer", bench.provider)
    await market.submit_result(job.terms, receipt, signature, sender=bench.relayer)
    opened = await court.open_dispute(
        receipt, signature, evidence_peer=bytes(38), bond=await court.bond(), sender=bench.requester
    )
    steps = [bench.figures.record("open_dispute", opened.tx.gas_used)]
    await client.mine(disputes.DRAW_DELAY_BLOCKS + 1)
    drawn = await court.draw_jury(opened.dispute_id, sender=bench.relayer)
    steps.append(bench.figures.record(f"draw_jury ({len(drawn.jurors)} of {pool_size})", drawn.tx.gas_used))
    vote = disputes.Vote(acceptable=False, output_hash=sha(b"the right answer"))
    salts = {juror: Hash32(secrets.token_bytes(32)) for juror in drawn.jurors}
    for juror in drawn.jurors:
        commitment = disputes.commitment(opened.dispute_id, juror, vote, salts[juror])
        committed = await court.commit_vote(opened.dispute_id, commitment, sender=by_address[juror])
        steps.append(bench.figures.record("commit_vote", committed.gas_used))
    for juror in drawn.jurors:
        revealed = await court.reveal_vote(opened.dispute_id, vote, salts[juror], sender=by_address[juror])
        steps.append(bench.figures.record("reveal_vote", revealed.gas_used))
    resolved = await court.resolve(opened.dispute_id, sender=bench.relayer)
    steps.append(bench.figures.record("resolve (provider wrong)", resolved.tx.gas_used))
    bench.figures.dispute_gas = sum(steps)
    # The provider lost its stake; it stakes again for the calls measured after this one.
    await bench.deployment.registry.add_stake(MIN_STAKE, sender=bench.provider)


async def run(rpc_url: str, jurors: int) -> Figures:
    client = await ChainClient.connect(ChainSettings(rpc_url=rpc_url))
    try:
        accounts = client.dev_accounts()
        deployer, provider, requester, relayer, payer, spare = accounts[:6]
        deployment = await deploy_contracts(
            client,
            deployer,
            min_stake=MIN_STAKE,
            unstake_cooldown_s=COOLDOWN_S,
            challenge_window_s=WINDOW_S,
            withdrawal_delay_s=DELAY_S,
        )
        bench = Bench(client, deployment, provider, requester, relayer, payer, Figures())
        await record_deployment(bench)
        await bench_registry(bench, spare)
        await bench_jobs(bench)
        await bench_vouchers(bench, accounts[6:10])
        # Before the equivocation proof, which takes the provider's whole stake.
        await bench_dispute(bench, jurors)
        await bench_equivocation(bench)
        return bench.figures
    finally:
        await client.close()


def print_table(figures: Figures) -> None:
    width = max(len(name) for name in figures.calls) + 2
    print(f"{'call':<{width}}{'gas':>10}")
    for name, gas in figures.calls.items():
        print(f"{name:<{width}}{gas:>10,}")
    print()
    print("on-chain job lifecycle, request + claim + submit + finalize (target <= 150,000):")
    for label, gas in figures.lifecycles.items():
        print(f"  {label:<40}{gas:>10,}")
    print()
    print("vouchers, amortized gas per paid job (target <= 100 at 1000 jobs per redemption):")
    for jobs, gas in figures.voucher_gas_per_job.items():
        print(f"  {jobs:>5} jobs per redemption{gas:>15,}")
    print(f"  one-time reserve for a new provider{figures.reserve_gas:>12,}")
    print()
    print(f"one dispute, open + draw + commit x5 + reveal x5 + resolve{figures.dispute_gas:>12,}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--rpc-url", default="embedded", help='"embedded" (default) or a dev chain URL')
    parser.add_argument("--jurors", type=int, default=16, help="staked providers the jury is drawn from")
    args = parser.parse_args()
    configure_logging("WARNING")  # records go to stderr; stdout carries only the figures
    figures = asyncio.run(run(args.rpc_url, args.jurors))
    if args.json:
        lifecycle = figures.lifecycles["input and output by hash"]
        print(
            json.dumps(
                {
                    "lifecycle_gas": lifecycle,
                    "voucher_gas_per_job": figures.voucher_gas_per_job,
                    "reserve_gas": figures.reserve_gas,
                    "dispute_gas": figures.dispute_gas,
                    "calls": figures.calls,
                }
            )
        )
    else:
        print_table(figures)


if __name__ == "__main__":
    main()
