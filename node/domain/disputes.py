"""The dispute rules: jury, bond, votes, tally and payouts, the same arithmetic DisputeCourt runs.

A challenger who holds a provider's signed `ResultReceipt` posts a bond and opens a dispute on it
(escrowed jobs within their challenge window, voucher jobs within `voucher_dispute_window` after the
provider's last redemption). A jury of `JURY_SIZE` staked providers is drawn at random, weighted by
stake and excluding both parties, from a block `DRAW_DELAY_BLOCKS` after the challenge. Each juror
re-runs the job, commits `commitment(...)`, then reveals a `Vote`: whether the provider's output is
acceptable (bit-exact under the receipt's profile, else within the model's tolerance) and the hash of
its own output. With at least `QUORUM` reveals, the strict majority of `acceptable` decides.

API (pure; nothing here does I/O):
- constants `JURY_SIZE`, `QUORUM`, `DRAW_DELAY_BLOCKS`, `MAX_DRAW_ATTEMPTS`, `SLASH_REWARD_BPS`,
  `JURY_SHARE_BPS`, `NO_REVEAL_PENALTY_BPS`, `BPS`: equal to the contract's (a test reads them back);
- `Verdict`: `PENDING`, `PROVIDER_WRONG`, `PROVIDER_RIGHT`, `UNDECIDED` (same numbers on chain);
- `Vote(acceptable, output_hash)`; `juror_accepts(...)`: how an honest juror votes;
- `tally(votes) -> Verdict` (a vote is `None` when that juror did not reveal);
- `forfeit_split(amount) -> ForfeitSplit(winner, jury, burned)`: how a lost bond or stake is shared;
- `provider_slash(stake, slash_amount)`, `no_reveal_penalty(bond)`;
- `settle(...) -> Settlement`: every wei moved when a dispute resolves;
- `dispute_id(job_id, provider)`, `commitment(dispute_id, juror, vote, salt)`: the contract's hashes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from eth_abi.abi import encode
from eth_utils.crypto import keccak

from node.types import Address, Hash32

BPS = 10_000
JURY_SIZE = 5
QUORUM = JURY_SIZE // 2 + 1
DRAW_DELAY_BLOCKS = 2
MAX_DRAW_ATTEMPTS = 32
# Of a forfeited stake or bond, this share is paid out (the rest is burned, so no party profits from
# losing to itself through a sybil); the registry applies the same share to every slash.
SLASH_REWARD_BPS = 5_000
# Of what is paid out, this share goes to the jurors who voted with the majority, the rest to the winner.
JURY_SHARE_BPS = 4_000
# A drawn juror that does not reveal loses this share of the challenger's bond from its stake.
NO_REVEAL_PENALTY_BPS = 5_000


class Verdict(IntEnum):
    """A dispute's outcome, numbered as DisputeCourt's `Verdict`."""

    PENDING = 0
    PROVIDER_WRONG = 1
    PROVIDER_RIGHT = 2
    UNDECIDED = 3


@dataclass(frozen=True, slots=True)
class Vote:
    """A revealed vote: whether the disputed output is acceptable, and the juror's own output hash."""

    acceptable: bool
    output_hash: Hash32


@dataclass(frozen=True, slots=True)
class ForfeitSplit:
    winner: int
    jury: int
    burned: int


@dataclass(frozen=True, slots=True)
class Settlement:
    """Every wei moved when a dispute resolves. `juror_pay` and `juror_penalty` follow the jury's order."""

    verdict: Verdict
    provider_slashed: int
    challenger_paid: int  # bond returned plus reward; zero when the challenger lost
    provider_paid: int  # the provider's share of a frivolous challenger's bond
    juror_pay: tuple[int, ...]
    juror_penalty: tuple[int, ...]
    burned: int


def juror_accepts(
    own_output_hash: Hash32,
    disputed_output_hash: Hash32,
    *,
    same_profile: bool,
    within_tolerance: bool,
) -> bool:
    """An honest juror's judgement: bit-exact under the receipt's profile, else the model's tolerance.

    `within_tolerance` is the comparison of the two outputs (exchanged off-chain) under the model
    manifest's tolerance; it decides whenever the juror could not reproduce the receipt's profile.
    """
    if same_profile and own_output_hash == disputed_output_hash:
        return True
    if same_profile:
        return False
    return within_tolerance


