"""Pure conversions between the façade's values (`node.domain.service`) and the API's messages.

Request fields are checked here, so a malformed id or amount is refused with `InvalidRequest`
before any layer below sees it. The client side converts answers back into the same views.
"""

from __future__ import annotations

import re
from typing import Any

from eth_utils.address import is_address, is_checksum_address, to_checksum_address

from node.api.errors import InvalidRequest
from node.domain.service import (
    MAX_TIMEOUT_S,
    AttemptView,
    CheckRunView,
    DisputeView,
    EarningsView,
    JobFilter,
    JobSpec,
    JobView,
    ModelView,
    NodeStatusView,
    OfferedModelView,
    PeerView,
    ProviderStatusView,
    ReceiptView,
    ReputationView,
    SettlementReport,
    VerificationView,
)
from node.domain.state import AttemptOutcome, JobState, PaymentPath, Role
from node.gen.gpunode.v1 import api_pb2 as pb
from node.types import Address, FetchTerms, Hash32, ResultReceipt

_HEX64 = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
MAX_LIST_LIMIT = 1000
DEFAULT_LIST_LIMIT = 100

PAYMENT_TO_PB = {PaymentPath.VOUCHER: pb.PAYMENT_PATH_VOUCHER, PaymentPath.ESCROW: pb.PAYMENT_PATH_ESCROW}
PAYMENT_FROM_PB = {
    pb.PAYMENT_PATH_UNSPECIFIED: PaymentPath.VOUCHER,
    pb.PAYMENT_PATH_VOUCHER: PaymentPath.VOUCHER,
    pb.PAYMENT_PATH_ESCROW: PaymentPath.ESCROW,
}
ROLE_TO_PB = {Role.CLIENT: pb.ROLE_CLIENT, Role.PROVIDER: pb.ROLE_PROVIDER}
ROLE_FROM_PB = {pb.ROLE_CLIENT: Role.CLIENT, pb.ROLE_PROVIDER: Role.PROVIDER}


# ---------------------------------------------------------------------------------------------
# Checking request fields.


def parse_id(text: str, what: str) -> str:
    """A job or model id: 64 hex digits, 0x optional; returned lowercase without the prefix."""
    if not _HEX64.match(text.strip()):
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise InvalidRequest(
            f"{what} {shown!r} is not an id",
            hint=f"a {what} is 64 hex digits (sha256), as `gpunode job list` / `gpunode models list` show",
        )
    return text.strip().lower().removeprefix("0x")


def parse_wei(text: str, what: str) -> int:
    """A non-negative decimal amount of wei that fits a uint256."""
    cleaned = text.strip().replace("_", "")
    if not cleaned.isdigit() or int(cleaned) >= 2**256:
        raise InvalidRequest(
            f"{what} {text!r} is not an amount of wei", hint="give a whole number of wei, e.g. 1000000000000"
        )
    return int(cleaned)


def parse_address(text: str, what: str) -> Address:
    text = text.strip()
    # eth_utils' is_address does not check the checksum of a mixed-case address; a typo must not pass.
    mixed_case = text[2:] != text[2:].lower() and text[2:] != text[2:].upper()
    if not is_address(text) or (mixed_case and not is_checksum_address(text)):
        raise InvalidRequest(
            f"{what} {text!r} is not an Ethereum address",
            hint="give 0x and 40 hex digits; a mixed-case address must carry a valid checksum",
        )
    return Address(to_checksum_address(text))


def job_spec_from_pb(request: pb.SubmitJobRequest) -> JobSpec:
    if not request.input:
        raise InvalidRequest("the job has no input", hint="send the input tensors as safetensors bytes")
    if request.payment not in PAYMENT_FROM_PB:
        raise InvalidRequest(f"unknown payment path {request.payment}", hint="use voucher or escrow")
    options: dict[str, Any] = {}
    if request.max_price_wei:
        options["max_price_wei"] = parse_wei(request.max_price_wei, "max price")
    if request.timeout_ms:
        if request.timeout_ms / 1000 > MAX_TIMEOUT_S:
            raise InvalidRequest(
                f"a timeout of {request.timeout_ms} ms is longer than a job may take ({MAX_TIMEOUT_S:.0f} s)",
                hint="longer work belongs in an on-chain job with a deadline",
            )
        options["timeout_s"] = request.timeout_ms / 1000
    if request.provider:
        options["provider"] = parse_address(request.provider, "provider")
    if request.stream:
        options["stream"] = True
    if request.precision:
        options["precision"] = request.precision
    return JobSpec(
        model_id=parse_id(request.model_id, "model id"),
        input=request.input,
        payment=PAYMENT_FROM_PB[request.payment],
        **options,
    )


