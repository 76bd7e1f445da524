"""Every RPC of the node's API against real nodes (see api_devnet), and every bad input refused with
a clear status while nothing stored changes."""

from __future__ import annotations

import asyncio
import hashlib

import grpc
import grpc.aio
import pytest
from api_devnet import MAX_INPUT_BYTES, PRICE_WEI, ApiDevnet, mlp_input
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from node.api.auth import read_token, token_path
from node.api.client import ApiClient
from node.api.errors import ApiCallFailed, InvalidRequest, NodeUnreachable
from node.api.server import api_grpc
from node.chain.eip712 import Eip712Domain, verify_receipt
from node.domain.service import JobFilter, JobSpec, JobView
from node.domain.state import JobState, PaymentPath, Role
from node.gen.gpunode.v1 import api_pb2 as pb
from node.types import Address, sha256


async def _client(target: str, *, token: str | None = None) -> ApiClient:
    return await ApiClient.connect(target, timeout_s=10.0, token=token)


def _pauper_token(api_devnet: ApiDevnet) -> str:
    return read_token(token_path(api_devnet.pauper_home))


async def _finished(api: ApiClient, job: JobView) -> list[JobView]:
    return [update async for update in api.watch_job(job.job_id)]


async def test_can_report_health_and_reflect_the_services(api_devnet: ApiDevnet) -> None:
    async with grpc.aio.insecure_channel(api_devnet.client_api) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "gpunode.v1.JobService", "gpunode.v1.NodeService"):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        answer = await call.read()
        names = {s.name for s in answer.list_services_response.service}
        assert {"gpunode.v1.JobService", "gpunode.v1.ProviderService", "gpunode.v1.ModelService"} <= names
        call.cancel()


async def test_can_show_the_node_and_its_peers(api_devnet: ApiDevnet) -> None:
    async with await _client(api_devnet.client_api) as api:
        status = await api.node_status()
        peers = await api.peers()
    assert status.address == api_devnet.client_address
    assert (status.chain_id, status.provider, status.database) == (api_devnet.chain_id, False, "sqlite")
    assert (status.registry_address, status.market_address) == (
        api_devnet.registry_address,
        api_devnet.market_address,
    )
    assert status.listen_addrs
    assert status.listen_addrs[0].startswith("/ip4/127.0.0.1/tcp/")
    providers = [p for p in peers if p.provider]
    assert [p.address for p in providers] == [api_devnet.provider_address]


async def test_can_run_a_voucher_job_end_to_end(api_devnet: ApiDevnet) -> None:
    data = mlp_input(seed=11)
    async with await _client(api_devnet.client_api) as api:
        job = await api.submit_job(JobSpec(model_id=api_devnet.model_id, input=data, max_price_wei=PRICE_WEI))
        assert job.state is JobState.SUBMITTED
        updates = await _finished(api, job)
        final = await api.get_job(job.job_id)
        listed = await api.list_jobs(JobFilter(role=Role.CLIENT))
    assert updates[-1].terminal
    assert [u.state for u in updates][-1] is JobState.SETTLED
    assert final.state is JobState.SETTLED
    assert final.provider == api_devnet.provider_address
    assert final.output is not None
    assert final.receipt is not None
    receipt = final.receipt.receipt
    assert final.receipt.verified
    assert receipt.output_hash == sha256(final.output)
    assert receipt.input_hash == sha256(data)
    assert receipt.model_id.hex() == api_devnet.model_id
    domain = Eip712Domain(api_devnet.chain_id, api_devnet.market_address)
    assert verify_receipt(domain, receipt, final.receipt.signature, Address(api_devnet.provider_address))
    assert job.job_id in [j.job_id for j in listed]
    assert all(j.output is None for j in listed), "listings leave outputs out"


async def test_can_run_an_escrow_job(api_devnet: ApiDevnet) -> None:
    async with await _client(api_devnet.client_api) as api:
        job = await api.submit_job(
            JobSpec(model_id=api_devnet.model_id, input=mlp_input(seed=12), payment=PaymentPath.ESCROW)
        )
        # An escrowed job settles only after the challenge window; its result is verified long before.
        async with asyncio.timeout(60):
            async for update in api.watch_job(job.job_id, omit_output=True):
                if update.state is JobState.VERIFIED or update.terminal:
                    break
        final = await api.get_job(job.job_id)
    assert final.payment is PaymentPath.ESCROW
    assert final.state is JobState.VERIFIED, final.error
    assert final.onchain_job_id
    assert final.receipt is not None
    assert final.receipt.verified


