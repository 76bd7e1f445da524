"""ProviderRegistry: every function, what it allows and what it refuses, on both backends."""

from __future__ import annotations

import pytest
from contract_helpers import (
    METADATA_HASH,
    MIN_STAKE,
    PEER_ID,
    UNSTAKE_COOLDOWN_S,
    AdvanceTime,
    Roles,
    gas_cost,
    now,
    sha,
)
from eth_account.signers.local import LocalAccount

from node.chain.artifacts import load_artifact
from node.chain.client import ChainClient
from node.chain.deploy import Deployment
from node.chain.registry import ContractInputError, ProviderRegistry
from node.errors import TransactionReverted


async def test_can_register_with_the_minimum_stake(deployment: Deployment, roles: Roles) -> None:
    registry = deployment.registry
    registered = await registry.register(PEER_ID, METADATA_HASH, stake=MIN_STAKE, sender=roles.provider)
    assert registered.provider == roles.provider.address
    assert registered.peer_id == PEER_ID
    assert registered.stake == MIN_STAKE
    record = await registry.provider(roles.provider.address)
    assert record.registered
    assert record.stake == MIN_STAKE
    assert record.peer_id == PEER_ID
    assert record.metadata_hash == METADATA_HASH
    assert not record.unstaking
    assert await registry.is_active(roles.provider.address)
    # The market's copy, which claimJob reads, follows the registry.
    assert await deployment.market.provider_active(roles.provider.address)
    assert await registry.client.balance(registry.address) == MIN_STAKE


async def test_cannot_register_below_the_minimum_stake(deployment: Deployment, roles: Roles) -> None:
    with pytest.raises(TransactionReverted) as caught:
        await deployment.registry.register(PEER_ID, METADATA_HASH, stake=MIN_STAKE - 1, sender=roles.provider)
    assert caught.value.error_name == "StakeTooLow"
    assert caught.value.error_args == (MIN_STAKE - 1, MIN_STAKE)
    assert not await deployment.registry.is_active(roles.provider.address)
    assert await deployment.registry.client.balance(deployment.registry.address) == 0


async def test_cannot_register_twice(deployment: Deployment, provider: LocalAccount) -> None:
    with pytest.raises(TransactionReverted) as caught:
        await deployment.registry.register(PEER_ID, METADATA_HASH, stake=MIN_STAKE, sender=provider)
    assert caught.value.error_name == "AlreadyRegistered"
    assert (await deployment.registry.provider(provider.address)).stake == MIN_STAKE


@pytest.mark.parametrize("peer_id", [b"", bytes(65)], ids=["empty", "too-long"])
async def test_cannot_register_a_malformed_peer_id(
    deployment: Deployment, roles: Roles, peer_id: bytes
) -> None:
    registry = deployment.registry
    with pytest.raises(ContractInputError, match="peer_id"):
        await registry.register(peer_id, METADATA_HASH, stake=MIN_STAKE, sender=roles.provider)
    # The contract refuses it too, for callers that skip the wrapper.
    raw = registry.contract.functions.register(peer_id, METADATA_HASH)
    with pytest.raises(TransactionReverted) as caught:
        await registry.client.transact(raw, sender=roles.provider, value=MIN_STAKE)
    assert caught.value.error_name == "InvalidPeerId"
    assert caught.value.error_args == (len(peer_id),)


async def test_cannot_register_a_short_metadata_hash(deployment: Deployment, roles: Roles) -> None:
    client = deployment.registry.client
    nonce = await client.w3.eth.get_transaction_count(roles.provider.address)
    with pytest.raises(ContractInputError, match="metadata_hash must be 32 bytes"):
        await deployment.registry.register(
            PEER_ID, METADATA_HASH[:31], stake=MIN_STAKE, sender=roles.provider
        )
    assert await client.w3.eth.get_transaction_count(roles.provider.address) == nonce


async def test_cannot_register_before_the_market_is_set(client: ChainClient, roles: Roles) -> None:
    address = await client.deploy(
        load_artifact("ProviderRegistry"), MIN_STAKE, UNSTAKE_COOLDOWN_S, sender=roles.deployer
    )
    registry = ProviderRegistry(client, address)
    with pytest.raises(TransactionReverted) as caught:
        await registry.register(PEER_ID, METADATA_HASH, stake=MIN_STAKE, sender=roles.provider)
    assert caught.value.error_name == "MarketNotSet"


async def test_can_set_the_market_once(client: ChainClient, roles: Roles) -> None:
    address = await client.deploy(
        load_artifact("ProviderRegistry"), MIN_STAKE, UNSTAKE_COOLDOWN_S, sender=roles.deployer
    )
    registry = ProviderRegistry(client, address)
    await registry.set_market(roles.outsider.address, sender=roles.deployer)
    assert await registry.market() == roles.outsider.address
    with pytest.raises(TransactionReverted) as caught:
        await registry.set_market(roles.relayer.address, sender=roles.deployer)
    assert caught.value.error_name == "MarketAlreadySet"
    assert await registry.market() == roles.outsider.address


async def test_cannot_set_the_market_from_another_account(client: ChainClient, roles: Roles) -> None:
    address = await client.deploy(
        load_artifact("ProviderRegistry"), MIN_STAKE, UNSTAKE_COOLDOWN_S, sender=roles.deployer
    )
    registry = ProviderRegistry(client, address)
    with pytest.raises(TransactionReverted) as caught:
        await registry.set_market(roles.outsider.address, sender=roles.outsider)
    assert caught.value.error_name == "NotDeployer"
    with pytest.raises(TransactionReverted) as zero:
        await registry.set_market("0x" + "00" * 20, sender=roles.deployer)
    assert zero.value.error_name == "ZeroAddress"


