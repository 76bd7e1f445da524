"""Jury duty: a provider drawn for a dispute re-runs the job, commits, reveals and collects its pay.

    drawn → (refuse: own dispute, unknown model) | evidence → re-run → commit → reveal → resolved
    (the pay the court credits is taken out by the node's dispute desk)

The juror re-runs the disputed job in its own sandboxed executor and judges the provider's output
by `node.domain.disputes.juror_accepts`: bit-exact when it ran under the receipt's profile, else
within the model's tolerance (`node.executor.compare`). The input and the claimed output come from
the chain's logs for on-chain jobs that carried them, else from the challenger's blob store
(`/gpunode/blob/1`, by sha256); bytes that do not match the receipt's hashes are ignored. Without
the claimed output a juror can only compare hashes, and a challenger that does not publish its
evidence loses: a different profile with no output to compare counts as acceptable, and so does
a dispute whose input nobody published.

The commitment's salt is derived from the node key and the dispute (HMAC), so a juror that
restarts between commit and reveal re-runs the job and reveals the same vote; nothing is stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from node.chain.court import DisputeCourt, DisputeOpened, DisputeRecord
from node.chain.follower import ChainEvent, EventFollower
from node.chain.keys import NodeKey
from node.chain.market import JobMarket
from node.domain.disputes import Verdict, Vote, juror_accepts
from node.errors import ChainError, GpunodeError, TransactionReverted
from node.executor.compare import compare_outputs
from node.executor.manifest import tolerance_for
from node.executor.store import ModelStore
from node.logging import get_logger
from node.p2p.blob_protocol import fetch_blob
from node.p2p.host import P2PHost
from node.p2p.identity import peer_id_from_bytes
from node.types import Hash32

log = get_logger(__name__)

_SALT_TAG = b"gpunode jury salt"
EVIDENCE_ATTEMPTS = 4
EVIDENCE_RETRY_S = 0.5
# The name of jury duty's follower of the court, for its saved cursor.
JURY_FOLLOWER_NAME = "jury-duty"


class JuryExecutor(Protocol):
    """What jury duty needs of the executor (an `ExecutorPool` is one)."""

    async def run(self, model_id: str | bytes, input_bytes: bytes) -> JuryRun: ...


class JuryRun(Protocol):
    @property
    def output(self) -> bytes: ...

    @property
    def output_hash(self) -> Hash32: ...

    @property
    def profile_hash(self) -> Hash32: ...


@dataclass(frozen=True, slots=True)
class Evidence:
    """The disputed job's input and, when published, the output the provider claimed."""

    input: bytes
    claimed_output: bytes | None


# Fetches a dispute's evidence, or None when the input cannot be had.
EvidenceSource = Callable[[DisputeOpened], Awaitable[Evidence | None]]
# Whether two outputs of a model agree within its tolerance: (model id, claimed, own) -> agree.
ToleranceCheck = Callable[[Hash32, bytes, bytes], bool]


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str


@dataclass(frozen=True, slots=True)
class JuryService:
    """What one served dispute came to."""

    dispute_id: Hash32
    vote: Vote | None  # None when refused
    verdict: Verdict
    paid: int  # wei the court credited this juror for it
    refused: str | None = None


def refuse_duty(dispute: DisputeOpened, me: str, has_model: Callable[[Hash32], bool]) -> Refusal | None:
    """Why this node must not or cannot judge `dispute` (never its own), or None to serve."""
    if dispute.provider.lower() == me.lower():
        return Refusal("the disputed result is this node's own")
    if dispute.challenger.lower() == me.lower():
        return Refusal("this node is the challenger")
    if not has_model(dispute.model_id):
        return Refusal("this node does not have the model")
    return None


def judge(dispute: DisputeOpened, evidence: Evidence, run: JuryRun, tolerates: ToleranceCheck) -> Vote:
    """The honest vote on `dispute` given this node's own run of the job."""
    same_profile = run.profile_hash == dispute.profile_hash
    claimed = evidence.claimed_output
    if claimed is None or hashlib.sha256(claimed).digest() != dispute.output_hash:
        # Nothing to compare values with: only a hash under the same profile can prove a fault.
        within = True
    else:
        within = tolerates(dispute.model_id, claimed, run.output)
    acceptable = juror_accepts(
        run.output_hash, dispute.output_hash, same_profile=same_profile, within_tolerance=within
    )
    return Vote(acceptable=acceptable, output_hash=run.output_hash)


