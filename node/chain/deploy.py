"""Deploy and wire the contracts: registry, market, court, then the registry told the market and court."""

from __future__ import annotations

from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from node.chain.artifacts import load_artifact
from node.chain.client import ChainClient
from node.chain.court import DisputeCourt
from node.chain.market import JobMarket
from node.chain.registry import ContractInputError, ProviderRegistry
from node.logging import get_logger

log = get_logger(__name__)

DEFAULT_CALLBACK_GAS_LIMIT = 1_000_000
# The contracts' bounds on their constructor parameters, checked here first for a clear error.
MINUTE_S = 60
MIN_CHALLENGE_WINDOW_S = MINUTE_S
MAX_CHALLENGE_WINDOW_S = 365 * 24 * 3600
MIN_UNSTAKE_COOLDOWN_S = MINUTE_S
MAX_UNSTAKE_COOLDOWN_S = 365 * 24 * 3600
MIN_WITHDRAWAL_DELAY_S = MINUTE_S
MAX_WITHDRAWAL_DELAY_S = 90 * 24 * 3600
MIN_CALLBACK_GAS_LIMIT = 10_000
MAX_CALLBACK_GAS_LIMIT = 10_000_000
MAX_MIN_STAKE = 2**128 - 1
MIN_COURT_PERIOD_S = MINUTE_S
MAX_COURT_PERIOD_S = 30 * 24 * 3600
DEFAULT_COMMIT_PERIOD_S = 600
DEFAULT_REVEAL_PERIOD_S = 600
DEFAULT_VOUCHER_DISPUTE_WINDOW_S = 3600
# A challenger's bond as a share of the minimum stake: enough to pay a jury for a frivolous challenge.
DEFAULT_BOND_DIVISOR = 10


@dataclass(frozen=True, slots=True)
class Deployment:
    """Wired contracts: the registry lets only `market` and `court` slash; the market claims against
    the registry and holds disputed jobs for the court."""

    registry: ProviderRegistry
    market: JobMarket
    court: DisputeCourt


async def deploy_contracts(
    client: ChainClient,
    deployer: LocalAccount,
    *,
    min_stake: int,
    unstake_cooldown_s: int,
    challenge_window_s: int,
    withdrawal_delay_s: int,
    callback_gas_limit: int = DEFAULT_CALLBACK_GAS_LIMIT,
    dispute_bond: int | None = None,
    commit_period_s: int = DEFAULT_COMMIT_PERIOD_S,
    reveal_period_s: int = DEFAULT_REVEAL_PERIOD_S,
    voucher_dispute_window_s: int = DEFAULT_VOUCHER_DISPUTE_WINDOW_S,
) -> Deployment:
    """Deploy ProviderRegistry, JobMarket and DisputeCourt from `deployer` and wire them together."""
    bond = max(1, min_stake // DEFAULT_BOND_DIVISOR) if dispute_bond is None else dispute_bond
    _check_parameters(
        min_stake, unstake_cooldown_s, challenge_window_s, withdrawal_delay_s, callback_gas_limit
    )
    _check_court_parameters(bond, commit_period_s, reveal_period_s, voucher_dispute_window_s)
    registry_address = await client.deploy(
        load_artifact("ProviderRegistry"), min_stake, unstake_cooldown_s, sender=deployer
    )
    market_address = await client.deploy(
        load_artifact("JobMarket"),
        registry_address,
        challenge_window_s,
        withdrawal_delay_s,
        callback_gas_limit,
        sender=deployer,
    )
    registry = ProviderRegistry(client, registry_address)
    await registry.set_market(market_address, sender=deployer)
    court_address = await client.deploy(
        load_artifact("DisputeCourt"),
        registry_address,
        market_address,
        bond,
        commit_period_s,
        reveal_period_s,
        voucher_dispute_window_s,
        sender=deployer,
    )
    await registry.set_court(court_address, sender=deployer)
    log.info(
        "contracts_deployed",
        registry=registry_address,
        market=market_address,
        court=court_address,
        chain_id=client.chain_id,
    )
    return Deployment(
        registry=registry, market=JobMarket(client, market_address), court=DisputeCourt(client, court_address)
    )


def _check_parameters(
    min_stake: int,
    unstake_cooldown_s: int,
    challenge_window_s: int,
    withdrawal_delay_s: int,
    callback_gas_limit: int,
) -> None:
    for name, value, low, high in (
        ("min_stake", min_stake, 1, MAX_MIN_STAKE),
        ("unstake_cooldown_s", unstake_cooldown_s, MIN_UNSTAKE_COOLDOWN_S, MAX_UNSTAKE_COOLDOWN_S),
        ("challenge_window_s", challenge_window_s, MIN_CHALLENGE_WINDOW_S, MAX_CHALLENGE_WINDOW_S),
        ("withdrawal_delay_s", withdrawal_delay_s, MIN_WITHDRAWAL_DELAY_S, MAX_WITHDRAWAL_DELAY_S),
        ("callback_gas_limit", callback_gas_limit, MIN_CALLBACK_GAS_LIMIT, MAX_CALLBACK_GAS_LIMIT),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ContractInputError(f"{name} must be an integer from {low} to {high}, got {value!r}")


def _check_court_parameters(bond: int, *periods: int) -> None:
    if not isinstance(bond, int) or isinstance(bond, bool) or not 0 < bond <= MAX_MIN_STAKE:
        raise ContractInputError(f"dispute_bond must be an integer from 1 to {MAX_MIN_STAKE}, got {bond!r}")
    for value in periods:
        if not isinstance(value, int) or not MIN_COURT_PERIOD_S <= value <= MAX_COURT_PERIOD_S:
            raise ContractInputError(
                f"dispute periods must be {MIN_COURT_PERIOD_S} to {MAX_COURT_PERIOD_S} seconds, got {value!r}"
            )
