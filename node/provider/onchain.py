"""On-chain jobs on the provider: the dApp path (follow `JobRequested`, claim, run, submit).

Only jobs for models this provider holds are claimed. A dApp's job has no client to fetch a model
from, and anyone may claim it, so it is claimed before it runs: a fetch failing after the claim
would cost stake, and a peer that holds the model can claim the job itself, warm."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from node.chain.follower import ChainEvent, EventFollower
from node.chain.market import JobMarket, JobTerms
from node.domain.state import PaymentPath, Role
from node.errors import ChainError, ExecutorError, GpunodeError
from node.jobstore.blobs import JobBlobs
from node.logging import get_logger
from node.provider.delivery import Escrowed, serve_escrowed
from node.provider.runner import JobRunner
from node.scheduler import AdmissionPolicy, Claim, ClaimContext, OnChainJob, should_claim
from node.storage import NewJob
from node.types import Address, Hash32

log = get_logger(__name__)

FOLLOWER_NAME = "provider-onchain-jobs"


class OnchainJobs:
    """The dApp path: every job requested with its input on-chain is a candidate to claim."""

    def __init__(
        self,
        runner: JobRunner,
        market: JobMarket,
        blobs: JobBlobs,
        follower: EventFollower,
        policy: AdmissionPolicy,
        *,
        spawn: Callable[[Any], None],
        max_callback_gas: int = 500_000,
    ) -> None:
        self.runner = runner
        self.market = market
        self.blobs = blobs
        self.follower = follower
        self.policy = policy
        self._spawn = spawn
        self.max_callback_gas = max_callback_gas
        self.ready = follower.ready

    @property
    def me(self) -> Address:
        return self.runner.key.address

    async def run(self) -> None:
        await self.follower.run(self.on_events)

    async def on_events(self, events: Sequence[ChainEvent]) -> None:
        inputs = {bytes(e.args["jobId"]): bytes(e.args["input"]) for e in events if e.name == "JobInput"}
        requested = [e for e in events if e.name == "JobRequested"]
        if not requested:
            return
        now = await self.market.client.chain_time()
        for event in requested:
            job_input = inputs.get(bytes(event.args["jobId"]))
            if job_input is None:
                continue  # published by hash: its client sends the input over the overlay
            decision = self._decide(event, now)
            if isinstance(decision, Claim):
                self._spawn(self._serve(event, job_input))

    def _decide(self, event: ChainEvent, now: float) -> object:
        named = str(event.args["provider"])
        job = OnChainJob(
            job_id=Hash32(bytes(event.args["jobId"])),
            model_id=Hash32(bytes(event.args["modelId"])),
            price_wei=int(event.args["price"]),
            deadline=float(event.args["deadline"]),
            assigned_provider=None if int(named, 16) == 0 else Address(named),
        )
        context = ClaimContext(
            me=self.me,
            now=now,
            policy=self.policy,
            load=self.runner.load.snapshot(),
            warm_models=frozenset(self.policy.price_floor_wei),
        )
        decision = should_claim(job, context)
        if not isinstance(decision, Claim):
            log.info("onchain_job_passed", job_id=job.job_id.hex(), reason=getattr(decision, "reason", ""))
        return decision

    async def _serve(self, event: ChainEvent, job_input: bytes) -> None:
        terms = JobTerms(
            requester=Address(str(event.args["requester"])),
            model_id=Hash32(bytes(event.args["modelId"])),
            input_hash=Hash32(bytes(event.args["inputHash"])),
            callback=Address(str(event.args["callback"])),
            salt=int(event.args["salt"]),
        )
        job_id = terms.job_id
        try:
            # Anyone may claim it, so it is claimed before it runs: an input the model refuses
            # must be found first, or its claim would run out and cost stake.
            await self.runner.pool.check_input(terms.model_id, job_input)
        except ExecutorError as exc:
            log.info("onchain_job_passed", job_id=job_id.hex(), reason=f"its input is refused: {exc}")
            return
        if await self.runner.took(job_id):
            log.warning("onchain_job_id_recurs", job_id=job_id.hex())
            return
        try:
            asked = await self.market.job(job_id)
        except ChainError as exc:
            log.info("onchain_job_unread", job_id=job_id.hex(), error=str(exc))
            return
        if asked.callback_gas > self.max_callback_gas:
            # Its submission would pay for the callback's gas: more than this provider agreed to.
            log.info(
                "onchain_job_passed",
                job_id=job_id.hex(),
                reason=f"its callback asks {asked.callback_gas} gas, over {self.max_callback_gas}",
            )
            return
        try:
            await self.market.claim_job(job_id, sender=self.runner.key.account)
        except ChainError as exc:
            log.info("onchain_claim_lost", job_id=job_id.hex(), error=str(exc))
            return
        try:
            await self._run_claimed(
                terms,
                job_input,
                int(event.args["price"]),
                float(event.args["deadline"]),
                asked.output_on_chain,
            )
        except GpunodeError as exc:
            log.error("onchain_job_failed", job_id=job_id.hex(), error=str(exc))

    async def _run_claimed(
        self, terms: JobTerms, job_input: bytes, price: int, deadline: float, output_on_chain: bool
    ) -> None:
        room = deadline - await self.market.client.chain_time()
        # Kept with the job: a restart resumes the claim (`ProviderJobs.resume`).
        input_hash = await self.blobs.put(job_input)
        record = await self.runner.store.create(
            NewJob(
                job_id=terms.job_id,
                role=Role.PROVIDER,
                payment=PaymentPath.ESCROW,
                model_id=terms.model_id,
                input_hash=input_hash,
                price_wei=price,
                client=terms.requester,
                deadline=deadline,
            ),
        )
        on_chain = terms.has_callback or output_on_chain
        escrow = Escrowed.due_in(terms, room, output_on_chain=on_chain)
        served = await serve_escrowed(self.runner, self.market, self.blobs, record, job_input, escrow)
        if served.result is None:
            log.error("onchain_job_not_served", job_id=terms.job_id.hex(), error=served.failure)
