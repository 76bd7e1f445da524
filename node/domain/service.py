"""The node's façade: what the gRPC API and the CLI call, as typed protocols and frozen views.

Nothing here does I/O. The composition root (`node.app`) builds the implementations
(`node.client.jobs.ClientJobs`, `node.provider.jobs.ProviderJobs`, `node.provider.models.Models`,
`node.status.NodeInfo`) and hands them over bundled as `NodeServices`. Every method raises
only errors from `node.errors`' tree, each with a message a user can act on:

- `JobError` — unknown job id, cancel of a job that has been paid for or has finished;
- `SchedulerError` — no live, registered provider offers the model at the asked-for price;
- `ExecutorError` / `ModelStoreError` — unknown model, malformed or oversize input;
- `SettlementError` — vouchers or on-chain jobs could not be settled;
- `ChainError` / `TransactionReverted` — the chain is unreachable or refused a transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from node.domain.state import AttemptOutcome, JobState, PaymentPath, Role
from node.executor.manifest import TensorSpec
from node.types import Address, FetchTerms, ResultReceipt

# A client's spec may ask for at most this long; longer jobs belong on the chain with a deadline.
MAX_TIMEOUT_S = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What a client asks for: run `model_id` on `input`, paying at most `max_price_wei`.

    `model_id` is the model's hex sha256 (with or without 0x). `provider`, when given, pins the
    job to that provider (it is not reassigned elsewhere when that provider fails).
    """

    model_id: str
    input: bytes
    payment: PaymentPath = PaymentPath.VOUCHER
    max_price_wei: int = 10**15
    timeout_s: float = 60.0
    provider: Address | None = None
    # A generation's text streams as the provider produces it (`ClientJobsApi.follow_text`).
    stream: bool = False
    # Run the variant of `model_id` offered in this precision ("int8" …), made of the same files.
    precision: str | None = None


@dataclass(frozen=True, slots=True)
class AttemptView:
    """One provider's try at a job."""

    provider: Address
    paid: bool
    outcome: AttemptOutcome | None


@dataclass(frozen=True, slots=True)
class ReceiptView:
    """The provider's signed `ResultReceipt` (EIP-712) and whether this node verified it."""

    receipt: ResultReceipt
    signature: bytes
    verified: bool


@dataclass(frozen=True, slots=True)
class JobView:
    """A job as the API shows it. `job_id` and `model_id` are 64 hex digits (no 0x)."""

    job_id: str
    role: Role
    model_id: str
    payment: PaymentPath
    state: JobState
    terminal: bool
    attempts: tuple[AttemptView, ...]
    provider: Address | None  # the provider of the latest attempt
    price_wei: int  # the matched provider's price (known to this run of the node), else the budget
    output: bytes | None  # safetensors bytes once the result is in
    receipt: ReceiptView | None
    error: str | None  # why the job failed or was cancelled
    created_at: float  # unix seconds
    updated_at: float
    onchain_job_id: str | None = None  # hex id in the JobMarket, escrow path only
    output_size: int | None = None  # bytes of the output once the result is in, also without them


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs `ClientJobs.list` returns; most recently moved first."""

    role: Role | None = None
    states: tuple[JobState, ...] = ()
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True, slots=True)
class ProviderStatusView:
    """A provider's standing: on-chain registration and stake, what it offers, how busy it is."""

    address: Address
    enabled: bool  # this node serves jobs
    registered: bool
    active: bool  # registered with at least the minimum stake and not unstaking
    stake_wei: int
    price_per_job_wei: int
    models: tuple[str, ...]  # hex ids offered
    warm_models: tuple[str, ...]
    running: int
    queued: int
    jobs_served: int
    open_disputes: int = 0  # disputes this provider is a party or juror of; its stake is locked
    jury_duties_served: int = 0  # disputes this node judged since it started
    holds_waiting: int = 0  # clients' holds waiting for a slot (node.scheduler.holds)
    holds_granted: int = 0  # slots kept for the job of a granted hold


