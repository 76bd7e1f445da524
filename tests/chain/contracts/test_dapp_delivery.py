"""dApps: each job names its callback gas (paid for by its price) and whether its output must be
delivered on chain, so consumers that store outputs work and plain accounts get the bytes too."""

from __future__ import annotations

import pytest
from contract_helpers import MODEL_ID, PRICE, Roles, now, request, signed_receipt
from eth_account.signers.local import LocalAccount

from node.chain.artifacts import load_artifact
from node.chain.deploy import Deployment
from node.chain.market import job_requested_from_log
from node.chain.registry import events_in
from node.errors import TransactionReverted

OUTPUT_200 = bytes(range(200))


async def test_can_store_a_200_byte_output_in_the_example_consumer(
    deployment: Deployment, roles: Roles, provider: LocalAccount
) -> None:
    market = deployment.market
    client = market.client
    artifact = load_artifact("ExampleConsumer")
    consumer = client.contract(
        artifact, await client.deploy(artifact, market.address, MODEL_ID, sender=roles.requester)
    )
    asked = await client.transact(
        consumer.functions.ask(b"a question", await now(client) + 600), sender=roles.requester, value=PRICE
    )
    job = job_requested_from_log(
        events_in(market.contract.events.JobRequested(), asked)[0],
        delivery=events_in(market.contract.events.JobDelivery(), asked)[0],
    )
    assert job.callback_gas == await client.call(consumer.functions.CALLBACK_GAS())
    assert job.output_on_chain
    await market.claim_job(job.job_id, sender=provider)
    receipt, signature = signed_receipt(market.domain(), job.terms, provider, OUTPUT_200)
    # A relayer cannot strip the output the consumer asked for.
    with pytest.raises(TransactionReverted) as stripped:
        await market.submit_result(job.terms, receipt, signature, sender=roles.relayer)
    assert stripped.value.error_name == "OutputRequired"
    result = await market.submit_result(
        job.terms, receipt, signature, output=OUTPUT_200, sender=roles.relayer
    )
    assert not result.callback_failed
    assert await client.call(consumer.functions.answers(job.job_id)) == OUTPUT_200


async def test_can_get_the_output_on_chain_as_a_plain_account(
    deployment: Deployment, roles: Roles, provider: LocalAccount
) -> None:
    market = deployment.market
    job = await market.request_job(
        MODEL_ID,
        price=PRICE,
        deadline=await now(market.client) + 600,
        input=b"pixels",
        output_on_chain=True,
        sender=roles.requester,
    )
    assert job.output_on_chain
    assert job.callback_gas == 0
    assert (await market.job_requests(job.tx.block_number, job.tx.block_number))[0].output_on_chain
    assert (await market.job(job.job_id)).output_on_chain
    await market.claim_job(job.job_id, sender=provider)
    receipt, signature = signed_receipt(market.domain(), job.terms, provider, OUTPUT_200)
    result = await market.submit_result(job.terms, receipt, signature, output=OUTPUT_200, sender=provider)
    assert result.output == OUTPUT_200


@pytest.mark.parametrize(("callback", "gas"), [("none", 1), ("consumer", 0), ("consumer", 10**7)])
async def test_cannot_ask_for_callback_gas_out_of_bounds(
    deployment: Deployment, roles: Roles, callback: str, gas: int
) -> None:
    market = deployment.market
    client = market.client
    artifact = load_artifact("ExampleConsumer")
    target = None
    if callback == "consumer":
        target = await client.deploy(artifact, market.address, MODEL_ID, sender=roles.requester)
    with pytest.raises(TransactionReverted) as caught:
        await market.request_job(
            MODEL_ID,
            price=PRICE,
            deadline=await now(client) + 600,
            input=b"x",
            callback=target,
            callback_gas=gas,
            sender=roles.requester,
        )
    assert caught.value.error_name == "InvalidCallbackGas"


async def test_can_request_by_hash_without_delivery_terms(deployment: Deployment, roles: Roles) -> None:
    job = await request(deployment, roles.requester)
    assert job.callback_gas == 0
    assert not job.output_on_chain