async def _refused(call: object) -> ApiCallFailed:
    with pytest.raises(ApiCallFailed) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def test_cannot_submit_for_an_unknown_model_and_nothing_is_stored(api_devnet: ApiDevnet) -> None:
    async with await _client(api_devnet.client_api) as api:
        before = await api.list_jobs()
        unknown = hashlib.sha256(b"no such model").hexdigest()
        error = await _refused(api.submit_job(JobSpec(model_id=unknown, input=mlp_input())))
        after = await api.list_jobs()
    assert error.code == "NOT_FOUND"
    assert f"no live provider offers model {unknown}" in error.message
    assert error.hint
    assert "check the model id" in error.hint
    assert after == before


async def test_cannot_submit_an_oversize_input_and_nothing_is_stored(api_devnet: ApiDevnet) -> None:
    async with await _client(api_devnet.client_api) as api:
        before = await api.list_jobs()
        big = b"\0" * (MAX_INPUT_BYTES + 1)
        error = await _refused(api.submit_job(JobSpec(model_id=api_devnet.model_id, input=big)))
        after = await api.list_jobs()
    assert error.code == "RESOURCE_EXHAUSTED"
    assert f"the input is {MAX_INPUT_BYTES + 1} bytes; at most {MAX_INPUT_BYTES}" in error.message
    assert after == before


async def test_cannot_submit_without_a_deposit_and_nothing_is_stored(api_devnet: ApiDevnet) -> None:
    async with await _client(api_devnet.pauper_api, token=_pauper_token(api_devnet)) as api:
        error = await _refused(api.submit_job(JobSpec(model_id=api_devnet.model_id, input=mlp_input())))
        listed = await api.list_jobs()
    assert error.code == "FAILED_PRECONDITION"
    assert "deposit" in error.message
    assert error.hint
    assert "deposit more" in error.hint
    assert listed == ()


async def test_cannot_cancel_a_finished_job_and_it_stays_as_it_was(api_devnet: ApiDevnet) -> None:
    async with await _client(api_devnet.client_api) as api:
        job = await api.submit_job(JobSpec(model_id=api_devnet.model_id, input=mlp_input(seed=13)))
        await _finished(api, job)
        before = await api.get_job(job.job_id)
        error = await _refused(api.cancel_job(job.job_id))
        after = await api.get_job(job.job_id)
    assert before.terminal
    assert error.code == "FAILED_PRECONDITION"
    assert f"already {before.state.value}" in error.message
    assert after == before


@pytest.mark.parametrize("bad_id", ["42", "0x" + "zz" * 32, "a" * 65])
async def test_cannot_name_a_job_by_a_malformed_id(api_devnet: ApiDevnet, bad_id: str) -> None:
    async with await _client(api_devnet.client_api) as api:
        for call in (api.get_job(bad_id), api.cancel_job(bad_id)):
            error = await _refused(call)
            assert error.code == "INVALID_ARGUMENT"
            assert "is not an id" in error.message
        with pytest.raises(ApiCallFailed, match="is not an id"):
            async for _ in api.watch_job(bad_id):
                pass


async def test_cannot_get_a_job_that_does_not_exist(api_devnet: ApiDevnet) -> None:
    missing = hashlib.sha256(b"never submitted").hexdigest()
    async with await _client(api_devnet.client_api) as api:
        error = await _refused(api.get_job(missing))
    assert error.code == "NOT_FOUND"
    assert missing in error.message


async def test_can_show_a_providers_status_earnings_and_settle(api_devnet: ApiDevnet) -> None:
    async with await _client(api_devnet.provider_api) as api:
        status = await api.provider_status()
        report = await api.settle()
        earnings = await api.earnings()
    assert status.address == api_devnet.provider_address
    assert (status.enabled, status.registered, status.active) == (True, True, True)
    assert status.price_per_job_wei == PRICE_WEI
    assert api_devnet.model_id in status.models
    # Vouchers are cumulative: one voucher per client covers every job it paid for so far.
    assert report.redeemed_wei % PRICE_WEI == 0
    assert earnings.unredeemed_voucher_wei == 0
    assert earnings.redeemed_voucher_wei >= report.redeemed_wei


