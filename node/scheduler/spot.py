"""Spot checks, the pure part: how often a client re-runs a provider's job elsewhere, and who a
third run proves wrong. No I/O: the randomness is the caller's (its own secret source).

A provider is checked at `share` of its jobs, more while the client has seen few of them (a
newcomer, or a sybil identity fresh from the registry, cannot bank trust before it cheats), and
at `SUSPECT_SHARE` while a valid fraud record against it still asks for re-checks. A cheater is
exposed twice over: on its jobs sampled for a check, and on every check run it serves for
others (indistinguishable from other jobs, and always compared). With the default share
(`[client] spot_check_share`, 0.06) a provider falsifying 1% of its results is caught with
probability 0.99 within about 3,500 of its jobs (`scripts/sim_verification.py` measures it).
"""

from __future__ import annotations

import math
from dataclasses import replace
from enum import StrEnum

from node.domain.records import ProviderReputation

# A provider never seen gets (1 + NEWCOMER_BOOST) times the share; the boost halves by the time
# NEWCOMER_JOBS of its jobs were verified, and fades from there. Kept short: every pair of a
# client and a provider pays it once, and a market has many pairs.
NEWCOMER_BOOST = 1.0
NEWCOMER_JOBS = 5
# While a valid fraud record asks for re-checks, this share of the provider's jobs is checked.
SUSPECT_SHARE = 0.5
# Re-checks a valid fraud record asks for; records never add up (the most owed at once is this).
RECHECKS_PER_RECORD = 3


def check_share(base: float, reputation: ProviderReputation) -> float:
    """The probability with which a job of this provider is checked."""
    if reputation.excluded or base <= 0:
        return 0.0
    share = base * (1.0 + NEWCOMER_BOOST / (1.0 + reputation.jobs_seen / NEWCOMER_JOBS))
    if reputation.rechecks_due > 0:
        share = max(share, SUSPECT_SHARE)
    return min(share, 1.0)


def should_check(draw: float, base: float, reputation: ProviderReputation) -> bool:
    """Whether a job is checked, given `draw`, uniform in [0, 1) from the client's own secret source
    (drawn once the result is in: the provider cannot know beforehand which jobs are checked)."""
    return draw < check_share(base, reputation)


def expected_checks(base: float, jobs: int) -> float:
    """Checks one client expects over a new provider's first `jobs` jobs (no fraud records)."""
    # The sum of the share over jobs seen, in closed form (integral of the newcomer curve).
    boost = base * NEWCOMER_BOOST * NEWCOMER_JOBS * math.log1p(jobs / NEWCOMER_JOBS)
    return min(float(jobs), base * jobs + boost)


class Verdict(StrEnum):
    """What the comparisons of a checked job came to."""

    AGREED = "agreed"  # the second run agreed with the first
    FIRST_WRONG = "first_wrong"  # the third run agreed with the second: the first provider lied
    SECOND_WRONG = "second_wrong"  # the third agreed with the first: the checker lied
    UNDECIDED = "undecided"  # the third agreed with both or neither: nobody is blamed


def decide(first_vs_second: bool, first_vs_third: bool | None, second_vs_third: bool | None) -> Verdict:
    """Who lost, from whether the runs' results agree (None: that run did not happen)."""
    if first_vs_second:
        return Verdict.AGREED
    if first_vs_third is None or second_vs_third is None or first_vs_third == second_vs_third:
        return Verdict.UNDECIDED
    return Verdict.FIRST_WRONG if second_vs_third else Verdict.SECOND_WRONG


# reputation moves --------------------------------------------------------------------------------


def job_seen(reputation: ProviderReputation) -> ProviderReputation:
    return replace(reputation, jobs_seen=reputation.jobs_seen + 1)


def check_passed(reputation: ProviderReputation) -> ProviderReputation:
    return replace(
        reputation,
        checks_passed=reputation.checks_passed + 1,
        rechecks_due=max(reputation.rechecks_due - 1, 0),
    )


def check_lost(reputation: ProviderReputation, reason: str) -> ProviderReputation:
    """A check the provider lost to two others: excluded by this client from now on."""
    return replace(
        reputation,
        checks_failed=reputation.checks_failed + 1,
        excluded=True,
        excluded_reason=reason[:500],
    )


def fraud_reported(reputation: ProviderReputation) -> ProviderReputation:
    """A valid fraud record names the provider: re-check it more, never exclude it on that alone."""
    return replace(
        reputation,
        fraud_records_seen=reputation.fraud_records_seen + 1,
        rechecks_due=max(reputation.rechecks_due, RECHECKS_PER_RECORD),
    )
