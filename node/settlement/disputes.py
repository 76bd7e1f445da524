"""The disputes this node takes part in: opening one on a result it paid for, moving it along
(drawing its jury when due, resolving it once the jury is done), listing and showing them, and
collecting what the court credits this node (bonds back, rewards, juror pay).

Everything is read back from the DisputeCourt, so a restart loses nothing: the chain is the record.
The dispute names this node's peer id (`evidence_peer`), where jurors fetch a voucher job's input
and claimed output by sha256; on-chain jobs that publish both in their logs need nothing more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from node.chain.court import DisputeCourt, DisputeOpened, DisputeRecord
from node.chain.keys import NodeKey
from node.chain.registry import ContractInputError
from node.domain.disputes import Verdict
from node.domain.service import DisputeView
from node.errors import GpunodeError, TransactionReverted
from node.logging import get_logger
from node.settlement.evidence import DisputeEvidence
from node.types import Hash32, ResultReceipt

log = get_logger(__name__)

# The signed receipt of a job this node paid for, by this node's id of the job.
ReceiptLookup = Callable[[str], Awaitable[tuple[ResultReceipt, bytes]]]


class DisputeDesk:
    """Opens, follows and settles this node's disputes at `court`."""

    def __init__(
        self,
        court: DisputeCourt,
        key: NodeKey,
        receipts: ReceiptLookup,
        *,
        evidence_peer: bytes = b"",
        evidence: DisputeEvidence | None = None,
        poll_interval_s: float = 1.0,
    ) -> None:
        self.evidence = evidence
        self.court = court
        self.key = key
        self.receipts = receipts
        self.evidence_peer = evidence_peer
        self.poll_interval_s = poll_interval_s
        self.ready = asyncio.Event()
        # Pending disputes this node is a party of, and the last block whose disputes were read:
        # each round reads only the blocks since (the first reads them all, after a restart too).
        self._pending: dict[Hash32, DisputeOpened] = {}
        self._read_to = -1

    async def open(self, job_id: str) -> DisputeView:
        """Dispute the result of a job this node paid for, posting the court's bond."""
        receipt, signature = await self.receipts(job_id)
        bond = await self.court.bond()
        opened = await self.court.open_dispute(
            receipt, signature, evidence_peer=self.evidence_peer, bond=bond, sender=self.key.account
        )
        if self.evidence is not None:
            self.evidence.allow(receipt.input_hash, receipt.output_hash)
        self._pending[opened.dispute_id] = opened
        log.info("dispute_opened", dispute=opened.dispute_id.hex(), provider=opened.provider, bond=bond)
        return await self._view(opened)

    async def list(self) -> tuple[DisputeView, ...]:
        """Every dispute this node is the challenger, the provider or a juror of, newest first."""
        me = self.key.address.lower()
        drawn = set(await self.court.juror_draws(self.key.address, 0))
        mine = [
            opened
            for opened in await self.court.disputes_opened(0)
            if me in (opened.provider.lower(), opened.challenger.lower()) or opened.dispute_id in drawn
        ]
        return tuple([await self._view(opened) for opened in reversed(mine)])

    async def show(self, dispute_id: str) -> DisputeView:
        try:
            raw = bytes.fromhex(dispute_id.removeprefix("0x"))
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ContractInputError(f"{dispute_id!r} is not a dispute id (64 hex digits)")
        return await self._view(await self.court.opened(Hash32(raw)))

    async def advance(self) -> tuple[str, ...]:
        """Draw the jury of every dispute this node opened once due, and resolve every dispute of
        its own the jury is done with; returns the transactions sent."""
        await self._read_new_disputes()
        sent: tuple[str, ...] = ()
        for dispute_id in list(self._pending):
            record = await self.court.dispute(dispute_id)
            if record.verdict is not Verdict.PENDING:
                del self._pending[dispute_id]
                continue
            tx = await self._advance_one(record)
            if tx is not None:
                sent = (*sent, tx)
        return sent

    async def _read_new_disputes(self) -> None:
        head = await self.court.client.block_number()
        if head <= self._read_to:
            return
        me = self.key.address.lower()
        for opened in await self.court.disputes_opened(self._read_to + 1, head):
            if me in (opened.provider.lower(), opened.challenger.lower()):
                self._pending[opened.dispute_id] = opened
                if self.evidence is not None and opened.challenger.lower() == me:
                    self.evidence.allow(opened.input_hash, opened.output_hash)
        self._read_to = head

    async def collect(self) -> int:
        """Withdraw what the court credited this node; the wei paid."""
        if await self.court.withdrawable(self.key.address) == 0:
            return 0
        return await self.court.withdraw(sender=self.key.account)

    async def run(self) -> None:
        """Move this node's disputes along at the chain's pace, and collect what they pay."""
        self.ready.set()
        while True:
            try:
                await self.advance()
                await self.collect()
            except GpunodeError as exc:
                log.warning("disputes_not_advanced", error=str(exc))
            await asyncio.sleep(self.poll_interval_s)

    async def _advance_one(self, record: DisputeRecord) -> str | None:
        if record.verdict is not Verdict.PENDING:
            return None
        try:
            if not record.jury_drawn:
                if await self.court.client.block_number() <= record.draw_block:
                    return None
                drawn = await self.court.draw_jury(record.dispute_id, sender=self.key.account)
                return drawn.tx.tx_hash
            now = await self.court.client.chain_time()
            if record.reveals >= record.juror_count or now > record.reveal_deadline:
                resolved = await self.court.resolve(record.dispute_id, sender=self.key.account)
                log.info("dispute_resolved", dispute=record.dispute_id.hex(), verdict=resolved.verdict.name)
                return resolved.tx.tx_hash
        except TransactionReverted as exc:
            # A juror or the other party moved it first.
            log.info("dispute_already_moved", dispute=record.dispute_id.hex(), error=exc.error_name)
        return None

    async def _view(self, opened: DisputeOpened) -> DisputeView:
        record = await self.court.dispute(opened.dispute_id)
        jurors = await self.court.jurors(opened.dispute_id)
        me = self.key.address.lower()
        role = (
            "provider"
            if opened.provider.lower() == me
            else "challenger"
            if opened.challenger.lower() == me
            else "juror"
            if me in (j.lower() for j in jurors)
            else "observer"
        )
        return DisputeView(
            dispute_id=opened.dispute_id.hex(),
            job_id=opened.job_id.hex(),
            model_id=opened.model_id.hex(),
            provider=opened.provider,
            challenger=opened.challenger,
            role=role,
            escrowed=opened.escrowed,
            phase=_phase(record),
            verdict=record.verdict.name.lower(),
            jurors=jurors,
            commits=record.commits,
            reveals=record.reveals,
            commit_deadline=record.commit_deadline,
            reveal_deadline=record.reveal_deadline,
            output_hash=opened.output_hash.hex(),
            profile_hash=opened.profile_hash.hex(),
        )


def _phase(record: DisputeRecord) -> str:
    if record.verdict is not Verdict.PENDING:
        return "resolved"
    if not record.jury_drawn:
        return "drawing the jury"
    if record.commits < record.juror_count:
        return "jurors committing"
    return "jurors revealing"