def tally(votes: Sequence[Vote | None]) -> Verdict:
    """The verdict of revealed votes (`None`: not revealed); a tie or too few reveals is undecided."""
    revealed = [vote for vote in votes if vote is not None]
    if len(revealed) < QUORUM:
        return Verdict.UNDECIDED
    accepting = sum(1 for vote in revealed if vote.acceptable)
    rejecting = len(revealed) - accepting
    if rejecting > accepting:
        return Verdict.PROVIDER_WRONG
    if accepting > rejecting:
        return Verdict.PROVIDER_RIGHT
    return Verdict.UNDECIDED


def forfeit_split(amount: int) -> ForfeitSplit:
    """How a forfeited stake or bond is shared: half burned, the rest 60/40 winner/majority jurors."""
    reward = amount * SLASH_REWARD_BPS // BPS
    jury = reward * JURY_SHARE_BPS // BPS
    return ForfeitSplit(winner=reward - jury, jury=jury, burned=amount - reward)


def provider_slash(stake: int, slash_amount: int) -> int:
    """The stake a provider found wrong loses: `slash_amount` (the registry's minimum stake), capped."""
    return min(stake, slash_amount)


def no_reveal_penalty(bond: int) -> int:
    return bond * NO_REVEAL_PENALTY_BPS // BPS


def settle(
    votes: Sequence[Vote | None],
    *,
    bond: int,
    provider_stake: int,
    slash_amount: int,
    juror_stakes: Sequence[int],
) -> Settlement:
    """Everything DisputeCourt.resolve moves for a jury's `votes` (one per juror, in draw order)."""
    if len(juror_stakes) != len(votes):
        raise ValueError("one stake per juror")
    verdict = tally(votes)
    penalties = tuple(
        0 if vote is not None else min(stake, no_reveal_penalty(bond))
        for vote, stake in zip(votes, juror_stakes, strict=True)
    )
    pot = sum(forfeit_split(p).winner + forfeit_split(p).jury for p in penalties)
    burned = sum(forfeit_split(p).burned for p in penalties)
    slashed = challenger_paid = provider_paid = 0
    if verdict is Verdict.PROVIDER_WRONG:
        slashed = provider_slash(provider_stake, slash_amount)
        split = forfeit_split(slashed)
        challenger_paid = bond + split.winner
        pot += split.jury
        burned += split.burned
    elif verdict is Verdict.PROVIDER_RIGHT:
        split = forfeit_split(bond)
        provider_paid = split.winner
        pot += split.jury
        burned += split.burned
    else:
        challenger_paid = bond
    paid = [_earns(vote, verdict) for vote in votes]
    share = pot // sum(paid) if any(paid) else 0
    burned += pot - share * sum(paid)
    return Settlement(
        verdict=verdict,
        provider_slashed=slashed,
        challenger_paid=challenger_paid,
        provider_paid=provider_paid,
        juror_pay=tuple(share if earns else 0 for earns in paid),
        juror_penalty=penalties,
        burned=burned,
    )


def _earns(vote: Vote | None, verdict: Verdict) -> bool:
    """Jurors who voted with the majority are paid; when undecided, every juror who revealed is."""
    if vote is None:
        return False
    if verdict is Verdict.PROVIDER_WRONG:
        return not vote.acceptable
    if verdict is Verdict.PROVIDER_RIGHT:
        return vote.acceptable
    return True


def dispute_id(job_id: Hash32, provider: Address) -> Hash32:
    """`keccak256(abi.encode(jobId, provider))`: one dispute per job and provider, ever."""
    return Hash32(keccak(encode(["bytes32", "address"], [job_id, provider])))


def commitment(dispute: Hash32, juror: Address, vote: Vote, salt: Hash32) -> Hash32:
    """What a juror commits to: binds the dispute and the juror, so a commitment cannot be replayed."""
    return Hash32(
        keccak(
            encode(
                ["bytes32", "address", "bool", "bytes32", "bytes32"],
                [dispute, juror, vote.acceptable, vote.output_hash, salt],
            )
        )
    )
