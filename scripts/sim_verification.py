"""Verification in a simulated market: does cheating lose, and what do the spot checks cost?

Providers run jobs for clients; some cheat on a share of their jobs (random outputs at rates
0.1%, 1% and 10%), some are lazy (every output zeros, or the output cached from another job), and
the honest ones run on several kinds of device, so their outputs differ within the model's
tolerance. The decisions are the node's own code: each client's scheduler (`CandidateIndex`,
`place`) picks the provider of a job and of its re-runs, the spot-check sampler
(`node.scheduler.spot`) draws which results to check, `compare_runs` compares outputs (real
safetensors tensors under the model's tolerance), `decide` names the loser of a third run, and a
dispute is settled by the dispute rules (`node.domain.disputes`: a stake-weighted jury of five
that re-runs the job and votes with `juror_accepts`, then `settle`). Only execution and the chain
are simulated.

Printed:
- `spot_check_share`: the `[client]` setting simulated;
- `extra_compute`: re-runs (checks, third runs, jurors' runs) per job, over the whole market;
- `jobs_to_detect_99pct`: per cheat rate, the jobs a cheater serves before a spot check has
  caught it with probability 0.99, from the sampler's own shares, in the worst case for the
  checkers (one client gets all its jobs, so the newcomer boost is spent once);
- `cheater_profit_wei`: per cheat rate, a cheater's expected gain over its first `--horizon`
  jobs: the compute it saves (a job's whole price, an upper bound) less the stake the dispute
  rules slash once it is caught; the chances come from the sampler and the market's share of
  correct answers;
- `honest_slashed`: honest providers slashed in the market run (within-tolerance ones included);
- `market`: what the market run itself saw (cheaters caught per rate, honest providers excluded
  by some client, disputes and their verdicts).

    .venv/bin/python scripts/sim_verification.py [--providers 200] [--clients 4] [--jobs 200000]
        [--share 0.09] [--seed 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from safetensors.numpy import save

from node.config import ClientSettings, ProviderSettings
from node.domain import disputes
from node.domain.records import ProviderReputation
from node.executor.compare import RunResult, compare_outputs, compare_runs
from node.executor.manifest import Tolerance
from node.scheduler import (
    CandidateIndex,
    DeviceOffer,
    JobRequirements,
    ModelOffer,
    Option,
    ProviderCandidate,
    ProviderStats,
    place,
)
from node.scheduler.spot import (
    Verdict,
    check_lost,
    check_passed,
    check_share,
    decide,
    fraud_reported,
    job_seen,
    should_check,
)
from node.types import Address, Hash32, ResultReceipt, sha256

MODEL = Hash32(b"\x42" * 32)
TOLERANCE = Tolerance(compare="tensors")
RATES = (0.001, 0.01, 0.1)
PRICE_WEI = ProviderSettings().price_per_job_wei
STAKE_WEI = ProviderSettings().stake_wei
# The registry's minimum stake as the devnet deploys it; a dispute slashes that much.
MIN_STAKE_WEI = 10**18
# The dispute bond as DisputeCourt's deployment sets it by default: a tenth of the minimum stake.
BOND_WEI = MIN_STAKE_WEI // 10
DEVICES = 4  # honest providers' execution profiles; outputs differ within tolerance across them
OUTPUT_SIZE = 16
HORIZON_JOBS = 100_000


@dataclass
class Provider:
    address: Address
    kind: str  # honest, cheat, zeros, cached
    rate: float  # share of its jobs it falsifies (1 for the lazy)
    device: int
    stake: int = STAKE_WEI
    jobs: int = 0
    falsified: int = 0
    caught_at: int | None = None  # its jobs served when some client first excluded it
    slashed: int = 0
    last_output: bytes | None = None

    @property
    def profile(self) -> Hash32:
        return sha256(f"{self.kind}-{self.device}".encode())


@dataclass
class Client:
    rng: random.Random
    reputation: dict[Address, ProviderReputation] = field(default_factory=dict)
    excluded: set[Address] = field(default_factory=set)
    options: list[Option] = field(default_factory=list)


@dataclass
class Market:
    providers: dict[Address, Provider]
    clients: list[Client]
    index: CandidateIndex
    share: float
    rng: random.Random
    jobs: int = 0
    reruns: int = 0  # every run beyond a job's first: checks, third runs, jurors
    check_runs: int = 0  # second and third runs, each compared with the others
    disputes: Counter[str] = field(default_factory=Counter)
    honest_excluded: int = 0
    inactive: set[Address] = field(default_factory=set)

    # the scheduler -----------------------------------------------------------------------------

    def refresh(self, client: Client) -> None:
        """A client's options after it excluded a provider or the registry dropped one."""
        requirements = JobRequirements(model_id=MODEL, max_price_wei=PRICE_WEI)
        left_out = frozenset(client.excluded | self.inactive)
        eligible = self.index.ranked(requirements, now=0.0, tried=left_out)
        client.options = [Option(c, c.models[0], 1000.0, False, 1.0) for c in eligible]

    def choose(self, client: Client, tried: set[Address]) -> Provider | None:
        options = [o for o in client.options if o.candidate.address not in tried] if tried else client.options
        if not options:
            return None
        return self.providers[place(options, client.rng).option.candidate.address]

    # execution (simulated) ---------------------------------------------------------------------

    def run(self, provider: Provider, seed: int) -> RunResult:
        provider.jobs += 1
        truth = _truth(seed)
        lies = provider.kind in ("zeros", "cached") or self.rng.random() < provider.rate
        if not lies:
            # Another device rounds differently: a relative error of a few float32 ulps.
            noise = np.random.default_rng(seed * DEVICES + provider.device).standard_normal(truth.shape)
            output = _tensor(truth * (1 + 3e-7 * noise * (provider.device > 0)))
        elif provider.kind == "zeros":
            output = _tensor(np.zeros_like(truth))
        elif provider.kind == "cached":
            output = provider.last_output or _tensor(np.zeros_like(truth))
        else:
            output = _tensor(np.random.default_rng(self.rng.getrandbits(64)).standard_normal(OUTPUT_SIZE))
        provider.falsified += lies
        provider.last_output = output
        return _result(provider, seed, output)

    # one job ----------------------------------------------------------------------------------

    def job(self, seed: int) -> None:
        client = self.clients[seed % len(self.clients)]
        first = self.choose(client, set())
        if first is None:
            return
        self.jobs += 1
        result = self.run(first, seed)
        reputation = job_seen(client.reputation.get(first.address) or ProviderReputation(first.address))
        client.reputation[first.address] = reputation
        if should_check(client.rng.random(), self.share, reputation):
            self.check(client, seed, first, result)

    def check(self, client: Client, seed: int, first: Provider, result: RunResult) -> None:
        second = self.choose(client, {first.address})
        if second is None:
            return
        self.reruns += 1
        self.check_runs += 1
        checked = self.run(second, seed)
        if compare_runs(result, checked, TOLERANCE).agree:
            client.reputation[first.address] = check_passed(client.reputation[first.address])
            return
        third = self.choose(client, {first.address, second.address})
        if third is None:
            return
        self.reruns += 1
        self.check_runs += 1
        deciding = self.run(third, seed)
        verdict = decide(
            False,
            compare_runs(result, deciding, TOLERANCE).agree,
            compare_runs(checked, deciding, TOLERANCE).agree,
        )
        if verdict is Verdict.FIRST_WRONG:
            self.convict(client, seed, first, result)
        elif verdict is Verdict.SECOND_WRONG:
            self.convict(client, seed, second, checked)

    def convict(self, client: Client, seed: int, loser: Provider, lost: RunResult) -> None:
        """Excluded by the client, re-checked more by the others (its fraud record), disputed."""
        known = client.reputation.get(loser.address) or ProviderReputation(loser.address)
        client.reputation[loser.address] = check_lost(known, "lost a spot check")
        client.excluded.add(loser.address)
        self.refresh(client)
        if loser.caught_at is None:
            loser.caught_at = loser.jobs
        if loser.kind == "honest":
            self.honest_excluded += 1
        for other in self.clients:
            if other is not client:
                seen = other.reputation.get(loser.address) or ProviderReputation(loser.address)
                other.reputation[loser.address] = fraud_reported(seen)
        self.dispute(seed, loser, lost)

    # the chain (simulated) with the dispute rules ----------------------------------------------

    def dispute(self, seed: int, accused: Provider, lost: RunResult) -> None:
        pool = [p for p in self.providers.values() if p is not accused and p.address not in self.inactive]
        jurors = _draw(pool, disputes.JURY_SIZE, self.rng)
        votes = []
        for juror in jurors:
            self.reruns += 1
            own = self.run(juror, seed)
            same_profile = own.receipt.profile_hash == lost.receipt.profile_hash
            within = compare_outputs(own.output, lost.output, TOLERANCE).agree
            accepts = disputes.juror_accepts(
                own.receipt.output_hash,
                lost.receipt.output_hash,
                same_profile=same_profile,
                within_tolerance=within,
            )
            votes.append(disputes.Vote(accepts, own.receipt.output_hash))
        settled = disputes.settle(
            votes,
            bond=BOND_WEI,
            provider_stake=accused.stake,
            slash_amount=MIN_STAKE_WEI,
            juror_stakes=[j.stake for j in jurors],
        )
        self.disputes[settled.verdict.name.lower()] += 1
        accused.stake -= settled.provider_slashed
        accused.slashed += settled.provider_slashed
        if accused.stake < MIN_STAKE_WEI:
            # Below the minimum stake the registry no longer lists it: no client can choose it.
            self.inactive.add(accused.address)
            for client in self.clients:
                self.refresh(client)