def job_filter_from_pb(request: pb.ListJobsRequest) -> JobFilter:
    known = {state.value for state in JobState}
    unknown = [s for s in request.states if s not in known]
    if unknown:
        raise InvalidRequest(
            f"unknown job state {unknown[0]!r}", hint=f"states are: {', '.join(sorted(known))}"
        )
    if request.limit > MAX_LIST_LIMIT:
        raise InvalidRequest(
            f"a listing returns at most {MAX_LIST_LIMIT} jobs, not {request.limit}",
            hint="page through with --offset",
        )
    if request.role not in (pb.ROLE_UNSPECIFIED, *ROLE_FROM_PB):
        raise InvalidRequest(f"unknown role {request.role}", hint="use client or provider")
    return JobFilter(
        role=ROLE_FROM_PB.get(request.role),
        states=tuple(JobState(s) for s in request.states),
        limit=request.limit or DEFAULT_LIST_LIMIT,
        offset=request.offset,
    )


# ---------------------------------------------------------------------------------------------
# Views to messages (server side).


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def receipt_to_pb(view: ReceiptView) -> pb.ResultReceipt:
    r = view.receipt
    return pb.ResultReceipt(
        job_id=_hex(r.job_id),
        model_id=_hex(r.model_id),
        input_hash=_hex(r.input_hash),
        output_hash=_hex(r.output_hash),
        profile_hash=_hex(r.profile_hash),
        provider=r.provider,
        signature=_hex(view.signature),
        verified=view.verified,
    )


def job_to_pb(view: JobView, *, include_output: bool = True) -> pb.Job:
    message = pb.Job(
        job_id=view.job_id,
        role=ROLE_TO_PB[view.role],
        model_id=view.model_id,
        payment=PAYMENT_TO_PB[view.payment],
        state=view.state.value,
        terminal=view.terminal,
        attempts=[
            pb.Attempt(provider=a.provider, paid=a.paid, outcome=a.outcome.value if a.outcome else "")
            for a in view.attempts
        ],
        provider=view.provider or "",
        price_wei=str(view.price_wei),
        has_output=view.output is not None,
        error=view.error or "",
        created_at_ms=_ms(view.created_at),
        updated_at_ms=_ms(view.updated_at),
        onchain_job_id=view.onchain_job_id or "",
        output_size=view.output_size or (len(view.output) if view.output is not None else 0),
    )
    if include_output and view.output is not None:
        message.output = view.output
    if view.receipt is not None:
        message.receipt.CopyFrom(receipt_to_pb(view.receipt))
    return message


def provider_status_to_pb(view: ProviderStatusView) -> pb.ProviderStatus:
    return pb.ProviderStatus(
        address=view.address,
        enabled=view.enabled,
        registered=view.registered,
        active=view.active,
        stake_wei=str(view.stake_wei),
        price_per_job_wei=str(view.price_per_job_wei),
        models=list(view.models),
        warm_models=list(view.warm_models),
        running=view.running,
        queued=view.queued,
        jobs_served=view.jobs_served,
        open_disputes=view.open_disputes,
        jury_duties_served=view.jury_duties_served,
        holds_waiting=view.holds_waiting,
        holds_granted=view.holds_granted,
    )


def earnings_to_pb(view: EarningsView) -> pb.Earnings:
    return pb.Earnings(
        unredeemed_voucher_wei=str(view.unredeemed_voucher_wei),
        redeemed_voucher_wei=str(view.redeemed_voucher_wei),
        pending_onchain_wei=str(view.pending_onchain_wei),
        withdrawable_wei=str(view.withdrawable_wei),
        paid_jobs=view.paid_jobs,
    )


def settlement_to_pb(report: SettlementReport) -> pb.SettleResponse:
    return pb.SettleResponse(
        vouchers_redeemed=report.vouchers_redeemed,
        redeemed_wei=str(report.redeemed_wei),
        jobs_finalized=report.jobs_finalized,
        finalized_wei=str(report.finalized_wei),
        withdrawn_wei=str(report.withdrawn_wei),
        transactions=list(report.transactions),
    )


def model_to_pb(view: ModelView) -> pb.Model:
    return pb.Model(
        model_id=view.model_id,
        name=view.name,
        format=view.format,
        size_bytes=view.size_bytes,
        batchable=view.batchable,
        warm=view.warm,
    )


