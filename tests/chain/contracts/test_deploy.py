"""deploy_contracts wires the pair; the market refuses bad constructor arguments and foreign status."""

from __future__ import annotations

import pytest
from contract_helpers import CHALLENGE_WINDOW_S, MIN_STAKE, UNSTAKE_COOLDOWN_S, WITHDRAWAL_DELAY_S, Roles

from node.chain.artifacts import load_artifact
from node.chain.client import ChainClient
from node.chain.deploy import DEFAULT_CALLBACK_GAS_LIMIT, Deployment, deploy_contracts
from node.chain.registry import ZERO_ADDRESS, ContractInputError
from node.errors import TransactionReverted


async def test_can_deploy_a_wired_pair(deployment: Deployment, client: ChainClient) -> None:
    market, registry = deployment.market, deployment.registry
    assert await registry.market() == market.address
    assert await client.call(market.contract.functions.registry()) == registry.address
    assert await client.call(market.contract.functions.challengeWindow()) == CHALLENGE_WINDOW_S
    assert await client.call(market.contract.functions.withdrawalDelay()) == WITHDRAWAL_DELAY_S
    assert await client.call(market.contract.functions.callbackGasLimit()) == DEFAULT_CALLBACK_GAS_LIMIT
    assert market.domain().verifying_contract == market.address
    assert market.domain().chain_id == client.chain_id


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"challenge_window_s": 0}, "challenge_window_s"),
        ({"challenge_window_s": 366 * 24 * 3600}, "challenge_window_s"),
        ({"min_stake": -1}, "min_stake"),
        ({"withdrawal_delay_s": 1.5}, "withdrawal_delay_s"),
    ],
)
async def test_cannot_deploy_with_bad_parameters(
    client: ChainClient, roles: Roles, overrides: dict[str, object], match: str
) -> None:
    parameters: dict[str, object] = {
        "min_stake": MIN_STAKE,
        "unstake_cooldown_s": UNSTAKE_COOLDOWN_S,
        "challenge_window_s": CHALLENGE_WINDOW_S,
        "withdrawal_delay_s": WITHDRAWAL_DELAY_S,
        **overrides,
    }
    nonce = await client.w3.eth.get_transaction_count(roles.deployer.address)
    with pytest.raises(ContractInputError, match=match):
        await deploy_contracts(client, roles.deployer, **parameters)  # type: ignore[arg-type]
    assert await client.w3.eth.get_transaction_count(roles.deployer.address) == nonce


@pytest.mark.parametrize(
    ("registry", "window", "error_name"), [("zero", 60, "ZeroAddress"), ("ok", 0, "InvalidChallengeWindow")]
)
async def test_cannot_construct_the_market_with_bad_arguments(
    deployment: Deployment, client: ChainClient, roles: Roles, registry: str, window: int, error_name: str
) -> None:
    address = ZERO_ADDRESS if registry == "zero" else deployment.registry.address
    with pytest.raises(TransactionReverted) as caught:
        await client.deploy(load_artifact("JobMarket"), address, window, 60, 100_000, sender=roles.deployer)
    assert caught.value.error_name == error_name


async def test_cannot_set_provider_status_unless_registry(deployment: Deployment, roles: Roles) -> None:
    market = deployment.market
    fn = market.contract.functions.setProviderActive(roles.outsider.address, True)
    with pytest.raises(TransactionReverted) as caught:
        await market.client.transact(fn, sender=roles.outsider)
    assert caught.value.error_name == "NotRegistry"
    assert not await market.provider_active(roles.outsider.address)
