"""Fakes for what lies outside the job pipelines: the chain's JobMarket, the overlay's job
protocol, the executor pool. Everything else the pipelines use is real.

The fake market keeps the contract's rules that the pipelines rely on (who may claim, how far ahead
a deadline may be, when a job may be finalized or refunded, that a voucher redemption pays only out
of the client's reserve for that provider) and records every call, so a test
can assert that nothing was claimed, paid or submitted twice. `fail(method, error)` makes the
next call of `method` raise `error` instead of running.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hexbytes import HexBytes

from node.chain.eip712 import Eip712Domain, recover_voucher_signer
from node.chain.market import (
    DEFAULT_CALLBACK_GAS,
    ClientAccount,
    Deposited,
    EarningsWithdrawn,
    JobClaimed,
    JobFinalized,
    JobMarket,
    JobRecord,
    JobRefunded,
    JobRequested,
    JobStatus,
    JobTerms,
    Redemption,
    Released,
    ReleaseRequested,
    Reserve,
    Reserved,
    ResultSubmitted,
    SkipReason,
    VoucherRedeemed,
    VoucherSkipped,
)
from node.chain.registry import ZERO_ADDRESS, TxInfo
from node.errors import ChainError, ExecutorError, P2PError, SignatureError, TransactionReverted
from node.executor.errors import InvalidInput
from node.executor.profile import ExecutionProfile
from node.executor.result import ExecutionResult
from node.p2p.job_messages import JobAccepted, JobProgress, JobRequest
from node.storage import Database
from node.types import Address, Hash32, ResultReceipt, Voucher, sha256

CHAIN_ID = 31337
MARKET_ADDRESS = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
CHALLENGE_WINDOW_S = 600
WITHDRAWAL_DELAY_S = 3600
# The registry's unstake cooldown less the challenge window, as the devnet deploys it.
MAX_JOB_TIME_S = 7200 - CHALLENGE_WINDOW_S

PROFILE = ExecutionProfile(
    torch_version="2.13.0",
    device="cpu",
    cpu_capability="avx2",
    threads=1,
    interop_threads=1,
    deterministic=True,
    batch_size=1,
)


# the chain --------------------------------------------------------------------------------------


@dataclass
class ChainJob:
    terms: JobTerms
    status: JobStatus
    price: int
    deadline: int
    named: Address | None
    provider: Address | None = None
    time: int = 0
    callback_gas: int = 0
    output_on_chain: bool = False


class _Event:
    def __init__(self, name: str) -> None:
        self.topic = name

    def process_log(self, entry: dict[str, Any]) -> dict[str, Any]:
        return entry


class _Events:
    def __getitem__(self, name: str) -> Callable[[], _Event]:
        return lambda: _Event(name)

    def __getattr__(self, name: str) -> Callable[[], _Event]:
        return self[name]


class _Contract:
    events = _Events()


class _ChainClient:
    def __init__(self, market: FakeMarket) -> None:
        self._market = market

    async def chain_time(self) -> float:
        await self._market._call("chain_time")
        return float(self._market.now)

    async def get_logs(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        await self._market._call("get_logs")
        name, job_hex = query["topics"]
        return [e for n, j, e in self._market.logs if n == name and HexBytes(j).to_0x_hex() == job_hex]


class FakeMarket:
    """An in-memory JobMarket: escrowed jobs, voucher deposits and reserves, pull payments, the
    chain's clock. `balances` is a client's unreserved deposit, `reserves[client, provider]` what it
    set aside for one provider's vouchers, `releases[client, provider]` a requested release
    (amount, releasable at)."""

    def __init__(self) -> None:
        self.address = MARKET_ADDRESS
        self.contract = _Contract()
        self.client = _ChainClient(self)
        self.now = int(time.time())
        self.jobs: dict[bytes, ChainJob] = {}
        self.logs: list[tuple[str, bytes, dict[str, Any]]] = []
        self.balances: defaultdict[str, int] = defaultdict(int)
        self.reserves: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.releases: dict[tuple[str, str], tuple[int, int]] = {}
        # The output bytes each submitted result carried on chain (empty: by hash only).
        self.outputs: dict[bytes, bytes] = {}
        self.withdrawal_at: defaultdict[str, int] = defaultdict(int)
        self.paid_out: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.earnings: defaultdict[str, int] = defaultdict(int)
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self._failures: defaultdict[str, list[Exception]] = defaultdict(list)
        self._gates: dict[str, asyncio.Event] = {}
        self._block = 0

    def domain(self) -> Eip712Domain:
        return Eip712Domain(chain_id=CHAIN_ID, verifying_contract=MARKET_ADDRESS)

    # programming the fake -------------------------------------------------------------------------

    def fail(self, method: str, error: Exception, *, times: int = 1) -> None:
        """The next `times` calls of `method` raise `error` and change nothing."""
        self._failures[method.lower()].extend([error] * times)

    def hold(self, method: str) -> asyncio.Event:
        """Calls of `method` wait until the returned event is set."""
        gate = self._gates[method.lower()] = asyncio.Event()
        return gate

    def called(self, method: str) -> list[tuple[Any, ...]]:
        return [args for name, args in self.calls if name == method]

    def advance(self, seconds: int) -> None:
        self.now += seconds

    async def _call(self, method: str, *args: Any) -> None:
        gate = self._gates.get(method.lower())
        if gate is not None:
            await gate.wait()
        failures = self._failures.get(method.lower())
        if failures:
            raise failures.pop(0)
        self.calls.append((method, args))

    def _tx(self) -> TxInfo:
        self._block += 1
        return TxInfo(
            tx_hash=HexBytes(self._block.to_bytes(32, "big")).to_0x_hex(),
            block_number=self._block,
            gas_used=0,
        )

    def _log(self, name: str, job_id: bytes, args: dict[str, Any]) -> None:
        entry = {
            "args": {"jobId": job_id, **args},
            "transactionHash": HexBytes(self._block.to_bytes(32, "big")),
            "blockNumber": self._block,
        }
        self.logs.append((name, bytes(job_id), entry))

    # escrowed jobs ----------------------------------------------------------------------------

    async def request_job(
        self,
        model_id: Hash32,
        *,
        price: int,
        deadline: int,
        input_hash: Hash32,
        provider: Address | None = None,
        salt: int,
        sender: Any,
        callback: Address | None = None,
        callback_gas: int | None = None,
        output_on_chain: bool = False,
        input: bytes = b"",
    ) -> JobRequested:
        await self._call("request_job", model_id, price, provider, salt)
        if int(deadline) > self.now + MAX_JOB_TIME_S:
            latest = self.now + MAX_JOB_TIME_S
            raise TransactionReverted("DeadlineTooFar", error_name="DeadlineTooFar", args=(deadline, latest))
        gas = (0 if callback is None else DEFAULT_CALLBACK_GAS) if callback_gas is None else callback_gas
        terms = JobTerms(
            requester=Address(sender.address),
            model_id=model_id,
            input_hash=input_hash,
            callback=callback or Address(ZERO_ADDRESS),
            salt=salt,
        )
        job_id = terms.job_id
        if job_id in self.jobs:  # as on chain, an id ends with its job: reusing a salt brings it back
            raise TransactionReverted("JobExists", error_name="JobExists", args=(job_id,))
        self.jobs[job_id] = ChainJob(
            terms,
            JobStatus.REQUESTED,
            price,
            int(deadline),
            provider,
            time=int(deadline),
            callback_gas=gas,
            output_on_chain=output_on_chain,
        )
        tx = self._tx()
        self._log(
            "JobRequested",
            job_id,
            {
                "requester": terms.requester,
                "modelId": model_id,
                "inputHash": input_hash,
                "callback": terms.callback,
                "salt": salt,
                "provider": provider or ZERO_ADDRESS,
                "price": price,
                "deadline": int(deadline),
            },
        )
        return JobRequested(job_id, terms, provider, price, int(deadline), input, tx, gas, output_on_chain)

    async def claim_job(self, job_id: bytes, *, sender: Any) -> JobClaimed:
        await self._call("claim_job", bytes(job_id), sender.address)
        job = self.jobs.get(bytes(job_id))
        if job is None or job.status is not JobStatus.REQUESTED:
            raise TransactionReverted("JobNotRequested", error_name="JobNotRequested")
        if job.named is not None and job.named.lower() != sender.address.lower():
            raise TransactionReverted("NotAssignedProvider", error_name="NotAssignedProvider")
        job.status = JobStatus.CLAIMED
        job.provider = Address(sender.address)
        return JobClaimed(Hash32(bytes(job_id)), job.provider, self._tx())

    async def submit_result(
        self, terms: JobTerms, receipt: ResultReceipt, signature: bytes, *, output: bytes = b"", sender: Any
    ) -> ResultSubmitted:
        await self._call("submit_result", terms.job_id, receipt, signature)
        job = self.jobs.get(terms.job_id)
        if job is None or job.status is not JobStatus.CLAIMED:
            raise TransactionReverted("JobNotClaimed", error_name="JobNotClaimed")
        if output and sha256(output) != receipt.output_hash:
            raise TransactionReverted("OutputHashMismatch", error_name="OutputHashMismatch")
        if not output and job.output_on_chain:
            raise TransactionReverted("OutputRequired", error_name="OutputRequired", args=(terms.job_id,))
        job.status = JobStatus.SUBMITTED
        job.time = self.now + CHALLENGE_WINDOW_S
        self.outputs[terms.job_id] = output
        return ResultSubmitted(
            terms.job_id, receipt.output_hash, receipt.profile_hash, output, False, self._tx()
        )

    async def finalize(self, job_id: bytes, *, sender: Any) -> JobFinalized:
        await self._call("finalize", bytes(job_id))
        job = self.jobs.get(bytes(job_id))
        if job is None or job.status is not JobStatus.SUBMITTED or job.time > self.now:
            raise TransactionReverted("NotFinalizable", error_name="NotFinalizable")
        del self.jobs[bytes(job_id)]
        assert job.provider is not None
        self.earnings[job.provider] += job.price
        tx = self._tx()
        self._log("JobFinalized", bytes(job_id), {"provider": job.provider, "price": job.price})
        return JobFinalized(Hash32(bytes(job_id)), job.provider, job.price, tx)

    async def refund(self, terms: JobTerms, *, sender: Any) -> JobRefunded:
        await self._call("refund", terms.job_id)
        job = self.jobs.get(terms.job_id)
        live = job is not None and job.status in (JobStatus.REQUESTED, JobStatus.CLAIMED)
        if job is None or not live or job.deadline >= self.now:
            raise TransactionReverted("NotRefundable", error_name="NotRefundable")
        del self.jobs[terms.job_id]
        self.earnings[terms.requester] += job.price
        tx = self._tx()
        self._log("JobRefunded", terms.job_id, {"requester": terms.requester, "price": job.price})
        return JobRefunded(terms.job_id, terms.requester, job.price, tx)

    async def cancel_job(self, terms: JobTerms, *, sender: Any) -> JobRefunded:
        await self._call("cancel_job", terms.job_id)
        job = self.jobs.get(terms.job_id)
        if sender.address != terms.requester:
            raise TransactionReverted("NotRequester", error_name="NotRequester")
        if job is None or job.status is not JobStatus.REQUESTED:
            raise TransactionReverted("WrongJobStatus", error_name="WrongJobStatus")
        del self.jobs[terms.job_id]
        self.earnings[terms.requester] += job.price
        self._log("JobRefunded", terms.job_id, {"requester": terms.requester, "price": job.price})
        return JobRefunded(terms.job_id, terms.requester, job.price, self._tx())

    async def job(self, job_id: bytes) -> JobRecord:
        await self._call("job", bytes(job_id))
        job = self.jobs.get(bytes(job_id))
        if job is None:
            return JobRecord(Hash32(bytes(job_id)), JobStatus.NONE, None, 0, 0)
        return JobRecord(
            Hash32(bytes(job_id)),
            job.status,
            job.provider or job.named,
            job.time,
            job.price,
            job.callback_gas,
            job.output_on_chain,
        )

    async def max_job_time(self) -> int:
        await self._call("max_job_time")
        return MAX_JOB_TIME_S

    async def withdrawal_delay(self) -> int:
        await self._call("withdrawal_delay")
        return WITHDRAWAL_DELAY_S

    async def withdrawable(self, account: str) -> int:
        await self._call("withdrawable", account)
        return self.earnings[account]

    async def withdraw_earnings(self, *, sender: Any) -> EarningsWithdrawn:
        await self._call("withdraw_earnings", sender.address)
        amount = self.earnings.pop(sender.address, 0)
        return EarningsWithdrawn(Address(sender.address), amount, self._tx())

    # vouchers ---------------------------------------------------------------------------------

    async def deposit(self, amount: int, *, sender: Any) -> Deposited:
        await self._call("deposit", amount)
        self.balances[sender.address] += amount
        return Deposited(Address(sender.address), amount, self.balances[sender.address], self._tx())

    async def client_account(self, client: str) -> ClientAccount:
        await self._call("client_account", client)
        return ClientAccount(self.balances[client], 0, self.withdrawal_at[client])

    async def paid(self, client: str, provider: str) -> int:
        await self._call("paid", client, provider)
        return self.paid_out[client, provider]

    async def reserve(self, provider: str, amount: int, *, deposit: int = 0, sender: Any) -> Reserved:
        await self._call("reserve", provider, amount, deposit)
        client = sender.address
        if amount <= 0:
            raise TransactionReverted("ZeroAmount", error_name="ZeroAmount")
        if amount > self.balances[client] + deposit:
            raise TransactionReverted("InsufficientDeposit", error_name="InsufficientDeposit")
        self.balances[client] += deposit - amount
        self.reserves[client, provider] += amount
        return Reserved(
            Address(client), Address(provider), amount, self.reserves[client, provider], self._tx()
        )

    async def cover_vouchers(self, provider: str, cumulative: int, *, ahead: int = 0, sender: Any) -> int:
        """`JobMarket.cover_vouchers` itself, run over the fake's reads and `reserve`."""
        await self._call("cover_vouchers", provider, cumulative, ahead)
        return await JobMarket.cover_vouchers(self, provider, cumulative, ahead=ahead, sender=sender)  # type: ignore[arg-type]

    async def reserve_of(self, client: str, provider: str) -> Reserve:
        await self._call("reserve_of", client, provider)
        releasing, releasable_at = self.releases.get((client, provider), (0, 0))
        return Reserve(
            self.reserves[client, provider], self.paid_out[client, provider], releasing, releasable_at
        )

    async def reserved(self, client: str, provider: str) -> int:
        return (await self.reserve_of(client, provider)).available

    async def request_release(self, provider: str, amount: int, *, sender: Any) -> ReleaseRequested:
        await self._call("request_release", provider, amount)
        key = (sender.address, provider)
        if amount <= 0 or amount > self.reserves[key]:
            raise TransactionReverted("InsufficientReserve", error_name="InsufficientReserve")
        self.releases[key] = (amount, self.now + WITHDRAWAL_DELAY_S)
        return ReleaseRequested(
            Address(sender.address), Address(provider), amount, self.releases[key][1], self._tx()
        )

    async def release(self, provider: str, *, sender: Any) -> Released:
        await self._call("release", provider)
        key = (sender.address, provider)
        pending = self.releases.get(key)
        if pending is None:
            raise TransactionReverted("NoReleaseRequested", error_name="NoReleaseRequested")
        if self.now < pending[1]:
            raise TransactionReverted("WithdrawalNotReady", error_name="WithdrawalNotReady")
        del self.releases[key]
        amount = min(pending[0], self.reserves[key])
        self.reserves[key] -= amount
        self.balances[sender.address] += amount
        return Released(Address(sender.address), Address(provider), amount, self.reserves[key], self._tx())

    async def redeem_vouchers(self, vouchers: list[tuple[Voucher, bytes]], *, sender: Any) -> Redemption:
        await self._call("redeem_vouchers", tuple(vouchers))
        provider = Address(sender.address)
        redeemed: list[VoucherRedeemed] = []
        skipped: list[VoucherSkipped] = []
        for voucher, signature in vouchers:
            try:
                signer = recover_voucher_signer(self.domain(), voucher, signature)
            except SignatureError:
                signer = Address(ZERO_ADDRESS)
            key = (voucher.client, provider)
            owed = voucher.cumulative_amount - self.paid_out[key]
            if signer != voucher.client or voucher.provider != provider:
                skipped.append(
                    VoucherSkipped(voucher.client, voucher.cumulative_amount, SkipReason.BAD_SIGNATURE)
                )
            elif owed <= 0:
                skipped.append(
                    VoucherSkipped(voucher.client, voucher.cumulative_amount, SkipReason.ALREADY_PAID)
                )
            elif self.reserves[key] == 0:
                skipped.append(VoucherSkipped(voucher.client, voucher.cumulative_amount, SkipReason.NO_FUNDS))
            else:
                # Only the reserve for this provider pays it, whatever else the client deposited.
                amount = min(owed, self.reserves[key])
                self.reserves[key] -= amount
                self.paid_out[key] += amount
                self.earnings[provider] += amount
                redeemed.append(
                    VoucherRedeemed(voucher.client, amount, self.paid_out[key], voucher.cumulative_amount)
                )
        total = sum(r.amount for r in redeemed)
        return Redemption(provider, total, tuple(redeemed), tuple(skipped), self._tx())