def node_status_to_pb(view: NodeStatusView, *, version: str) -> pb.NodeStatus:
    return pb.NodeStatus(
        version=version,
        address=view.address,
        peer_id=view.peer_id,
        listen_addrs=list(view.listen_addrs),
        chain_id=view.chain_id,
        rpc_url=view.rpc_url,
        registry_address=view.registry_address,
        market_address=view.market_address,
        block_number=view.block_number,
        provider=view.provider,
        database=view.database,
    )


def reputation_to_pb(view: ReputationView) -> pb.Reputation:
    return pb.Reputation(
        jobs_seen=view.jobs_seen,
        checks_passed=view.checks_passed,
        checks_failed=view.checks_failed,
        fraud_records_seen=view.fraud_records_seen,
        excluded=view.excluded,
        excluded_reason=view.excluded_reason,
    )


def reputation_from_pb(message: pb.Reputation) -> ReputationView:
    return ReputationView(
        jobs_seen=message.jobs_seen,
        checks_passed=message.checks_passed,
        checks_failed=message.checks_failed,
        fraud_records_seen=message.fraud_records_seen,
        excluded=message.excluded,
        excluded_reason=message.excluded_reason,
    )


def verification_to_pb(view: VerificationView) -> pb.Verification:
    return pb.Verification(
        job_id=view.job_id,
        verdict=view.verdict,
        why=view.why,
        runs=[
            pb.CheckRun(
                provider=r.provider, job_id=r.job_id, output_hash=r.output_hash, profile_hash=r.profile_hash
            )
            for r in view.runs
        ],
        loser=view.loser or "",
    )


def verification_from_pb(message: pb.Verification) -> VerificationView:
    return VerificationView(
        job_id=message.job_id,
        verdict=message.verdict,
        why=message.why,
        runs=tuple(
            CheckRunView(Address(r.provider), r.job_id, r.output_hash, r.profile_hash) for r in message.runs
        ),
        loser=Address(message.loser) if message.loser else None,
    )


def peer_to_pb(view: PeerView) -> pb.Peer:
    reputation = None if view.reputation is None else reputation_to_pb(view.reputation)
    return pb.Peer(
        reputation=reputation,
        peer_id=view.peer_id,
        address=view.address,
        connected=view.connected,
        provider=view.provider,
        listen_addrs=list(view.listen_addrs),
        models=[
            pb.OfferedModel(
                model_id=m.model_id,
                price_per_job_wei=str(m.price_per_job_wei),
                warm=m.warm,
                task=m.task,
                precision=m.precision,
            )
            for m in view.models
        ],
        devices=list(view.devices),
        fetch=None if view.fetch is None else fetch_terms_to_pb(view.fetch),
    )


def fetch_terms_to_pb(terms: FetchTerms) -> pb.FetchTerms:
    return pb.FetchTerms(
        max_bytes=terms.max_bytes,
        price_per_job_wei=str(terms.price_per_job_wei),
        cold_start_price_wei=str(terms.cold_start_price_wei),
    )


# ---------------------------------------------------------------------------------------------
# Messages back to views (client side).


def _bytes32(text: str) -> Hash32:
    return Hash32(bytes.fromhex(text.removeprefix("0x")))


def receipt_from_pb(message: pb.ResultReceipt) -> ReceiptView:
    receipt = ResultReceipt(
        job_id=_bytes32(message.job_id),
        model_id=_bytes32(message.model_id),
        input_hash=_bytes32(message.input_hash),
        output_hash=_bytes32(message.output_hash),
        profile_hash=_bytes32(message.profile_hash),
        provider=Address(message.provider),
    )
    signature = bytes.fromhex(message.signature.removeprefix("0x"))
    return ReceiptView(receipt=receipt, signature=signature, verified=message.verified)


def job_from_pb(message: pb.Job) -> JobView:
    return JobView(
        job_id=message.job_id,
        role=ROLE_FROM_PB.get(message.role, Role.CLIENT),
        model_id=message.model_id,
        payment=PAYMENT_FROM_PB.get(message.payment, PaymentPath.VOUCHER),
        state=JobState(message.state),
        terminal=message.terminal,
        attempts=tuple(
            AttemptView(
                provider=Address(a.provider),
                paid=a.paid,
                outcome=AttemptOutcome(a.outcome) if a.outcome else None,
            )
            for a in message.attempts
        ),
        provider=Address(message.provider) if message.provider else None,
        price_wei=int(message.price_wei or 0),
        output=message.output if message.has_output and message.output else None,
        receipt=receipt_from_pb(message.receipt) if message.HasField("receipt") else None,
        error=message.error or None,
        created_at=message.created_at_ms / 1000,
        updated_at=message.updated_at_ms / 1000,
        onchain_job_id=message.onchain_job_id or None,
        output_size=message.output_size if message.has_output else None,
    )


