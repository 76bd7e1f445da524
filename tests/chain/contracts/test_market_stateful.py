"""Random sequences of market actions against a model: the money always adds up.

After every step: the market's ether equals what it owes (live escrows + deposits + credited
earnings and refunds); what each client paid each provider equals the model's, never more than the
client's latest voucher and never more than its deposits; deposits match the model. Each action's
outcome (success or the named revert) must be one the model allows; timing near a boundary may go
either way, since a block's timestamp is only known once it is mined.
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
STATEFUL = settings(
    max_examples=10,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@dataclass
class ModelJob:
    job: JobRequested
    status: JobStatus
    provider: str | None
    time: int  # the deadline, then (once submitted) the end of the challenge window


@dataclass
class Pending:
    amount: int
    at: int


class MarketMachine(RuleBasedStateMachine):
    rpc_url: ClassVar[str] = "embedded"
    make_settings: ClassVar[Callable[..., ChainSettings]]

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.client = self.run(ChainClient.connect(self.make_settings(self.rpc_url)))
        accounts = self.client.dev_accounts()
        self.providers: list[LocalAccount] = accounts[1:3]
        self.requesters: list[LocalAccount] = accounts[3:5]
        self.payers: list[LocalAccount] = accounts[5:7]
        self.relayer: LocalAccount = accounts[7]
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
        for provider in self.providers:
            self.run(
                self.deployment.registry.register(PEER_ID, METADATA_HASH, stake=MIN_STAKE, sender=provider)
            )
        self.jobs: dict[bytes, ModelJob] = {}
        self.deposits: dict[str, int] = {p.address: 0 for p in self.payers}
        self.pending: dict[str, Pending] = {}
        self.paid: dict[tuple[str, str], int] = {}
        self.vouchers: dict[tuple[str, str], list[tuple[Voucher, bytes]]] = {}
        self.withdrawable: dict[str, int] = {}
        # The chain's time as last seen; steers rules toward actions whose time has come.
        self.clock = 0

    def teardown(self) -> None:
        self.run(self.client.close())
        self.loop.close()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    @property
    def market(self) -> Any:
        return self.deployment.market

    def latest(self) -> int:
        block = self.run(self.client.w3.eth.get_block("latest"))
        self.clock = max(self.clock, int(block["timestamp"]))
        return int(block["timestamp"])

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

    @initialize()
    def open_market(self) -> None:
        """Start where the interesting rules apply: two jobs requested, both clients funded."""
        for requester in (0, 1):
            self.request_job(requester, 10**6, 3_600)
        for payer in (0, 1):
            self.deposit(payer, 10**7)

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
    @rule(data=st.data(), provider=st.integers(0, 1))
    def claim_job(self, data: st.DataObject, provider: int) -> None:
        job_id = data.draw(st.sampled_from(self.jobs_in(JobStatus.REQUESTED)))
        job, now = self.jobs[job_id], self.latest()
        claimer = self.providers[provider]
        claim = self.attempt(
            self.market.claim_job(job_id, sender=claimer),
            may_succeed=now < job.time,
            may_fail=now + SLACK_S >= job.time,
            error="DeadlinePassed",
        )
        if claim is not None:
            job.status, job.provider = JobStatus.CLAIMED, claimer.address

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
            mined = self.run(self.client.w3.eth.get_block(result.tx.block_number))
            job.status, job.time = JobStatus.SUBMITTED, int(mined["timestamp"]) + CHALLENGE_WINDOW_S

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

    @precondition(lambda self: self.jobs_in(JobStatus.REQUESTED, JobStatus.CLAIMED, due=True))
    @rule(data=st.data())
    def refund(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(self.jobs_in(JobStatus.REQUESTED, JobStatus.CLAIMED, due=True)))
        job, now = self.jobs[job_id], self.latest()
        refunded = self.attempt(
            self.market.refund(job.job.terms, sender=self.relayer),
            may_succeed=now + SLACK_S > job.time,
            may_fail=now <= job.time,
            error="DeadlineNotPassed",
        )
        if refunded is not None:
            self.credit(job.job.terms.requester, job.job.price)
            del self.jobs[job_id]

    @precondition(lambda self: any(self.withdrawable.values()))
    @rule(who=st.integers(0, 3))
    def withdraw_earnings(self, who: int) -> None:
        account = (self.providers + self.requesters)[who]
        owed = self.withdrawable.get(account.address, 0)
        withdrawn = self.attempt(
            self.market.withdraw_earnings(sender=account),
            may_succeed=owed > 0,
            may_fail=owed == 0,
            error="NothingToWithdraw",
        )
        if withdrawn is not None:
            assert withdrawn.amount == owed
            self.withdrawable[account.address] = 0

    @rule(seconds=st.sampled_from([60, CHALLENGE_WINDOW_S, WITHDRAWAL_DELAY_S, 4_000]))
    def advance_time(self, seconds: int) -> None:
        self.run(self.client.increase_time(seconds))
        self.run(self.client.mine(1))
        self.latest()

    # Vouchers --------------------------------------------------------------------------------------

    @rule(payer=st.integers(0, 1), amount_gwei=st.integers(1, 10**7))
    def deposit(self, payer: int, amount_gwei: int) -> None:
        account = self.payers[payer]
        deposited = self.run(self.market.deposit(amount_gwei * GWEI, sender=account))
        self.deposits[account.address] += amount_gwei * GWEI
        assert deposited.balance == self.deposits[account.address]

    @rule(payer=st.integers(0, 1), provider=st.integers(0, 1), increment_gwei=st.integers(1, 10**7))
    def sign_voucher(self, payer: int, provider: int, increment_gwei: int) -> None:
        key = (self.payers[payer].address, self.providers[provider].address)
        signed = self.vouchers.setdefault(key, [])
        cumulative = (signed[-1][0].cumulative_amount if signed else 0) + increment_gwei * GWEI
        signed.append(signed_voucher(self.market.domain(), self.payers[payer], key[1], cumulative))

    @precondition(lambda self: self.vouchers)
    @rule(data=st.data(), provider=st.integers(0, 1))
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
            pay = min(max(owed, 0), self.deposits[voucher.client])
            self.paid[key] = self.paid.get(key, 0) + pay
            self.deposits[voucher.client] -= pay
            expected_total += pay
        redemption = self.run(self.market.redeem_vouchers(batch, sender=payee))
        event(f"redeem_vouchers: {'paid' if expected_total else 'nothing to pay'}")
        assert redemption.total == expected_total
        assert len(redemption.redeemed) + len(redemption.skipped) == len(batch)

    @precondition(lambda self: any(self.deposits.values()))
    @rule(payer=st.integers(0, 1), share=st.sampled_from([1, 2, 4]))
    def request_withdrawal(self, payer: int, share: int) -> None:
        account = self.payers[payer]
        if self.deposits[account.address] == 0:
            return
        amount = max(1, self.deposits[account.address] // share)
        requested = self.run(self.market.request_withdrawal(amount, sender=account))
        self.pending[account.address] = Pending(amount, requested.withdrawable_at)

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def withdraw(self, data: st.DataObject) -> None:
        payer = data.draw(st.sampled_from(sorted(self.pending)))
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

    def credit(self, account: str, amount: int) -> None:
        self.withdrawable[account] = self.withdrawable.get(account, 0) + amount

    @invariant()
    def market_holds_exactly_what_it_owes(self) -> None:
        escrow = sum(job.job.price for job in self.jobs.values())
        owed = escrow + sum(self.deposits.values()) + sum(self.withdrawable.values())
        assert self.run(self.client.balance(self.market.address)) == owed

    @invariant()
    def vouchers_pay_once_and_within_deposits(self) -> None:
        for (payer, provider), signed in self.vouchers.items():
            paid = self.run(self.market.paid(payer, provider))
            assert paid == self.paid.get((payer, provider), 0)
            assert paid <= signed[-1][0].cumulative_amount
        for payer, balance in self.deposits.items():
            assert self.run(self.market.client_account(payer)).balance == balance


# py-evm raises the recursion limit while a test runs; hypothesis only warns that it leaves it so.
@pytest.mark.filterwarnings("ignore:The recursion limit will not be reset")
def test_market_money_always_adds_up(rpc_url: str, chain_settings: Callable[..., ChainSettings]) -> None:
    machine = type(
        "Market", (MarketMachine,), {"rpc_url": rpc_url, "make_settings": staticmethod(chain_settings)}
    )
    run_state_machine_as_test(machine, settings=STATEFUL)