def chain_down() -> ChainError:
    return ChainError("the chain's RPC did not answer", hint="is the chain node running?")


def reverted(name: str = "Reverted") -> TransactionReverted:
    return TransactionReverted(f"execution reverted: {name}", error_name=name)


# the executor ---------------------------------------------------------------------------------


@dataclass
class FakePool:
    """`ExecutorPool.run`: the output is a function of the input; `fail()` makes runs raise;
    `hold()` keeps runs going until `release()`."""

    outputs: Callable[[bytes], bytes] = lambda data: b"out:" + data
    runs: list[tuple[Hash32, bytes, float | None]] = field(default_factory=list)
    clients: list[str | None] = field(default_factory=list)
    refused: set[bytes] = field(default_factory=set)
    _errors: list[ExecutorError] = field(default_factory=list)
    _gate: asyncio.Event | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)

    def fail(self, error: ExecutorError) -> None:
        self._errors.append(error)

    def hold(self) -> None:
        self._gate = asyncio.Event()

    def release(self) -> None:
        if self._gate is not None:
            self._gate.set()

    async def run(
        self,
        model_id: Hash32,
        job_input: bytes,
        *,
        timeout_s: float | None = None,
        client: str | None = None,
        on_tokens: Callable[[str], None] | None = None,
        stop: asyncio.Event | None = None,
    ) -> ExecutionResult:
        self.runs.append((model_id, job_input, timeout_s))
        self.clients.append(client)
        self.started.set()
        if self._gate is not None:
            await self._gate.wait()
        if self._errors:
            raise self._errors.pop(0)
        output = self.outputs(job_input)
        return ExecutionResult(
            model_id=model_id,
            input_hash=sha256(job_input),
            output=output,
            output_hash=sha256(output),
            profile=PROFILE,
            queued_s=0.0,
            run_s=0.001,
        )

    async def check_input(self, model_id: Hash32, job_input: bytes) -> None:
        """What `ExecutorPool.check_input` says: inputs in `refused` are not tensors the model takes."""
        if job_input in self.refused:
            raise InvalidInput("the input is not a tensor this model takes")

    def lanes(self) -> tuple[Hash32, ...]:
        return ()


