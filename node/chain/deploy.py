"""Deploy and wire the two contracts: registry, then market, then the registry told the market."""

from __future__ import annotations

from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from node.chain.artifacts import load_artifact
from node.chain.client import ChainClient
from node.chain.market import JobMarket
from node.chain.registry import ContractInputError, ProviderRegistry
from node.logging import get_logger

log = get_logger(__name__)

DEFAULT_CALLBACK_GAS_LIMIT = 200_000
# The market keeps job times in 32 bits and rejects longer windows.
MAX_CHALLENGE_WINDOW_S = 365 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Deployment:
    """A wired pair: the registry lets only `market` slash, the market claims against the registry."""

    registry: ProviderRegistry
    market: JobMarket


async def deploy_contracts(
    client: ChainClient,
    deployer: LocalAccount,
    *,
    min_stake: int,
    unstake_cooldown_s: int,
    challenge_window_s: int,
    withdrawal_delay_s: int,
    callback_gas_limit: int = DEFAULT_CALLBACK_GAS_LIMIT,
) -> Deployment:
    """Deploy ProviderRegistry and JobMarket from `deployer` and wire them together."""
    _check_parameters(
        min_stake, unstake_cooldown_s, challenge_window_s, withdrawal_delay_s, callback_gas_limit
    )
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
    log.info("contracts_deployed", registry=registry_address, market=market_address, chain_id=client.chain_id)
    return Deployment(registry=registry, market=JobMarket(client, market_address))


def _check_parameters(
    min_stake: int,
    unstake_cooldown_s: int,
    challenge_window_s: int,
    withdrawal_delay_s: int,
    callback_gas_limit: int,
) -> None:
    for name, value in (
        ("min_stake", min_stake),
        ("unstake_cooldown_s", unstake_cooldown_s),
        ("withdrawal_delay_s", withdrawal_delay_s),
        ("callback_gas_limit", callback_gas_limit),
    ):
        if not isinstance(value, int) or value < 0:
            raise ContractInputError(f"{name} must be a non-negative integer, got {value!r}")
    if not isinstance(challenge_window_s, int) or not 0 < challenge_window_s <= MAX_CHALLENGE_WINDOW_S:
        raise ContractInputError(
            f"challenge_window_s must be 1 to {MAX_CHALLENGE_WINDOW_S} seconds, got {challenge_window_s!r}"
        )