async def test_can_add_stake(deployment: Deployment, provider: LocalAccount) -> None:
    added = await deployment.registry.add_stake(5, sender=provider)
    assert added.stake == MIN_STAKE + 5
    assert (await deployment.registry.provider(provider.address)).stake == MIN_STAKE + 5


async def test_cannot_add_stake_unregistered_empty_or_unstaking(
    deployment: Deployment, provider: LocalAccount, roles: Roles
) -> None:
    registry = deployment.registry
    with pytest.raises(TransactionReverted) as unregistered:
        await registry.add_stake(5, sender=roles.outsider)
    assert unregistered.value.error_name == "NotRegistered"
    with pytest.raises(TransactionReverted) as empty:
        await registry.client.transact(registry.contract.functions.addStake(), sender=provider, value=0)
    assert empty.value.error_name == "ZeroAmount"
    await registry.request_unstake(sender=provider)
    with pytest.raises(TransactionReverted) as unstaking:
        await registry.add_stake(5, sender=provider)
    assert unstaking.value.error_name == "AlreadyUnstaking"
    assert (await registry.provider(provider.address)).stake == MIN_STAKE


async def test_can_update_metadata(deployment: Deployment, provider: LocalAccount) -> None:
    updated = await deployment.registry.update_metadata(sha(b"v2"), sender=provider)
    assert updated.metadata_hash == sha(b"v2")
    assert (await deployment.registry.provider(provider.address)).metadata_hash == sha(b"v2")


async def test_cannot_update_metadata_unregistered(deployment: Deployment, roles: Roles) -> None:
    with pytest.raises(TransactionReverted) as caught:
        await deployment.registry.update_metadata(sha(b"v2"), sender=roles.outsider)
    assert caught.value.error_name == "NotRegistered"


async def test_can_request_unstake_which_deactivates_at_once(
    deployment: Deployment, provider: LocalAccount
) -> None:
    requested = await deployment.registry.request_unstake(sender=provider)
    assert requested.unstake_at == await now(deployment.registry.client) + UNSTAKE_COOLDOWN_S
    assert not await deployment.registry.is_active(provider.address)
    assert not await deployment.market.provider_active(provider.address)


async def test_cannot_request_unstake_twice_or_unregistered(
    deployment: Deployment, provider: LocalAccount, roles: Roles
) -> None:
    await deployment.registry.request_unstake(sender=provider)
    with pytest.raises(TransactionReverted) as twice:
        await deployment.registry.request_unstake(sender=provider)
    assert twice.value.error_name == "AlreadyUnstaking"
    with pytest.raises(TransactionReverted) as unregistered:
        await deployment.registry.request_unstake(sender=roles.outsider)
    assert unregistered.value.error_name == "NotRegistered"


async def test_can_withdraw_stake_after_the_cooldown_and_register_again(
    deployment: Deployment, provider: LocalAccount, advance_time: AdvanceTime
) -> None:
    registry = deployment.registry
    await registry.request_unstake(sender=provider)
    await advance_time(registry.client, UNSTAKE_COOLDOWN_S + 1)
    before = await registry.client.balance(provider.address)
    withdrawn = await registry.withdraw_stake(sender=provider)
    assert withdrawn.amount == MIN_STAKE
    cost = await gas_cost(registry.client, withdrawn.tx.tx_hash)
    assert await registry.client.balance(provider.address) == before + MIN_STAKE - cost
    assert await registry.client.balance(registry.address) == 0
    assert not (await registry.provider(provider.address)).registered
    await registry.register(PEER_ID, METADATA_HASH, stake=MIN_STAKE, sender=provider)
    assert await registry.is_active(provider.address)
    assert await deployment.market.provider_active(provider.address)


async def test_cannot_withdraw_stake_early_or_without_unstaking(
    deployment: Deployment, provider: LocalAccount, roles: Roles, advance_time: AdvanceTime
) -> None:
    registry = deployment.registry
    with pytest.raises(TransactionReverted) as not_unstaking:
        await registry.withdraw_stake(sender=provider)
    assert not_unstaking.value.error_name == "NotUnstaking"
    await registry.request_unstake(sender=provider)
    await advance_time(registry.client, UNSTAKE_COOLDOWN_S // 2)
    with pytest.raises(TransactionReverted) as early:
        await registry.withdraw_stake(sender=provider)
    assert early.value.error_name == "CooldownNotOver"
    with pytest.raises(TransactionReverted) as unregistered:
        await registry.withdraw_stake(sender=roles.outsider)
    assert unregistered.value.error_name == "NotRegistered"
    assert await registry.client.balance(registry.address) == MIN_STAKE


async def test_cannot_slash_unless_market(
    deployment: Deployment, provider: LocalAccount, roles: Roles
) -> None:
    registry = deployment.registry
    for caller in (roles.deployer, provider, roles.outsider):
        fn = registry.contract.functions.slash(provider.address, MIN_STAKE)
        with pytest.raises(TransactionReverted) as caught:
            await registry.client.transact(fn, sender=caller)
        assert caught.value.error_name == "NotMarket"
        assert caught.value.error_args == (caller.address,)
    assert (await registry.provider(provider.address)).stake == MIN_STAKE


async def test_can_read_parameters(deployment: Deployment) -> None:
    registry = deployment.registry
    assert await registry.min_stake() == MIN_STAKE
    assert await registry.unstake_cooldown() == UNSTAKE_COOLDOWN_S
    assert await registry.market() == deployment.market.address
    assert await registry.burned_stake() == 0
