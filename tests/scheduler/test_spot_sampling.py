"""The spot-check sampler and the third run's verdict: pure decisions over reputations."""

from __future__ import annotations

import math
import random

from node.domain.records import ProviderReputation
from node.scheduler.spot import (
    RECHECKS_PER_RECORD,
    SUSPECT_SHARE,
    Verdict,
    check_lost,
    check_passed,
    check_share,
    decide,
    expected_checks,
    fraud_reported,
    job_seen,
    should_check,
)
from node.types import Address

PROVIDER = Address("0x" + "ab" * 20)
SHARE = 0.09


def test_can_check_newcomers_more_than_providers_seen_often() -> None:
    new = ProviderReputation(PROVIDER)
    known = ProviderReputation(PROVIDER, jobs_seen=100_000)
    assert check_share(SHARE, new) == 2 * SHARE
    assert SHARE <= check_share(SHARE, known) < SHARE * 1.001


def test_cannot_be_checked_when_excluded_or_when_checks_are_off() -> None:
    assert check_share(SHARE, check_lost(ProviderReputation(PROVIDER), "lied")) == 0.0
    assert check_share(0.0, ProviderReputation(PROVIDER)) == 0.0
    assert not should_check(0.0, 0.0, ProviderReputation(PROVIDER))


def test_can_recheck_a_reported_provider_until_it_passes_the_rechecks_asked() -> None:
    reputation = ProviderReputation(PROVIDER, jobs_seen=10_000)
    for _ in range(5):  # records never add up
        reputation = fraud_reported(reputation)
    assert reputation.fraud_records_seen == 5
    assert reputation.rechecks_due == RECHECKS_PER_RECORD
    assert not reputation.excluded
    assert check_share(SHARE, reputation) == SUSPECT_SHARE
    for _ in range(RECHECKS_PER_RECORD):
        reputation = check_passed(reputation)
    assert check_share(SHARE, reputation) < 0.1


def test_can_sample_at_the_share_it_states() -> None:
    rng = random.Random(7)
    reputation = ProviderReputation(PROVIDER)
    checked = 0
    for _ in range(20_000):
        reputation = job_seen(reputation)
        checked += should_check(rng.random(), SHARE, reputation)
    assert abs(checked - expected_checks(SHARE, 20_000)) < 4 * math.sqrt(expected_checks(SHARE, 20_000))


def test_can_blame_only_the_run_the_third_one_contradicts() -> None:
    assert decide(True, None, None) is Verdict.AGREED
    assert decide(False, False, True) is Verdict.FIRST_WRONG
    assert decide(False, True, False) is Verdict.SECOND_WRONG
    assert decide(False, True, True) is Verdict.UNDECIDED
    assert decide(False, False, False) is Verdict.UNDECIDED
    assert decide(False, None, None) is Verdict.UNDECIDED
