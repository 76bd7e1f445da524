"""Random sequences of market and registry actions by several clients and providers against a
model: the money always adds up.

After every step: the market's ether equals what it owes (live escrows + unreserved deposits +
reserves + credited earnings, refunds and rewards); what each client paid each provider equals the
model's and never exceeds what the client reserved for that provider; every reserve, deposit and
stake matches the model, and the registry holds exactly the stakes plus what was burned. Whenever a
stake leaves, its owner holds no work: no job it claimed is before its deadline and no result it
submitted is inside its challenge window. Each action's outcome (success or the named revert) must
be one the model allows; timing near a boundary may go either way, since a block's timestamp is
only known once it is mined.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import pytest
from contract_helpers import (
    CHALLENGE_WINDOW_S,
    METADATA_HASH,
    MIN_STAKE,
    MODEL_ID,
    PEER_ID,
    UNSTAKE_COOLDOWN_S,
    WITHDRAWAL_DELAY_S,
    signed_receipt,
    signed_voucher,
)
from eth_account.signers.local import LocalAccount
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from node.chain.client import ChainClient
from node.chain.deploy import Deployment, deploy_contracts
from node.chain.market import GWEI, JobRequested, JobStatus
from node.config import ChainSettings
from node.errors import TransactionReverted
from node.types import Voucher

T = TypeVar("T")
# Blocks mined between reading the clock and the transaction landing move time by a few seconds.
SLACK_S = 30
STAKE = 2 * MIN_STAKE
PROVIDERS = 3
CLIENTS = 3
SLASH_REWARD_BPS = 5_000
STATEFUL = settings(
    max_examples=10,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@dataclass
class ModelJob:
    job: JobRequested
    status: JobStatus
    provider: str | None
    time: int  # the deadline, then (once submitted) the end of the challenge window
    proven: bool = False


@dataclass
class Pending:
    amount: int
    at: int


@dataclass
class Stake:
    amount: int = 0
    registered: bool = False
    unstake_at: int = 0

    @property
    def active(self) -> bool:
        return self.registered and self.unstake_at == 0 and self.amount >= MIN_STAKE


class MarketMachine(RuleBasedStateMachine):
    rpc_url: ClassVar[str] = "embedded"
    make_settings: ClassVar[Callable[..., ChainSettings]]

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.client = self.run(ChainClient.connect(self.make_settings(self.rpc_url)))
        # Rules and their preconditions read the chain's clock: it must not follow the wall clock,
        # or a replayed example could take another path and hypothesis would call the test flaky.
        self.run(self.client.pin_block_times())
        accounts = self.client.dev_accounts()
        self.providers: list[LocalAccount] = accounts[1 : 1 + PROVIDERS]
        self.requesters: list[LocalAccount] = accounts[4:6]
        self.payers: list[LocalAccount] = accounts[6 : 6 + CLIENTS]
        self.relayer: LocalAccount = accounts[9]
        self.deployment: Deployment = self.run(
            deploy_contracts(
                self.client,
                accounts[0],
                min_stake=MIN_STAKE,
                unstake_cooldown_s=UNSTAKE_COOLDOWN_S,
                challenge_window_s=CHALLENGE_WINDOW_S,
                withdrawal_delay_s=WITHDRAWAL_DELAY_S,
            )
        )
        self.stakes: dict[str, Stake] = {p.address: Stake() for p in self.providers}
        self.burned = 0
        # Rewards the market keeps for good (an expired claim's share of slashed stake).
        self.locked = 0
        for provider in range(PROVIDERS):
            self.register(provider)
        self.jobs: dict[bytes, ModelJob] = {}
        self.deposits: dict[str, int] = {p.address: 0 for p in self.payers}
        self.reserves: dict[tuple[str, str], int] = {}
        self.reserved_ever: dict[tuple[str, str], int] = {}
        self.releases: dict[tuple[str, str], Pending] = {}
        self.pending: dict[str, Pending] = {}
        self.paid: dict[tuple[str, str], int] = {}
        self.vouchers: dict[tuple[str, str], list[tuple[Voucher, bytes]]] = {}
        self.withdrawable: dict[str, int] = {}
        # The chain's time as last seen; steers rules toward actions whose time has come.
        self.clock = 0

    def teardown(self) -> None:
        self.run(self.client.pin_block_times(False))
        self.run(self.client.close())
        self.loop.close()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    @property
    def market(self) -> Any:
        return self.deployment.market

    @property
    def registry(self) -> Any:
        return self.deployment.registry

    def latest(self) -> int:
        block = self.run(self.client.w3.eth.get_block("latest"))
        self.clock = max(self.clock, int(block["timestamp"]))
        return int(block["timestamp"])

    def mined_at(self, block_number: int) -> int:
        return int(self.run(self.client.w3.eth.get_block(block_number))["timestamp"])

    def attempt(
        self, coroutine: Coroutine[Any, Any, T], *, may_succeed: bool, may_fail: bool, error: str
    ) -> T | None:
        action = coroutine.__qualname__
        reverted: TransactionReverted | None = None
        try:
            result = self.run(coroutine)
        except TransactionReverted as exc:
            reverted = exc
        if reverted is not None:
            event(f"{action}: {reverted.error_name}")
            assert may_fail, f"{reverted} although the model says it must succeed"
            assert reverted.error_name == error, f"expected {error}, got {reverted}"
            return None
        event(f"{action}: done")
        assert may_succeed, f"succeeded although the model expected {error}"
        return result

    def jobs_in(self, *statuses: JobStatus, due: bool = False) -> list[bytes]:
        """Jobs in one of `statuses`; with `due`, only those whose time (as last seen) has passed."""
        return sorted(
            job_id
            for job_id, job in self.jobs.items()
            if job.status in statuses and (not due or job.time < self.clock)
        )

    def credit(self, account: str, amount: int) -> None:
        self.withdrawable[account] = self.withdrawable.get(account, 0) + amount

    def slash(self, provider: str, amount: int) -> tuple[int, int]:
        stake = self.stakes[provider]
        if not stake.registered:
            return 0, 0
        slashed = min(amount, stake.amount)
        reward = slashed * SLASH_REWARD_BPS // 10_000
        stake.amount -= slashed
        self.burned += slashed - reward
        return slashed, reward

    @initialize()
    def open_market(self) -> None:
        """Start where the interesting rules apply: two jobs requested, every client funded."""
        for requester in (0, 1):
            self.request_job(requester, 10**6, 3_600)
        for payer in range(CLIENTS):
            self.deposit(payer, 10**7)
            self.reserve(payer, payer % PROVIDERS, 2)

    # Providers -------------------------------------------------------------------------------------

    def register(self, provider: int) -> None:
        account = self.providers[provider]
        self.run(self.registry.register(PEER_ID, METADATA_HASH, stake=STAKE, sender=account))
        self.stakes[account.address] = Stake(amount=STAKE, registered=True)

    @precondition(lambda self: any(not s.registered for s in self.stakes.values()))
    @rule(provider=st.integers(0, PROVIDERS - 1))
    def register_again(self, provider: int) -> None:
        if not self.stakes[self.providers[provider].address].registered:
            self.register(provider)

    # One provider leaves at a time, so the others keep claiming.
    @precondition(lambda self: not any(s.unstake_at for s in self.stakes.values()))
    @rule(provider=st.integers(0, PROVIDERS - 1))
    def request_unstake(self, provider: int) -> None:
        account = self.providers[provider]
        stake = self.stakes[account.address]
        error = "NotRegistered" if not stake.registered else "AlreadyUnstaking"
        requested = self.attempt(
            self.registry.request_unstake(sender=account),
            may_succeed=stake.registered and stake.unstake_at == 0,
            may_fail=not stake.registered or stake.unstake_at != 0,
            error=error,
        )
        if requested is not None:
            stake.unstake_at = requested.unstake_at

    @precondition(lambda self: any(0 < s.unstake_at < self.clock + SLACK_S for s in self.stakes.values()))
    @rule(data=st.data())
    def withdraw_stake(self, data: st.DataObject) -> None:
        leaving = [i for i, p in enumerate(self.providers) if self.stakes[p.address].unstake_at]
        account = self.providers[data.draw(st.sampled_from(leaving))]
        stake, now = self.stakes[account.address], self.latest()
        withdrawn = self.attempt(
            self.registry.withdraw_stake(sender=account),
            may_succeed=now + SLACK_S >= stake.unstake_at,
            may_fail=now < stake.unstake_at,
            error="CooldownNotOver",
        )
        if withdrawn is None:
            return
        assert withdrawn.amount == stake.amount
        at = self.mined_at(withdrawn.tx.block_number)
        for job in self.jobs.values():
            if job.provider != account.address:
                continue
            # No stake leaves while its owner holds work that could still be slashed.
            assert not (job.status is JobStatus.CLAIMED and job.time >= at), "left with a live claim"
            assert not (job.status is JobStatus.SUBMITTED and job.time > at), "left inside a challenge window"
        self.stakes[account.address] = Stake()

    # On-chain jobs ---------------------------------------------------------------------------------

    @rule(
        requester=st.integers(0, 1),
        price_gwei=st.integers(1, 10**7),
        deadline_in_s=st.sampled_from([120, 3_600]),
    )
    def request_job(self, requester: int, price_gwei: int, deadline_in_s: int) -> None:
        deadline = self.latest() + deadline_in_s
        job = self.run(
            self.market.request_job(
                MODEL_ID,
                price=price_gwei * GWEI,
                deadline=deadline,
                input=b"input %d" % len(self.jobs),
                sender=self.requesters[requester],
            )
        )
        self.jobs[job.job_id] = ModelJob(job, JobStatus.REQUESTED, None, deadline)

    @precondition(lambda self: self.jobs_in(JobStatus.REQUESTED))
    @rule(data=st.data(), anyone=st.booleans())
    def claim_job(self, data: st.DataObject, anyone: bool) -> None:
        # Mostly a live job and an active provider, so work flows; sometimes anyone, anything.
        live = [j for j in self.jobs_in(JobStatus.REQUESTED) if self.jobs[j].time > self.clock + SLACK_S]
        job_id = data.draw(
            st.sampled_from(live if live and not anyone else self.jobs_in(JobStatus.REQUESTED))
        )
        job, now = self.jobs[job_id], self.latest()
        active = [i for i, p in enumerate(self.providers) if self.stakes[p.address].active]
        provider = data.draw(st.sampled_from(active if active and not anyone else range(PROVIDERS)))
        claimer = self.providers[provider]
        active = self.stakes[claimer.address].active
        late = now + SLACK_S >= job.time
        claim = self.attempt(
            self.market.claim_job(job_id, sender=claimer),
            may_succeed=now < job.time and active,
            may_fail=late or not active,
            error="DeadlinePassed" if late and (active or now >= job.time) else "ProviderNotActive",
        )
        if claim is not None:
            job.status, job.provider = JobStatus.CLAIMED, claimer.address

    @precondition(lambda self: self.jobs_in(JobStatus.REQUESTED))
    @rule(data=st.data(), by_requester=st.booleans())
    def cancel_job(self, data: st.DataObject, by_requester: bool) -> None:
        job_id = data.draw(st.sampled_from(self.jobs_in(JobStatus.REQUESTED)))
        job = self.jobs[job_id]
        requester = next(a for a in self.requesters if a.address == job.job.terms.requester)
        cancelled = self.attempt(
            self.market.cancel_job(job.job.terms, sender=requester if by_requester else self.relayer),
            may_succeed=by_requester,
            may_fail=not by_requester,
            error="NotRequester",
        )
        if cancelled is not None:
            assert cancelled.price == job.job.price
            self.credit(requester.address, job.job.price)
            del self.jobs[job_id]

    @precondition(lambda self: self.jobs_in(JobStatus.CLAIMED))
    @rule(data=st.data(), with_output=st.booleans())
    def submit_result(self, data: st.DataObject, with_output: bool) -> None:
        job_id = data.draw(st.sampled_from(self.jobs_in(JobStatus.CLAIMED)))
        job, now = self.jobs[job_id], self.latest()
        signer = next(p for p in self.providers if p.address == job.provider)
        output = b"output of " + job_id
        receipt, signature = signed_receipt(self.market.domain(), job.job.terms, signer, output)
        result = self.attempt(
            self.market.submit_result(
                job.job.terms, receipt, signature, output=output if with_output else b"", sender=self.relayer
            ),
            may_succeed=now < job.time,
            may_fail=now + SLACK_S >= job.time,
            error="DeadlinePassed",
        )
        if result is not None:
            job.status, job.time = (
                JobStatus.SUBMITTED,
                self.mined_at(result.tx.block_number) + CHALLENGE_WINDOW_S,
            )

    @precondition(
        lambda self: [
            j for j in self.jobs_in(JobStatus.CLAIMED, JobStatus.SUBMITTED) if not self.jobs[j].proven
        ]
    )
    @rule(data=st.data())
    def prove_equivocation(self, data: st.DataObject) -> None:
        candidates = [
            j for j in self.jobs_in(JobStatus.CLAIMED, JobStatus.SUBMITTED) if not self.jobs[j].proven
        ]
        job_id = data.draw(st.sampled_from(candidates))
        job = self.jobs[job_id]
        assert job.provider is not None
        signer = next(p for p in self.providers if p.address == job.provider)
        domain, terms = self.market.domain(), job.job.terms
        receipt_a, sig_a = signed_receipt(domain, terms, signer, b"one output " + job_id)
        receipt_b, sig_b = signed_receipt(domain, terms, signer, b"another output " + job_id)
        proven = self.run(
            self.market.prove_equivocation(receipt_a, sig_a, receipt_b, sig_b, sender=self.relayer)
        )
        slashed, reward = self.slash(job.provider, 2**256 - 1)
        assert proven.slashed == slashed
        assert proven.disputed, "a proof always disputes the job its signer holds"
        self.credit(self.relayer.address, reward)
        job.status, job.proven, job.time = JobStatus.DISPUTED, True, 0

    @precondition(lambda self: self.jobs_in(JobStatus.SUBMITTED, due=True))
    @rule(data=st.data())
    def finalize(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(self.jobs_in(JobStatus.SUBMITTED, due=True)))
        job, now = self.jobs[job_id], self.latest()
        finalized = self.attempt(
            self.market.finalize(job_id, sender=self.relayer),
            may_succeed=now + SLACK_S >= job.time,
            may_fail=now < job.time,
            error="ChallengeWindowOpen",
        )
        if finalized is not None:
            assert finalized.price == job.job.price
            assert job.provider is not None
            self.credit(job.provider, job.job.price)
            del self.jobs[job_id]

    @precondition(
        lambda self: (
            self.jobs_in(JobStatus.REQUESTED, JobStatus.CLAIMED, due=True) or self.jobs_in(JobStatus.DISPUTED)
        )
    )
    @rule(data=st.data())
    def refund(self, data: st.DataObject) -> None:
        choices = self.jobs_in(JobStatus.REQUESTED, JobStatus.CLAIMED, due=True) + self.jobs_in(
            JobStatus.DISPUTED
        )
        job_id = data.draw(st.sampled_from(choices))
        job, now = self.jobs[job_id], self.latest()
        disputed = job.status is JobStatus.DISPUTED
        refunded = self.attempt(
            self.market.refund(job.job.terms, sender=self.relayer),
            may_succeed=disputed or now + SLACK_S > job.time,
            may_fail=not disputed and now <= job.time,
            error="DeadlineNotPassed",
        )
        if refunded is None:
            return
        requester = job.job.terms.requester
        self.credit(requester, job.job.price)
        if job.status is JobStatus.CLAIMED:
            # The claim ran out of time: its claimer pays with stake, none of it to the requester.
            assert job.provider is not None
            _, reward = self.slash(job.provider, job.job.price)
            self.locked += reward
        del self.jobs[job_id]

    @precondition(lambda self: any(self.withdrawable.values()))
    @rule(data=st.data())
    def withdraw_earnings(self, data: st.DataObject) -> None:
        owed_to = sorted(a for a, v in self.withdrawable.items() if v)
        address = data.draw(st.sampled_from(owed_to))
        account = next(a for a in [*self.providers, *self.requesters, self.relayer] if a.address == address)
        withdrawn = self.run(self.market.withdraw_earnings(sender=account))
        assert withdrawn.amount == self.withdrawable[address]
        self.withdrawable[address] = 0

    @rule(seconds=st.sampled_from([60, CHALLENGE_WINDOW_S, WITHDRAWAL_DELAY_S, 4_000, UNSTAKE_COOLDOWN_S]))
    def advance_time(self, seconds: int) -> None:
        self.run(self.client.increase_time(seconds))
        self.run(self.client.mine(1))
        self.latest()

    # Vouchers --------------------------------------------------------------------------------------

    @rule(payer=st.integers(0, CLIENTS - 1), amount_gwei=st.integers(1, 10**7))
    def deposit(self, payer: int, amount_gwei: int) -> None:
        account = self.payers[payer]
        deposited = self.run(self.market.deposit(amount_gwei * GWEI, sender=account))
        self.deposits[account.address] += amount_gwei * GWEI
        assert deposited.balance == self.deposits[account.address]

    @rule(
        payer=st.integers(0, CLIENTS - 1),
        provider=st.integers(0, PROVIDERS - 1),
        share=st.sampled_from([1, 2, 4]),
    )
    def reserve(self, payer: int, provider: int, share: int) -> None:
        account, payee = self.payers[payer], self.providers[provider].address
        amount = self.deposits[account.address] // share
        if amount == 0:
            return
        reserved = self.run(self.market.reserve(payee, amount, sender=account))
        key = (account.address, payee)
        self.deposits[account.address] -= amount
        self.reserves[key] = self.reserves.get(key, 0) + amount
        self.reserved_ever[key] = self.reserved_ever.get(key, 0) + amount
        assert reserved.reserve == self.reserves[key]

    @precondition(lambda self: any(self.reserves.values()))
    @rule(data=st.data(), share=st.sampled_from([1, 2]))
    def request_release(self, data: st.DataObject, share: int) -> None:
        key = data.draw(st.sampled_from(sorted(k for k, v in self.reserves.items() if v)))
        account = next(p for p in self.payers if p.address == key[0])
        amount = max(1, self.reserves[key] // share)
        requested = self.run(self.market.request_release(key[1], amount, sender=account))
        self.releases[key] = Pending(amount, requested.releasable_at)
        # What a provider's admission may count on excludes what is leaving.
        available = self.run(self.market.reserved(key[0], key[1]))
        assert available == self.reserves[key] - amount

    @precondition(lambda self: any(r.at < self.clock + SLACK_S for r in self.releases.values()))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        key = data.draw(
            st.sampled_from(sorted(k for k, r in self.releases.items() if r.at < self.clock + SLACK_S))
        )
        account = next(p for p in self.payers if p.address == key[0])
        pending, now = self.releases[key], self.latest()
        released = self.attempt(
            self.market.release(key[1], sender=account),
            may_succeed=now + SLACK_S >= pending.at,
            may_fail=now < pending.at,
            error="WithdrawalNotReady",
        )
        if released is not None:
            amount = min(pending.amount, self.reserves.get(key, 0))
            assert released.amount == amount
            self.reserves[key] -= amount
            self.deposits[key[0]] += amount
            del self.releases[key]

    @rule(
        payer=st.integers(0, CLIENTS - 1),
        provider=st.integers(0, PROVIDERS - 1),
        increment_gwei=st.integers(1, 10**7),
    )
    def sign_voucher(self, payer: int, provider: int, increment_gwei: int) -> None:
        key = (self.payers[payer].address, self.providers[provider].address)
        signed = self.vouchers.setdefault(key, [])
        cumulative = (signed[-1][0].cumulative_amount if signed else 0) + increment_gwei * GWEI
        signed.append(signed_voucher(self.market.domain(), self.payers[payer], key[1], cumulative))

    @precondition(lambda self: self.vouchers)
    @rule(data=st.data(), provider=st.integers(0, PROVIDERS - 1))
    def redeem_vouchers(self, data: st.DataObject, provider: int) -> None:
        payee = self.providers[provider]
        mine = sorted(key for key in self.vouchers if key[1] == payee.address)
        if not mine:
            return
        chosen = data.draw(st.lists(st.sampled_from(mine), min_size=1, max_size=3))
        # Mostly the latest voucher, sometimes an older one (a replay).
        batch = [self.vouchers[key][data.draw(st.sampled_from([-1, 0]))] for key in chosen]
        expected_total = 0
        for voucher, _ in batch:
            key = (voucher.client, voucher.provider)
            owed = voucher.cumulative_amount - self.paid.get(key, 0)
            pay = min(max(owed, 0), self.reserves.get(key, 0))
            self.paid[key] = self.paid.get(key, 0) + pay
            self.reserves[key] = self.reserves.get(key, 0) - pay
            expected_total += pay
        redemption = self.run(self.market.redeem_vouchers(batch, sender=payee))
        event(f"redeem_vouchers: {'paid' if expected_total else 'nothing to pay'}")
        assert redemption.total == expected_total
        assert len(redemption.redeemed) + len(redemption.skipped) == len(batch)

    @precondition(lambda self: any(v and a not in self.pending for a, v in self.deposits.items()))
    @rule(payer=st.integers(0, CLIENTS - 1), share=st.sampled_from([1, 2, 4]))
    def request_withdrawal(self, payer: int, share: int) -> None:
        account = self.payers[payer]
        if self.deposits[account.address] == 0 or account.address in self.pending:
            return
        amount = max(1, self.deposits[account.address] // share)
        requested = self.run(self.market.request_withdrawal(amount, sender=account))
        self.pending[account.address] = Pending(amount, requested.withdrawable_at)

    @precondition(lambda self: any(p.at < self.clock + SLACK_S for p in self.pending.values()))
    @rule(data=st.data())
    def withdraw(self, data: st.DataObject) -> None:
        payer = data.draw(
            st.sampled_from(sorted(k for k, p in self.pending.items() if p.at < self.clock + SLACK_S))
        )
        account = next(p for p in self.payers if p.address == payer)
        pending, now = self.pending[payer], self.latest()
        withdrawn = self.attempt(
            self.market.withdraw(sender=account),
            may_succeed=now + SLACK_S >= pending.at,
            may_fail=now < pending.at,
            error="WithdrawalNotReady",
        )
        if withdrawn is not None:
            expected = min(pending.amount, self.deposits[payer])
            assert withdrawn.amount == expected
            self.deposits[payer] -= expected
            del self.pending[payer]

    # Invariants ------------------------------------------------------------------------------------

    @invariant()
    def market_holds_exactly_what_it_owes(self) -> None:
        escrow = sum(job.job.price for job in self.jobs.values())
        owed = (
            escrow
            + sum(self.deposits.values())
            + sum(self.reserves.values())
            + sum(self.withdrawable.values())
            + self.locked
        )
        assert self.run(self.client.balance(self.market.address)) == owed

    @invariant()
    def vouchers_pay_once_and_only_out_of_reserves(self) -> None:
        for (payer, provider), signed in self.vouchers.items():
            paid = self.run(self.market.paid(payer, provider))
            assert paid == self.paid.get((payer, provider), 0)
            assert paid <= signed[-1][0].cumulative_amount
            # No provider is paid beyond what the client reserved for it.
            assert paid <= self.reserved_ever.get((payer, provider), 0)
        for key, amount in self.reserves.items():
            assert self.run(self.market.reserve_of(*key)).amount == amount
        for payer, balance in self.deposits.items():
            assert self.run(self.market.client_account(payer)).balance == balance

    @invariant()
    def registry_holds_stakes_and_what_was_burned(self) -> None:
        for address, stake in self.stakes.items():
            record = self.run(self.registry.provider(address))
            assert (record.registered, record.stake) == (stake.registered, stake.amount)
            assert self.run(self.market.provider_active(address)) == stake.active
        total = sum(s.amount for s in self.stakes.values()) + self.burned
        assert self.run(self.client.balance(self.registry.address)) == total
        assert self.run(self.registry.burned_stake()) == self.burned


# py-evm raises the recursion limit while a test runs; hypothesis only warns that it leaves it so.
@pytest.mark.filterwarnings("ignore:The recursion limit will not be reset")
def test_market_money_always_adds_up(rpc_url: str, chain_settings: Callable[..., ChainSettings]) -> None:
    machine = type(
        "Market", (MarketMachine,), {"rpc_url": rpc_url, "make_settings": staticmethod(chain_settings)}
    )
    run_state_machine_as_test(machine, settings=STATEFUL)