@dataclass(frozen=True, slots=True)
class EarningsView:
    """What a provider has earned (wei), by where the money stands."""

    unredeemed_voucher_wei: int  # signed vouchers held, not yet redeemed on-chain
    redeemed_voucher_wei: int  # already paid out of clients' deposits
    pending_onchain_wei: int  # on-chain jobs delivered, waiting for the challenge window
    withdrawable_wei: int  # credited in the JobMarket, ready for `withdraw_earnings`
    paid_jobs: int


@dataclass(frozen=True, slots=True)
class SettlementReport:
    """What one `settle()` did on-chain."""

    vouchers_redeemed: int
    redeemed_wei: int
    jobs_finalized: int
    finalized_wei: int
    withdrawn_wei: int
    transactions: tuple[str, ...]  # 0x tx hashes


@dataclass(frozen=True, slots=True)
class ModelView:
    model_id: str  # 64 hex digits
    name: str
    format: str
    size_bytes: int
    batchable: bool
    warm: bool


@dataclass(frozen=True, slots=True)
class NodeStatusView:
    address: Address
    peer_id: str
    listen_addrs: tuple[str, ...]
    chain_id: int
    rpc_url: str
    registry_address: Address
    market_address: Address
    block_number: int
    provider: bool  # this node also serves jobs
    database: str  # "sqlite" | "postgresql"


@dataclass(frozen=True, slots=True)
class PeerView:
    peer_id: str
    address: Address
    connected: bool
    provider: bool  # has a live advert in our directory
    listen_addrs: tuple[str, ...]
    models: tuple[OfferedModelView, ...] = ()  # what its advert offers
    devices: tuple[str, ...] = ()  # "cpu: …", "cuda: NVIDIA H100 …"
    reputation: ReputationView | None = None  # None: this node never used it
    fetch: FetchTerms | None = None  # its terms for models it lacks; None: it does not fetch


@dataclass(frozen=True, slots=True)
class ReputationView:
    """What this node learnt of a provider's results (`node.client.reputation`)."""

    jobs_seen: int
    checks_passed: int
    checks_failed: int
    fraud_records_seen: int
    excluded: bool
    excluded_reason: str = ""


@dataclass(frozen=True, slots=True)
class CheckRunView:
    provider: Address
    job_id: str  # 64 hex digits: this node's id of the job that ran
    output_hash: str
    profile_hash: str


@dataclass(frozen=True, slots=True)
class VerificationView:
    """A spot check's outcome: `verdict` agreed, first_wrong, second_wrong or undecided."""

    job_id: str
    verdict: str
    why: str
    runs: tuple[CheckRunView, ...]
    loser: Address | None = None


@dataclass(frozen=True, slots=True)
class DisputeView:
    """A dispute at the court as this node sees it: `role` is challenger, provider, juror or
    observer; `verdict` pending, provider_wrong, provider_right or undecided."""

    dispute_id: str  # 64 hex digits
    job_id: str  # the id the disputed receipt names
    model_id: str
    provider: Address
    challenger: Address
    role: str
    escrowed: bool  # an on-chain job, held until the dispute ends
    phase: str
    verdict: str
    jurors: tuple[Address, ...]
    commits: int
    reveals: int
    commit_deadline: int  # unix seconds; 0 until the jury is drawn
    reveal_deadline: int
    output_hash: str
    profile_hash: str


@dataclass(frozen=True, slots=True)
class OfferedModelView:
    model_id: str  # 64 hex digits
    price_per_job_wei: int
    warm: bool
    task: str = ""  # generate, embed, tensor; empty: not stated
    precision: str = ""  # fp32, bf16, int8 …; empty: not stated


@dataclass(frozen=True, slots=True)
class ModelInfoView:
    """What an offered model is, as its manifest (from a provider serving it) says."""

    model_id: str  # 64 hex digits
    name: str
    task: str | None  # a Hugging Face model's task ("generate", "embed"); None for a tensor program


@dataclass(frozen=True, slots=True)
class ProviderSeenView:
    """A provider as this client sees it: its advert's offer and how it has served this client."""

    address: Address
    models: tuple[OfferedModelView, ...]
    devices: tuple[str, ...]
    throughput_per_s: float | None  # its advertised benchmark
    benchmark_latency_ms: float | None
    latency_ms: float | None  # as this client measured it (moving average)
    reputation: float  # this client's success rate with it, smoothed (0.5 when never tried)
    successes: int
    failures: int
    free_slots: int