async def test_cannot_ask_a_client_only_node_for_provider_status(api_devnet: ApiDevnet) -> None:
    async with await _client(api_devnet.client_api) as api:
        error = await _refused(api.provider_status())
    assert error.code == "FAILED_PRECONDITION"
    assert "does not serve jobs" in error.message
    assert error.hint
    assert "gpunode provider start" in error.hint


async def test_can_upload_a_model_and_list_it(api_devnet: ApiDevnet) -> None:
    async with await _client(api_devnet.provider_api) as api:
        seen: list[tuple[int, int]] = []
        model = await api.upload_model_dir(
            api_devnet.small_model_dir,
            progress=lambda sent, total: seen.append((sent, total)),
            chunk_bytes=1024,
        )
        listed = await api.list_models()
    assert model.model_id in [m.model_id for m in listed]
    assert api_devnet.model_id in [m.model_id for m in listed]
    assert seen
    assert seen[-1][0] == seen[-1][1] == model.size_bytes


async def test_cannot_upload_a_model_over_the_limit_and_the_store_is_unchanged(api_devnet: ApiDevnet) -> None:
    async with await _client(api_devnet.provider_api) as api:
        before = await api.list_models()
        error = await _refused(api.upload_model_dir(api_devnet.large_model_dir))
        after = await api.list_models()
    assert error.code == "RESOURCE_EXHAUSTED"
    assert "more than the 65536 this node accepts" in error.message
    assert error.hint
    assert "api.max_upload_bytes" in error.hint
    assert after == before


async def test_cannot_reach_a_node_that_is_not_there() -> None:
    with pytest.raises(NodeUnreachable, match=r"no node at 127\.0\.0\.1:9") as caught:
        await ApiClient.connect("127.0.0.1:9", timeout_s=0.5)
    assert caught.value.hint
    assert "gpunode provider start" in caught.value.hint


async def test_cannot_call_a_token_guarded_node_without_its_token(api_devnet: ApiDevnet) -> None:
    token_file = token_path(api_devnet.pauper_home)
    assert token_file.stat().st_mode & 0o777 == 0o600
    for token in (None, "not-the-token"):
        async with await _client(api_devnet.pauper_api, token=token) as api:
            error = await _refused(api.node_status())
            assert error.code == "UNAUTHENTICATED"
            assert str(token_file) in error.message
            with pytest.raises(ApiCallFailed, match="needs its token"):
                async for _ in api.watch_job("00" * 32):
                    pass
    async with await _client(api_devnet.pauper_api, token=_pauper_token(api_devnet)) as api:
        assert (await api.node_status()).address
    async with grpc.aio.insecure_channel(api_devnet.pauper_api) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_can_top_up_the_voucher_deposit(api_devnet: ApiDevnet) -> None:
    async with await _client(api_devnet.client_api) as api:
        first = await api.deposit(10**15)
        second = await api.deposit(3 * 10**15)
    assert second - first == 3 * 10**15


@pytest.mark.parametrize(("amount", "reason"), [("0", "changes nothing"), ("-5", "not an amount of wei")])
async def test_cannot_deposit_a_bad_amount(api_devnet: ApiDevnet, amount: str, reason: str) -> None:
    async with grpc.aio.insecure_channel(api_devnet.client_api) as channel:
        stub = api_grpc.JobServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Deposit(pb.DepositRequest(amount_wei=amount))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert reason in (caught.value.details() or "")


async def test_cannot_send_an_input_larger_than_one_api_message(api_devnet: ApiDevnet) -> None:
    api = await ApiClient.connect(api_devnet.client_api, max_message_bytes=2**20)
    async with api:
        before = await api.list_jobs()
        with pytest.raises(InvalidRequest, match="more than one API message carries") as caught:
            await api.submit_job(JobSpec(model_id=api_devnet.model_id, input=b"\0" * 2**20))
        after = await api.list_jobs()
    assert "api.max_message_bytes" in (caught.value.hint or "")
    assert after == before