def jury_salt(key: NodeKey, dispute_id: bytes) -> Hash32:
    """A secret only this node can recompute: survives a restart between commit and reveal."""
    return Hash32(hmac.new(key.private_key, _SALT_TAG + bytes(dispute_id), hashlib.sha256).digest())


def chain_evidence(market: JobMarket) -> EvidenceSource:
    """Evidence of on-chain jobs whose input and output were published in the market's logs."""

    async def fetch(dispute: DisputeOpened) -> Evidence | None:
        if not dispute.escrowed:
            return None
        job_input, output = await market.job_payloads(dispute.job_id)
        return None if job_input is None else Evidence(job_input, output)

    return fetch


def blob_evidence(host: P2PHost, on_chain: EvidenceSource, *, max_size: int) -> EvidenceSource:
    """Evidence from the chain's logs when there, else fetched by sha256 from the peer the
    challenger named (`/gpunode/blob/1`); the fetch checks every byte against the hash."""

    async def fetch(dispute: DisputeOpened) -> Evidence | None:
        found = await on_chain(dispute)
        if found is not None or not dispute.evidence_peer:
            return found
        try:
            peer = peer_id_from_bytes(dispute.evidence_peer)
            job_input = await _fetch_with_retries(host, peer, dispute.input_hash, max_size)
        except GpunodeError as exc:
            log.warning("jury_input_unavailable", dispute=dispute.dispute_id.hex(), error=str(exc))
            return None
        try:
            output: bytes | None = await _fetch_with_retries(host, peer, dispute.output_hash, max_size)
        except GpunodeError:
            output = None
        return Evidence(job_input, output)

    return fetch


async def _fetch_with_retries(host: P2PHost, peer: str, digest: Hash32, max_size: int) -> bytes:
    """A missing input makes a juror vote for the provider: a passing network fault must not."""
    for attempt in range(EVIDENCE_ATTEMPTS - 1):
        try:
            return await fetch_blob(host, peer, digest, max_size=max_size)
        except GpunodeError:
            await asyncio.sleep(EVIDENCE_RETRY_S * (attempt + 1))
    return await fetch_blob(host, peer, digest, max_size=max_size)


def manifest_tolerance(store: ModelStore) -> ToleranceCheck:
    """Compares outputs within the tolerance the model's manifest names (its format's by default)."""

    def tolerates(model_id: Hash32, claimed: bytes, own: bytes) -> bool:
        return compare_outputs(claimed, own, tolerance_for(store.get(model_id))).agree

    return tolerates


def store_has_model(store: ModelStore) -> Callable[[Hash32], bool]:
    def has_model(model_id: Hash32) -> bool:
        try:
            store.get(model_id)
        except GpunodeError:
            return False
        return True

    return has_model