def provider_status_from_pb(message: pb.ProviderStatus) -> ProviderStatusView:
    return ProviderStatusView(
        address=Address(message.address),
        enabled=message.enabled,
        registered=message.registered,
        active=message.active,
        stake_wei=int(message.stake_wei or 0),
        price_per_job_wei=int(message.price_per_job_wei or 0),
        models=tuple(message.models),
        warm_models=tuple(message.warm_models),
        running=message.running,
        queued=message.queued,
        jobs_served=message.jobs_served,
        open_disputes=message.open_disputes,
        jury_duties_served=message.jury_duties_served,
        holds_waiting=message.holds_waiting,
        holds_granted=message.holds_granted,
    )


def earnings_from_pb(message: pb.Earnings) -> EarningsView:
    return EarningsView(
        unredeemed_voucher_wei=int(message.unredeemed_voucher_wei or 0),
        redeemed_voucher_wei=int(message.redeemed_voucher_wei or 0),
        pending_onchain_wei=int(message.pending_onchain_wei or 0),
        withdrawable_wei=int(message.withdrawable_wei or 0),
        paid_jobs=message.paid_jobs,
    )


def settlement_from_pb(message: pb.SettleResponse) -> SettlementReport:
    return SettlementReport(
        vouchers_redeemed=message.vouchers_redeemed,
        redeemed_wei=int(message.redeemed_wei or 0),
        jobs_finalized=message.jobs_finalized,
        finalized_wei=int(message.finalized_wei or 0),
        withdrawn_wei=int(message.withdrawn_wei or 0),
        transactions=tuple(message.transactions),
    )


def model_from_pb(message: pb.Model) -> ModelView:
    return ModelView(
        model_id=message.model_id,
        name=message.name,
        format=message.format,
        size_bytes=message.size_bytes,
        batchable=message.batchable,
        warm=message.warm,
    )


def node_status_from_pb(message: pb.NodeStatus) -> NodeStatusView:
    return NodeStatusView(
        address=Address(message.address),
        peer_id=message.peer_id,
        listen_addrs=tuple(message.listen_addrs),
        chain_id=message.chain_id,
        rpc_url=message.rpc_url,
        registry_address=Address(message.registry_address),
        market_address=Address(message.market_address),
        block_number=message.block_number,
        provider=message.provider,
        database=message.database,
    )


def peer_from_pb(message: pb.Peer) -> PeerView:
    return PeerView(
        peer_id=message.peer_id,
        address=Address(message.address),
        connected=message.connected,
        provider=message.provider,
        listen_addrs=tuple(message.listen_addrs),
        models=tuple(
            OfferedModelView(
                m.model_id, parse_wei(m.price_per_job_wei, "price_per_job_wei"), m.warm, m.task, m.precision
            )
            for m in message.models
        ),
        devices=tuple(message.devices),
        reputation=reputation_from_pb(message.reputation) if message.HasField("reputation") else None,
        fetch=fetch_terms_from_pb(message.fetch) if message.HasField("fetch") else None,
    )


def fetch_terms_from_pb(message: pb.FetchTerms) -> FetchTerms:
    return FetchTerms(
        message.max_bytes,
        parse_wei(message.price_per_job_wei, "price_per_job_wei"),
        parse_wei(message.cold_start_price_wei, "cold_start_price_wei"),
    )


def dispute_to_pb(view: DisputeView) -> pb.Dispute:
    return pb.Dispute(
        dispute_id=view.dispute_id,
        job_id=view.job_id,
        model_id=view.model_id,
        provider=view.provider,
        challenger=view.challenger,
        role=view.role,
        escrowed=view.escrowed,
        phase=view.phase,
        verdict=view.verdict,
        jurors=list(view.jurors),
        commits=view.commits,
        reveals=view.reveals,
        commit_deadline=view.commit_deadline,
        reveal_deadline=view.reveal_deadline,
        output_hash=view.output_hash,
        profile_hash=view.profile_hash,
    )


def dispute_from_pb(message: pb.Dispute) -> DisputeView:
    return DisputeView(
        dispute_id=message.dispute_id,
        job_id=message.job_id,
        model_id=message.model_id,
        provider=Address(message.provider),
        challenger=Address(message.challenger),
        role=message.role,
        escrowed=message.escrowed,
        phase=message.phase,
        verdict=message.verdict,
        jurors=tuple(Address(juror) for juror in message.jurors),
        commits=message.commits,
        reveals=message.reveals,
        commit_deadline=message.commit_deadline,
        reveal_deadline=message.reveal_deadline,
        output_hash=message.output_hash,
        profile_hash=message.profile_hash,
    )
