"""Nodes restarted: state comes back from the database and the chain.

While the provider is down, its voucher is redeemed and its on-chain job finalized by someone
else (both are open to anyone holding the signatures, or to anyone at all); on restart it takes the
chain's word for it. The client's jobs, outputs and receipts survive its restart, and the next
voucher continues the cumulative amount where the last one stopped.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from e2e_support import CHALLENGE_WINDOW_S, PRICE_WEI, deployed, mlp_input, register

from node.domain.service import JobSpec, JobView
from node.domain.state import JobState, PaymentPath, Role
from node.storage import Database, StoredVoucher
from node.types import Address

pytestmark = [pytest.mark.integration]


def stored_voucher(url: str, client: Address, provider: Address) -> StoredVoucher | None:
    with Database.open(url) as db:
        return db.vouchers.get(client, provider)


async def finish(jobs: object, job_id: str, *states: JobState) -> JobView:
    async for view in jobs.watch(job_id):  # type: ignore[attr-defined]
        if view.state in states or view.terminal:
            return view
    raise AssertionError("watch ended early")


async def test_can_restart_nodes_and_recover_from_database_and_chain(tmp_path: Path) -> None:
    async with deployed(tmp_path) as devnet:
        await register(devnet, devnet.keys[1])

        async with devnet.client_node().running() as client:
            provider_settings = devnet.provider_settings(0, bootstrap=[client.host.addrs[0]])
            async with devnet.provider_node(
                0, bootstrap=[], settings=provider_settings
            ).running() as provider:
                await client.discovery.directory.wait_for(lambda d: len(d) >= 1, timeout_s=60)
                await client.client_jobs.deposit(10**16)
                jobs = client.services.jobs
                paid_by_voucher = await jobs.submit(JobSpec(model_id=devnet.model_id, input=mlp_input(1)))
                escrowed = await jobs.submit(
                    JobSpec(model_id=devnet.model_id, input=mlp_input(2), payment=PaymentPath.ESCROW)
                )
                before_voucher = await finish(jobs, paid_by_voucher.job_id, JobState.SETTLED)
                before_escrow = await finish(jobs, escrowed.job_id, JobState.VERIFIED)
                assert before_escrow.state is JobState.VERIFIED
                assert before_escrow.onchain_job_id is not None
                provider_key = provider.key

        # While both are down: the provider's voucher is redeemed and its on-chain job finalized.
        await devnet.chain.increase_time(CHALLENGE_WINDOW_S + 1)
        voucher = await asyncio.to_thread(
            stored_voucher, provider_settings.storage.url, client.key.address, provider_key.address
        )
        assert voucher is not None
        await devnet.market.redeem_vouchers(
            [(voucher.voucher, voucher.signature)], sender=provider_key.account
        )
        await devnet.market.finalize(
            bytes.fromhex(before_escrow.onchain_job_id), sender=devnet.keys[5].account
        )

        async with devnet.client_node().running() as client:
            jobs = client.services.jobs
            after_voucher = await jobs.get(paid_by_voucher.job_id)
            assert after_voucher.state is JobState.SETTLED
            assert after_voucher.output == before_voucher.output
            assert after_voucher.receipt == before_voucher.receipt
            # How the provider served us survived the restart too (the scheduler's memory).
            remembered = client.client_jobs.pipeline.matchmaker.stats[provider_key.address]
            assert remembered.successes == 2
            assert remembered.latency_ms is not None
            after_escrow = await jobs.get(escrowed.job_id)
            assert after_escrow.receipt == before_escrow.receipt
            assert after_escrow.output == before_escrow.output

            provider_settings.p2p.bootstrap[:] = [client.host.addrs[0]]
            async with devnet.provider_node(
                0, bootstrap=[], settings=provider_settings
            ).running() as provider:
                assert provider.services.provider is not None
                earnings = await provider.services.provider.earnings()
                # Reconciled at start: the chain paid the voucher; the finalized job is paid.
                assert earnings.unredeemed_voucher_wei == 0
                assert earnings.redeemed_voucher_wei == PRICE_WEI
                await provider.settlement.tick()
                provider_jobs = await provider.db.run(provider.db.jobs.list, role=Role.PROVIDER)
                assert {j.state for j in provider_jobs} == {JobState.PAID}

                await client.settlement.tick()
                assert (await jobs.get(escrowed.job_id)).state is JobState.SETTLED

                # The next voucher carries on from the stored cumulative amount.
                await client.discovery.directory.wait_for(
                    lambda d: (
                        (a := d.get(provider.key.address)) is not None and a.peer_id == provider.host.peer_id
                    ),
                    timeout_s=60,
                )
                third = await jobs.submit(JobSpec(model_id=devnet.model_id, input=mlp_input(3)))
                done = await finish(jobs, third.job_id, JobState.SETTLED)
                assert done.state is JobState.SETTLED, done.error
                report = await provider.services.provider.settle()
                assert report.redeemed_wei == PRICE_WEI
                assert await devnet.market.paid(client.key.address, provider.key.address) == 2 * PRICE_WEI
