"""Contract fixtures: a fresh wired deployment per test and a registered provider.

Everything here runs on the backend `chain_backend` picks (embedded py-evm and anvil).
"""

from __future__ import annotations

import pytest
import pytest_asyncio
from contract_helpers import (
    CHALLENGE_WINDOW_S,
    METADATA_HASH,
    MIN_STAKE,
    PEER_ID,
    UNSTAKE_COOLDOWN_S,
    WITHDRAWAL_DELAY_S,
    Roles,
)
from eth_account.signers.local import LocalAccount

from node.chain.client import ChainClient
from node.chain.deploy import Deployment, deploy_contracts


@pytest.fixture
def roles(accounts: list[LocalAccount]) -> Roles:
    return Roles(*accounts[:8])


@pytest_asyncio.fixture
async def deployment(client: ChainClient, roles: Roles) -> Deployment:
    return await deploy_contracts(
        client,
        roles.deployer,
        min_stake=MIN_STAKE,
        unstake_cooldown_s=UNSTAKE_COOLDOWN_S,
        challenge_window_s=CHALLENGE_WINDOW_S,
        withdrawal_delay_s=WITHDRAWAL_DELAY_S,
    )


@pytest_asyncio.fixture
async def provider(deployment: Deployment, roles: Roles) -> LocalAccount:
    await deployment.registry.register(PEER_ID, METADATA_HASH, stake=MIN_STAKE, sender=roles.provider)
    return roles.provider
