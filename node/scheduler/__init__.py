"""Scheduler: pure functions that pick providers for a client's job and admit jobs on a provider.

Client side: `CandidateIndex.build(candidates).choose(requirements, now=…, rng=…, tried=…)` picks
the provider for a job's next attempt (reassignment is the same call with the tried providers);
`rank`/`filter_candidates`/`score` are the scanning reference; `backoff_until` spaces out retries
of failing providers. Under load, `estimate` gives each eligible provider's expected completion
(queue included) from live signals and `place` picks among the good ones; `place_holds` picks the few
asked to hold a job a slot (node.scheduler.load), and a provider's `HoldBook` grants its holds as
slots free (node.scheduler.holds).
Provider side: `admit` for jobs sent over the overlay, `should_claim` for on-chain jobs.
Spot checks: `should_check` samples which results a client re-runs elsewhere, `decide` names
who a third run proves wrong (node.scheduler.spot).
No I/O: clocks and randomness are passed in.
"""

from node.scheduler.admission import (
    AdmissionPolicy,
    Admitted,
    Claim,
    ClaimContext,
    JobOffer,
    OnChainJob,
    ProviderLoad,
    Rejected,
    RejectionCode,
    admit,
    should_claim,
)
from node.scheduler.backoff import backoff_until
from node.scheduler.candidates import (
    DeviceOffer,
    JobRequirements,
    ModelOffer,
    ProviderCandidate,
    ProviderStats,
)
from node.scheduler.holds import HoldBook, HoldKey
from node.scheduler.index import DEFAULT_EXPLORATION, CandidateIndex, Choice, NoCandidate
from node.scheduler.load import (
    DEFAULT_HOLDS,
    Estimate,
    LoadSignals,
    Option,
    Placement,
    estimate,
    market_priors,
    observe,
    place,
    place_holds,
)
from node.scheduler.scoring import (
    DEFAULT_WEIGHTS,
    ModelMarket,
    ScoreWeights,
    filter_candidates,
    ineligibility,
    next_candidate,
    rank,
    score,
)

__all__ = [
    "DEFAULT_EXPLORATION",
    "DEFAULT_HOLDS",
    "DEFAULT_WEIGHTS",
    "AdmissionPolicy",
    "Admitted",
    "CandidateIndex",
    "Choice",
    "Claim",
    "ClaimContext",
    "DeviceOffer",
    "Estimate",
    "HoldBook",
    "HoldKey",
    "JobOffer",
    "JobRequirements",
    "LoadSignals",
    "ModelMarket",
    "ModelOffer",
    "NoCandidate",
    "OnChainJob",
    "Option",
    "Placement",
    "ProviderCandidate",
    "ProviderLoad",
    "ProviderStats",
    "Rejected",
    "RejectionCode",
    "ScoreWeights",
    "admit",
    "backoff_until",
    "estimate",
    "filter_candidates",
    "ineligibility",
    "market_priors",
    "next_candidate",
    "observe",
    "place",
    "place_holds",
    "rank",
    "score",
    "should_claim",
]