@dataclass(frozen=True, slots=True)
class ModelUpload:
    """How to run an uploaded `torch.export` program: its name, input tensors and output names
    (empty: read from the program)."""

    name: str
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[str, ...] = ()
    batchable: bool = False


class DisputesApi(Protocol):
    """Disputes this node takes part in, at the chain's DisputeCourt."""

    async def list(self) -> tuple[DisputeView, ...]: ...

    async def show(self, dispute_id: str) -> DisputeView:
        """`ChainError` when no such dispute was opened."""
        ...

    async def open(self, job_id: str) -> DisputeView:
        """Dispute the result of a job this node paid for, posting the bond. `JobError` for an
        unknown job or one without a verified receipt; `TransactionReverted` when the court refuses
        (window over, already disputed)."""
        ...


class ClientJobsApi(Protocol):
    """Jobs this node submits and pays for."""

    async def submit(self, spec: JobSpec) -> JobView:
        """Store the job (durable before this returns) and start it; returns it as `submitted`.

        Raises `ExecutorError`/`ModelStoreError` for a malformed model id or oversize input and
        `SchedulerError` when no live registered provider offers the model at the price.
        """
        ...

    async def get(self, job_id: str) -> JobView:
        """`JobError` when no job has that id."""
        ...

    async def list(self, query: JobFilter = JobFilter()) -> tuple[JobView, ...]: ...

    async def cancel(self, job_id: str) -> JobView:
        """Cancel a job not yet paid for; `JobError` once it has been paid for or has finished."""
        ...

    def watch(self, job_id: str) -> AsyncIterator[JobView]:
        """Yield the job now and after every persisted transition, ending after a terminal one."""
        ...

    def follow_text(self, job_id: str) -> AsyncIterator[str]:
        """Yield the text of a job submitted with `stream` as its provider produces it (what came
        before included), ending with the attempt; nothing for a job that does not stream."""
        ...

    async def deposit(self, amount_wei: int) -> int:
        """Add to this client's voucher deposit in the JobMarket; returns the deposit's balance.

        `ChainError`/`TransactionReverted` when the chain refuses it (too little ether, RPC down).
        """
        ...


class ProviderApi(Protocol):
    """The provider side of this node."""

    async def status(self) -> ProviderStatusView: ...

    async def earnings(self) -> EarningsView: ...

    async def settle(self) -> SettlementReport:
        """Redeem every unredeemed voucher, finalize on-chain jobs past the window, withdraw."""
        ...


class ModelsApi(Protocol):
    async def add(self, source: bytes | Path, *, upload: ModelUpload | None = None) -> ModelView:
        """Install a model: a path to a directory holding `manifest.json` and its files, or a
        `torch.export` program (.pt2) as bytes or a file path, described by `upload` (required
        then). `ModelStoreError` when the model is refused (unsafe, corrupt, too large)."""
        ...

    async def list(self) -> tuple[ModelView, ...]: ...

    async def remove(self, model_id: str, *, delete_files: bool = False) -> ModelView:
        """Stop offering a model (a running provider's advert drops it at once) and, with
        `delete_files`, delete it from the store. `UnknownModel` when it is not stored."""
        ...


class VerificationApi(Protocol):
    async def verify_job(self, job_id: str) -> VerificationView:
        """Re-run a verified job on another provider now and compare; `JobError` when the job
        has no verified result, `SchedulerError` when no other provider can run it."""
        ...


class NodeApi(Protocol):
    async def status(self) -> NodeStatusView: ...

    async def peers(self) -> tuple[PeerView, ...]: ...


@dataclass(frozen=True, slots=True)
class NodeServices:
    """Everything the API serves, built by `node.app`. `provider` is None on a client-only node."""

    jobs: ClientJobsApi
    provider: ProviderApi | None
    models: ModelsApi
    node: NodeApi
    verification: VerificationApi | None = None
    disputes: DisputesApi | None = None  # None where the deployment has no DisputeCourt