class JuryDuty:
    """Serves every dispute this provider is drawn for; `on_events` takes the court's `JurorDrawn`."""

    def __init__(
        self,
        court: DisputeCourt,
        key: NodeKey,
        executor: JuryExecutor,
        evidence: EvidenceSource,
        tolerates: ToleranceCheck,
        has_model: Callable[[Hash32], bool],
        *,
        follower: EventFollower | None = None,
        spawn: Callable[[Coroutine[Any, Any, None]], None] | None = None,
        poll_interval_s: float = 1.0,
    ) -> None:
        self.court = court
        self.key = key
        self.executor = executor
        self.evidence = evidence
        self.tolerates = tolerates
        self.has_model = has_model
        self.poll_interval_s = poll_interval_s
        self.follower = follower
        self._spawn = spawn
        self.ready = asyncio.Event() if follower is None else follower.ready
        self.served: dict[Hash32, JuryService] = {}
        self._serving: set[Hash32] = set()
        self._changed = asyncio.Condition()

    async def run(self) -> None:
        """Follow the court's `JurorDrawn` events and serve each draw of this node."""
        if self.follower is None:
            raise ChainError("jury duty was built without a follower of the court")
        await self.follower.run(self.on_events)

    async def on_events(self, events: Sequence[ChainEvent]) -> None:
        for event in events:
            if event.name != "JurorDrawn" or str(event.args["juror"]).lower() != self.key.address.lower():
                continue
            dispute_id = Hash32(bytes(event.args["disputeId"]))
            if dispute_id in self._serving:
                continue
            self._serving.add(dispute_id)
            work = self._serve_logged(dispute_id)
            if self._spawn is None:
                await work
            else:
                self._spawn(work)

    async def _serve_logged(self, dispute_id: Hash32) -> None:
        try:
            self.served[dispute_id] = await self.serve(dispute_id)
            async with self._changed:
                self._changed.notify_all()
        except GpunodeError as exc:
            # A later event (or a restart) may serve it again; the node goes on.
            self._serving.discard(dispute_id)
            log.warning("jury_duty_failed", dispute=dispute_id.hex(), error=str(exc))

    async def wait_served(self, dispute_id: Hash32) -> JuryService:
        """What serving `dispute_id` came to, once the follower has served it."""
        async with self._changed:
            await self._changed.wait_for(lambda: dispute_id in self.served)
        return self.served[dispute_id]

    async def serve(self, dispute_id: Hash32) -> JuryService:
        """Judge one dispute this node was drawn for, from re-run to pay."""
        opened = await self.court.opened(dispute_id)
        refusal = refuse_duty(opened, self.key.address, self.has_model)
        if refusal is not None:
            log.warning("jury_duty_refused", dispute=dispute_id.hex(), reason=refusal.reason)
            return JuryService(dispute_id, None, Verdict.PENDING, 0, refused=refusal.reason)
        vote = await self._vote(opened)
        salt = jury_salt(self.key, dispute_id)
        record = await self.court.dispute(dispute_id)
        ballot = await self.court.ballot(dispute_id, self.key.address)
        if not ballot.committed and record.verdict is Verdict.PENDING:
            commitment = await self.court.vote_commitment(dispute_id, self.key.address, vote, salt)
            await self.court.commit_vote(dispute_id, commitment, sender=self.key.account)
            log.info("jury_vote_committed", dispute=dispute_id.hex(), acceptable=vote.acceptable)
        record = await self._until(dispute_id, _reveal_open)
        if record.verdict is Verdict.PENDING:
            await self.court.reveal_vote(dispute_id, vote, salt, sender=self.key.account)
        record = await self._until(dispute_id, _resolvable)
        if record.verdict is Verdict.PENDING:
            record = await self._resolve(dispute_id)
        # What the court credited this node; the node's dispute desk takes it out.
        paid = await self.court.credited(dispute_id, self.key.address)
        log.info("jury_duty_done", dispute=dispute_id.hex(), verdict=record.verdict.name, paid=paid)
        return JuryService(dispute_id, vote, record.verdict, paid)

    async def _vote(self, opened: DisputeOpened) -> Vote:
        evidence = await self.evidence(opened)
        if evidence is None or hashlib.sha256(evidence.input).digest() != opened.input_hash:
            # The challenger must publish what it disputes; unproven, the provider keeps its stake.
            log.warning("jury_evidence_missing", dispute=opened.dispute_id.hex())
            return Vote(acceptable=True, output_hash=Hash32(bytes(32)))
        run = await self.executor.run(opened.model_id, evidence.input)
        return judge(opened, evidence, run, self.tolerates)

    async def _until(
        self, dispute_id: Hash32, ready: Callable[[DisputeRecord, float], bool]
    ) -> DisputeRecord:
        """Poll the court at the chain's pace until `ready` (the chain offers nothing to wait on)."""
        while True:
            record = await self.court.dispute(dispute_id)
            if record.verdict is not Verdict.PENDING or ready(record, await self.court.client.chain_time()):
                return record
            await asyncio.sleep(self.poll_interval_s)

    async def _resolve(self, dispute_id: Hash32) -> DisputeRecord:
        try:
            await self.court.resolve(dispute_id, sender=self.key.account)
        except TransactionReverted as exc:
            # Another juror resolved it first.
            if exc.error_name != "AlreadyResolved":
                raise
        return await self.court.dispute(dispute_id)


def _reveal_open(record: DisputeRecord, now: float) -> bool:
    return record.jury_drawn and (record.commits >= record.juror_count or now > record.commit_deadline)


def _resolvable(record: DisputeRecord, now: float) -> bool:
    return record.jury_drawn and (record.reveals >= record.juror_count or now > record.reveal_deadline)