# the overlay ------------------------------------------------------------------------------------

ProviderBehaviour = Callable[[JobRequest, Callable[[Any], None]], Awaitable[Any]]


@dataclass
class FakeOverlay:
    """`JobClient.request_job` and the bits of `P2PHost` the client uses: each peer answers with
    the behaviour scripted for it."""

    behaviours: dict[str, ProviderBehaviour] = field(default_factory=dict)
    requests: list[tuple[str, JobRequest]] = field(default_factory=list)
    streams_asked: list[tuple[str, str]] = field(default_factory=list)

    async def request_job(self, peer: str, request: JobRequest, on_progress: Any = None) -> Any:
        self.requests.append((peer, request))
        behaviour = self.behaviours[peer]
        return await behaviour(request, on_progress or (lambda _e: None))

    def connected_peers(self) -> set[str]:
        return set(self.behaviours)

    async def connect(self, _addr: str) -> None:
        return None

    async def connect_any(self, _addrs: Any, _peer_id: str) -> str | None:
        return None

    async def open_stream(self, peer: str, protocol: str) -> Any:
        # These scripted peers speak the job protocol only: a client's holds fail, and its jobs
        # go where `Matchmaker.choose` puts them (real holds: tests/e2e/test_holds.py).
        self.streams_asked.append((peer, protocol))
        raise P2PError(f"peer {peer} does not serve {protocol}")


def accepted_then(outcome: Callable[[JobRequest], Any]) -> ProviderBehaviour:
    """A provider that reports accepted and running, then answers `outcome(request)`."""

    async def behave(request: JobRequest, on_event: Callable[[Any], None]) -> Any:
        on_event(JobAccepted(0))
        on_event(JobProgress("running", 0.0))
        await asyncio.sleep(0)
        result = outcome(request)
        if isinstance(result, Exception):
            raise result
        return result

    return behave


def replace_receipt(receipt: ResultReceipt, **changes: Any) -> ResultReceipt:
    return dataclasses.replace(receipt, **changes)


# the database -----------------------------------------------------------------------------------

_TEMPLATE: dict[str, bytes] = {}


def sqlite_database(directory: Path) -> Database:
    """A real SQLite database, migrated once per test run and copied for each test."""
    path = directory / "gpunode.db"
    if "db" not in _TEMPLATE:
        Database.open(f"sqlite:///{path}").close()
        _TEMPLATE["db"] = path.read_bytes()
    else:
        path.write_bytes(_TEMPLATE["db"])
    return Database.open(f"sqlite:///{path}", run_migrations=False)
