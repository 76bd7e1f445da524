"""The pure dispute rules: tally, shares, payouts; honest non-determinism never loses."""

from __future__ import annotations

import hashlib

import pytest

from node.domain.disputes import (
    JURY_SIZE,
    QUORUM,
    Verdict,
    Vote,
    commitment,
    dispute_id,
    forfeit_split,
    juror_accepts,
    no_reveal_penalty,
    settle,
    tally,
)
from node.types import Address, Hash32

MINE = Hash32(hashlib.sha256(b"juror output").digest())
THEIRS = Hash32(hashlib.sha256(b"provider output").digest())
BOND = 10**17
STAKE = 10**18
JUROR = Address("0x" + "11" * 20)


def accept() -> Vote:
    return Vote(acceptable=True, output_hash=MINE)


def reject() -> Vote:
    return Vote(acceptable=False, output_hash=MINE)


def test_can_tally_a_majority_either_way() -> None:
    assert tally([reject(), reject(), reject(), accept(), accept()]) is Verdict.PROVIDER_WRONG
    assert tally([accept(), accept(), accept(), reject(), None]) is Verdict.PROVIDER_RIGHT


def test_cannot_decide_without_a_quorum_or_on_a_tie() -> None:
    assert tally([reject()] * (QUORUM - 1) + [None] * (JURY_SIZE - QUORUM + 1)) is Verdict.UNDECIDED
    assert tally([reject(), reject(), accept(), accept(), None]) is Verdict.UNDECIDED


def test_can_accept_an_output_within_tolerance_under_another_profile() -> None:
    # An honest provider on other threads or another device: the hashes differ, the values agree.
    assert juror_accepts(MINE, THEIRS, same_profile=False, within_tolerance=True)
    assert not juror_accepts(MINE, THEIRS, same_profile=False, within_tolerance=False)


def test_cannot_accept_a_different_output_under_the_same_profile() -> None:
    assert not juror_accepts(MINE, THEIRS, same_profile=True, within_tolerance=True)
    assert juror_accepts(MINE, MINE, same_profile=True, within_tolerance=False)


def test_can_split_a_forfeit_without_creating_wei() -> None:
    for amount in (0, 1, 7, BOND, STAKE, 10**18 + 3):
        split = forfeit_split(amount)
        assert split.winner + split.jury + split.burned == amount
        assert split.burned >= amount // 2


def test_can_settle_a_wrong_provider() -> None:
    votes = [reject(), reject(), reject(), accept(), None]
    settlement = settle(votes, bond=BOND, provider_stake=STAKE, slash_amount=STAKE, juror_stakes=[STAKE] * 5)
    assert settlement.verdict is Verdict.PROVIDER_WRONG
    assert settlement.provider_slashed == STAKE
    assert settlement.challenger_paid > BOND
    assert settlement.juror_pay[:3] == (settlement.juror_pay[0],) * 3
    assert settlement.juror_pay[0] > 0
    assert settlement.juror_pay[3:] == (0, 0)
    assert settlement.juror_penalty == (0, 0, 0, 0, no_reveal_penalty(BOND))
    moved_in = STAKE + BOND + no_reveal_penalty(BOND)
    moved_out = settlement.challenger_paid + sum(settlement.juror_pay) + settlement.burned
    assert moved_in == moved_out


def test_cannot_profit_from_a_frivolous_challenge() -> None:
    votes = [accept()] * JURY_SIZE
    settlement = settle(votes, bond=BOND, provider_stake=STAKE, slash_amount=STAKE, juror_stakes=[STAKE] * 5)
    assert settlement.verdict is Verdict.PROVIDER_RIGHT
    assert settlement.provider_slashed == 0
    assert settlement.challenger_paid == 0
    assert settlement.provider_paid + sum(settlement.juror_pay) + settlement.burned == BOND


def test_can_return_the_bond_when_undecided() -> None:
    settlement = settle(
        [None] * JURY_SIZE, bond=BOND, provider_stake=STAKE, slash_amount=STAKE, juror_stakes=[STAKE] * 5
    )
    assert settlement.verdict is Verdict.UNDECIDED
    assert settlement.challenger_paid == BOND
    assert settlement.provider_slashed == 0
    assert all(p == no_reveal_penalty(BOND) for p in settlement.juror_penalty)


def test_cannot_settle_with_a_stake_missing() -> None:
    with pytest.raises(ValueError, match="one stake per juror"):
        settle([accept()], bond=BOND, provider_stake=STAKE, slash_amount=STAKE, juror_stakes=[])


def test_can_bind_a_commitment_to_its_dispute_and_juror() -> None:
    dispute = dispute_id(Hash32(bytes(32)), JUROR)
    salt = Hash32(bytes(range(32)))
    base = commitment(dispute, JUROR, accept(), salt)
    assert base != commitment(dispute, Address("0x" + "22" * 20), accept(), salt)
    assert base != commitment(dispute_id(Hash32(b"\x01" * 32), JUROR), JUROR, accept(), salt)
    assert base != commitment(dispute, JUROR, reject(), salt)