def _tensor(values: np.ndarray) -> bytes:
    return bytes(save({"output": values.astype(np.float32)}))


def _truth(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(OUTPUT_SIZE)


def _result(provider: Provider, seed: int, output: bytes) -> RunResult:
    receipt = ResultReceipt(
        job_id=Hash32(seed.to_bytes(32, "big")),
        model_id=MODEL,
        input_hash=Hash32(sha256(seed.to_bytes(8, "big"))),
        output_hash=sha256(output),
        profile_hash=provider.profile,
        provider=provider.address,
    )
    return RunResult(receipt, b"", output)


def _draw(pool: list[Provider], count: int, rng: random.Random) -> list[Provider]:
    """Jurors drawn without replacement, weighted by stake (as DisputeCourt draws them)."""
    chosen: list[Provider] = []
    left = list(pool)
    for _ in range(min(count, len(left))):
        pick = rng.choices(left, weights=[p.stake for p in left])[0]
        chosen.append(pick)
        left.remove(pick)
    return chosen


def build_market(providers: int, clients: int, share: float, seed: int) -> Market:
    rng = random.Random(seed)
    per_rate = max(1, providers // 50)
    kinds = [("cheat", rate) for rate in RATES for _ in range(per_rate)]
    kinds += [("zeros", 1.0)] * max(1, providers // 100) + [("cached", 1.0)] * max(1, providers // 100)
    kinds += [("honest", 0.0)] * (providers - len(kinds))
    rng.shuffle(kinds)
    market_providers = {}
    candidates = []
    for i, (kind, rate) in enumerate(kinds):
        address = Address(f"0x{i + 1:040x}")
        market_providers[address] = Provider(address, kind, rate, device=i % DEVICES)
        candidates.append(
            ProviderCandidate(
                address=address,
                peer_id=f"peer-{i}",
                models=(ModelOffer(MODEL, PRICE_WEI, True),),
                devices=(DeviceOffer("cuda", "gpu", 2**34),),
                free_slots=4,
                throughput=10.0,
                stats=ProviderStats(),
            )
        )
    market = Market(
        market_providers,
        [Client(random.Random(rng.getrandbits(64))) for _ in range(clients)],
        CandidateIndex.build(candidates),
        share,
        rng,
    )
    for client in market.clients:
        market.refresh(client)
    return market


# figures from the sampler's own shares ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Odds:
    """What the market run measured, for the figures worked out from the sampler's shares:
    `check_runs`, the share of all runs that are re-runs of a check (each one compared, so a
    cheater is exposed on every one it serves, indistinguishable as they are), and `correct`, the
    share of runs whose output was right."""

    check_runs: float
    correct: float

    def exposure(self, rate: float, share: float, reputation: ProviderReputation) -> float:
        """The chance that a cheater's next job convicts it: falsified, then compared (a check
        run, or a job sampled for a check), and the other two runs right."""
        compared = self.check_runs + (1 - self.check_runs) * check_share(share, reputation)
        return rate * compared * self.correct * self.correct


def caught_by(rate: float, share: float, odds: Odds, jobs: int) -> list[float]:
    """P(caught within n jobs) for n = 1..jobs, in the worst case for the checkers: one client
    gets every job, so its newcomer boost is spent once."""
    reputation = ProviderReputation(Address("0x" + "00" * 20))
    alive = 1.0
    curve = []
    for _ in range(jobs):
        reputation = job_seen(reputation)
        alive *= 1 - odds.exposure(rate, share, reputation)
        curve.append(1 - alive)
    return curve


def jobs_to_detect(rate: float, share: float, odds: Odds) -> int:
    reputation = ProviderReputation(Address("0x" + "00" * 20))
    alive = 1.0
    n = 0
    while reputation.jobs_seen < 1000:
        n += 1
        reputation = job_seen(reputation)
        alive *= 1 - odds.exposure(rate, share, reputation)
        if alive <= 0.01:
            return n
    # The share is flat from here (to within 0.1%): the rest in closed form.
    step = 1 - odds.exposure(rate, share, reputation)
    return n + math.ceil(math.log(0.01 / alive) / math.log(step))


def expected_profit(rate: float, share: float, odds: Odds, horizon: int) -> int:
    """A cheater's expected gain over `horizon` jobs: compute saved (a job's price per falsified
    result) until caught, less the expected stake slashed once caught (an honest jury convicts)."""
    jury = [disputes.Vote(False, Hash32(b"\x00" * 32))] * disputes.JURY_SIZE
    slash = disputes.settle(
        jury,
        bond=BOND_WEI,
        provider_stake=STAKE_WEI,
        slash_amount=MIN_STAKE_WEI,
        juror_stakes=[STAKE_WEI] * 5,
    ).provider_slashed
    curve = caught_by(rate, share, odds, horizon)
    saved = sum((1 - (curve[n - 1] if n else 0.0)) * rate * PRICE_WEI for n in range(horizon))
    return round(saved - curve[-1] * slash)


def simulate(args: argparse.Namespace) -> dict[str, object]:
    market = build_market(args.providers, args.clients, args.share, args.seed)
    started = time.perf_counter()
    for seed in range(args.jobs):
        market.job(seed)
    elapsed = time.perf_counter() - started
    providers = list(market.providers.values())
    runs = sum(p.jobs for p in providers)
    odds = Odds(market.check_runs / runs, 1 - sum(p.falsified for p in providers) / runs)
    caught: dict[str, object] = {}
    for rate in RATES:
        cheaters = [p for p in providers if p.kind == "cheat" and p.rate == rate]
        found = [p.caught_at for p in cheaters if p.caught_at is not None]
        caught[str(rate)] = {
            "cheaters": len(cheaters),
            "caught": len(found),
            "mean_jobs_served": round(sum(p.jobs for p in cheaters) / max(1, len(cheaters))),
            "jobs_when_caught": sorted(found),
        }
    lazy = [p for p in providers if p.kind in ("zeros", "cached")]
    return {
        "spot_check_share": args.share,
        "extra_compute": round(market.reruns / max(1, market.jobs), 4),
        "jobs_to_detect_99pct": {str(r): jobs_to_detect(r, args.share, odds) for r in RATES},
        "cheater_profit_wei": {str(r): expected_profit(r, args.share, odds, args.horizon) for r in RATES},
        "honest_slashed": sum(1 for p in providers if p.kind == "honest" and p.slashed > 0),
        "market": {
            "providers": len(providers),
            "clients": len(market.clients),
            "jobs": market.jobs,
            "check_runs_share": round(odds.check_runs, 4),
            "correct_share": round(odds.correct, 5),
            "cheaters": caught,
            "lazy_caught": f"{sum(p.caught_at is not None for p in lazy)}/{len(lazy)}",
            "lazy_mean_jobs_when_caught": round(
                sum(p.caught_at or 0 for p in lazy) / max(1, sum(p.caught_at is not None for p in lazy)), 1
            ),
            "honest_excluded": market.honest_excluded,
            "disputes": dict(market.disputes),
            "seconds": round(elapsed, 1),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", type=int, default=200)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--share", type=float, default=ClientSettings().spot_check_share)
    parser.add_argument("--horizon", type=int, default=HORIZON_JOBS, help="a cheater's jobs for its profit")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.providers < 20 or args.clients < 1 or args.jobs < 100:
        parser.error("simulate at least 20 providers, 1 client and 100 jobs")
    if not 0 < args.share <= 1:
        parser.error("--share must be in (0, 1]")
    figures = simulate(args)
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
