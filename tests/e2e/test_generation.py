"""Text generation through the marketplace: a client node, a provider node serving a Hugging Face
causal LM in its sandbox, tokens streamed over `/gpunode/job/1` as they are produced, the receipt
signing the whole output; a client that goes away mid-stream stops the generation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from e2e_support import PRICE_WEI, Devnet, running_devnet

from node.app import Node
from node.chain.eip712 import recover_receipt_signer, sign_voucher
from node.chain.market import voucher_job_id
from node.domain.service import JobSpec, JobView
from node.domain.state import JobState, ProviderState
from node.executor.hf_model import read_hf_dir
from node.executor.hf_requests import parse_generation
from node.executor.hf_tiny import write_tiny
from node.p2p.job_messages import JobProgress, JobRejected, JobRequest, JobResult, JobTokens, VoucherPayment
from node.p2p.job_protocol import JobClient
from node.provider.jobs import CLIENT_GONE
from node.storage import JobRecord
from node.types import Hash32, Voucher

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def devnet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Devnet]:
    root = tmp_path_factory.mktemp("generation")
    # A context of 2048 tokens: long enough a generation to be stopped midway.
    model_dir = write_tiny("gpt2", root / "tiny-gpt2", context=2048)
    manifest, _ = read_hf_dir(model_dir)
    async with running_devnet(root / "net", providers=1, model=(model_dir, manifest.model_id)) as net:
        yield net


def client_of(devnet: Devnet) -> Node:
    assert devnet.client is not None
    return devnet.client


async def settled(node: Node, job_id: str) -> JobView:
    async for view in node.services.jobs.watch(job_id):
        if view.terminal:
            return view
    raise AssertionError("the watch ended before the job did")


async def test_can_stream_a_generation_to_the_client_and_sign_all_of_it(devnet: Devnet) -> None:
    client = client_of(devnet)
    request = {"prompt": "Hello", "max_tokens": 48, "temperature": 0.7, "seed": 11}
    view = await client.services.jobs.submit(
        JobSpec(model_id=devnet.model_id, input=json.dumps(request).encode(), stream=True)
    )
    pieces = [piece async for piece in client.services.jobs.follow_text(view.job_id)]
    done = await settled(client, view.job_id)
    assert done.state is JobState.SETTLED, done
    assert done.output is not None
    result = parse_generation(done.output)
    assert len(pieces) > 1
    assert "".join(pieces) == result.text  # what streamed is what the receipt signed


async def test_can_reproduce_a_seeded_generation_through_the_marketplace(devnet: Devnet) -> None:
    client = client_of(devnet)
    request = json.dumps({"prompt": "Seeded", "max_tokens": 32, "temperature": 1.0, "seed": 5}).encode()
    outputs = []
    for _ in range(2):
        view = await client.services.jobs.submit(JobSpec(model_id=devnet.model_id, input=request))
        done = await settled(client, view.job_id)
        assert done.output is not None
        outputs.append(parse_generation(done.output).token_ids)
    assert outputs[0] == outputs[1]


async def test_cannot_keep_a_provider_generating_after_the_client_goes_away(devnet: Devnet) -> None:
    """The client drops the stream after the first tokens: the provider's worker stops generating
    at once (its next job does not wait for 2000 tokens)."""
    client, provider = client_of(devnet), devnet.providers[0]
    long_request = json.dumps({"prompt": "a", "max_tokens": 2000, "temperature": 0}).encode()
    loop = asyncio.get_running_loop()
    started = loop.time()
    whole = await client.services.jobs.submit(JobSpec(model_id=devnet.model_id, input=long_request))
    assert (await settled(client, whole.job_id)).state is JobState.SETTLED
    full_s = loop.time() - started

    latest = client.client_jobs.pipeline.vouchers.latest(provider.key.address)
    assert latest is not None  # the job above was paid by voucher
    owed = latest.voucher.cumulative_amount

    def direct(job_id: bytes, job_input: bytes, *, stream: bool, pays: bool = True) -> JobRequest:
        nonlocal owed
        owed += PRICE_WEI if pays else 0
        voucher = Voucher(client.key.address, provider.key.address, owed)
        signature = sign_voucher(client.key.private_key, devnet.market.domain(), voucher)
        return JobRequest(
            job_id=Hash32(job_id * 32),
            model_id=Hash32(bytes.fromhex(devnet.model_id)),
            input=job_input,
            payment=VoucherPayment(voucher.client, voucher.provider, voucher.cumulative_amount, signature),
            max_price_wei=PRICE_WEI,
            deadline_ms=2**42,
            stream=stream,
        )

    jobs = JobClient(client.host)
    request = direct(b"\x51", long_request, stream=True)
    first_text = asyncio.Event()
    sending = asyncio.create_task(
        jobs.request_job(
            provider.host.peer_id, request, lambda event: isinstance(event, JobTokens) and first_text.set()
        )
    )
    texting = asyncio.create_task(first_text.wait())
    async with asyncio.timeout(60):
        await asyncio.wait([sending, texting], return_when=asyncio.FIRST_COMPLETED)
    assert not sending.done(), sending.result()
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending
    stopped = loop.time()
    short = json.dumps({"prompt": "a", "max_tokens": 1}).encode()
    after = await jobs.request_job(provider.host.peer_id, direct(b"\x52", short, stream=False))
    assert isinstance(after, JobResult), after
    assert loop.time() - stopped < full_s / 2


async def test_cannot_get_streamed_tokens_for_free_by_leaving_mid_stream(devnet: Devnet) -> None:
    """The attacker streams a long generation, drops the stream once text has come, and sends its
    next job with a voucher for no more than it had signed before, hoping the abandoned job was
    forgiven. The provider stopped generating at once, signed a receipt for what it made, and
    still counts the job against the voucher: the free job is refused and the voucher pays."""
    client, provider = client_of(devnet), devnet.providers[0]
    owed = await _owed(client, provider)

    def direct(job_id: bytes, job_input: bytes, *, stream: bool, pays: bool = True) -> JobRequest:
        nonlocal owed
        owed += PRICE_WEI if pays else 0
        voucher = Voucher(client.key.address, provider.key.address, owed)
        signature = sign_voucher(client.key.private_key, devnet.market.domain(), voucher)
        return JobRequest(
            job_id=Hash32(job_id * 32),
            model_id=Hash32(bytes.fromhex(devnet.model_id)),
            input=job_input,
            payment=VoucherPayment(voucher.client, voucher.provider, voucher.cumulative_amount, signature),
            max_price_wei=PRICE_WEI,
            deadline_ms=2**42,
            stream=stream,
        )

    jobs = JobClient(client.host)
    long_request = json.dumps({"prompt": "a", "max_tokens": 2000, "temperature": 0}).encode()
    request = direct(b"\x61", long_request, stream=True)
    got: list[str] = []
    first_text = asyncio.Event()

    def on_event(event: object) -> None:
        if isinstance(event, JobTokens):
            got.append(event.text)
            first_text.set()

    sending = asyncio.create_task(jobs.request_job(provider.host.peer_id, request, on_event))
    async with asyncio.timeout(60):
        await first_text.wait()
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending

    kept_as = voucher_job_id(client.key.address, request.job_id)
    ended = (ProviderState.DELIVERED, ProviderState.PAID, ProviderState.FAILED)
    record = await _until(provider, kept_as, lambda r: r.state in ended)
    assert record.state is ProviderState.DELIVERED, record
    stored = await provider.db.run(provider.db.receipts.get, kept_as, provider.key.address)
    assert stored is not None
    assert (
        recover_receipt_signer(devnet.market.domain(), stored.receipt, stored.signature)
        == provider.key.address
    )

    short = json.dumps({"prompt": "a", "max_tokens": 1}).encode()
    free = await jobs.request_job(provider.host.peer_id, direct(b"\x62", short, stream=False, pays=False))
    assert isinstance(free, JobRejected), free
    assert free.code == "voucher_too_low"
    paid = await jobs.request_job(provider.host.peer_id, direct(b"\x63", short, stream=False))
    assert isinstance(paid, JobResult), paid
    assert "".join(got)  # what the attacker got was paid for


async def test_can_leave_before_anything_streams_and_pay_nothing(devnet: Devnet) -> None:
    """A client that drops a job before any text came (here: not streamed at all) is not
    charged: the provider stops generating at once, the job fails and no longer counts against
    its vouchers."""
    client, provider = client_of(devnet), devnet.providers[0]
    owed = await _owed(client, provider)
    await _reserve_for(devnet, client, provider, owed + 2 * PRICE_WEI)
    jobs = JobClient(client.host)
    bounded = json.dumps({"prompt": "a", "max_tokens": 300, "temperature": 0}).encode()
    request = _voucher_request(devnet, client, provider, b"\x71", bounded, owed + PRICE_WEI)
    loop = asyncio.get_running_loop()
    await _leave_once_running(jobs, provider, request)
    left = loop.time()

    kept_as = voucher_job_id(client.key.address, request.job_id)
    record = await _until(provider, kept_as, _ended)
    ended_s = loop.time() - left
    assert record.state is ProviderState.FAILED, record
    assert CLIENT_GONE in (record.status.reason or "")
    # Nothing is owed for it: the next job needs a voucher for one price more than before, not two.
    short = json.dumps({"prompt": "a", "max_tokens": 1}).encode()
    after = await jobs.request_job(
        provider.host.peer_id, _voucher_request(devnet, client, provider, b"\x72", short, owed + PRICE_WEI)
    )
    assert isinstance(after, JobResult), after
    assert ended_s < provider.settings.p2p.read_timeout_s / 4, (
        f"it ended {ended_s:.2f} s after the client left"
    )


async def test_cannot_keep_the_worker_busy_by_starting_generations_and_leaving(devnet: Devnet) -> None:
    """The attacker starts more long generations than the model has batch slots, none streamed,
    waits until they run, and leaves them all, hoping to hold the slots (and the decoding steps)
    for nobody until each would have been handed over. Each leaving ends its generation at once:
    every job fails unpaid (the voucher that covered them all now covers an honest job besides),
    and the honest job that follows finds the worker free."""
    client, provider = client_of(devnet), devnet.providers[0]
    burst = provider.settings.executor.max_batch + 2
    owed = await _owed(client, provider)
    await _reserve_for(devnet, client, provider, owed + burst * PRICE_WEI)
    jobs = JobClient(client.host)
    long_request = json.dumps({"prompt": "a", "max_tokens": 2000, "temperature": 0}).encode()
    requests = [
        _voucher_request(
            devnet, client, provider, bytes([0x80 + i]), long_request, owed + (i + 1) * PRICE_WEI
        )
        for i in range(burst)
    ]
    loop = asyncio.get_running_loop()
    await asyncio.gather(*(_leave_once_running(jobs, provider, request) for request in requests))
    left = loop.time()

    short = json.dumps({"prompt": "a", "max_tokens": 8, "temperature": 0}).encode()
    honest = _voucher_request(devnet, client, provider, b"\x7f", short, owed + burst * PRICE_WEI)
    after = await jobs.request_job(provider.host.peer_id, honest)
    honest_s = loop.time() - left
    assert isinstance(after, JobResult), after  # not voucher_too_low: the abandoned jobs cost nothing
    for request in requests:
        record = await _until(provider, voucher_job_id(client.key.address, request.job_id), _ended)
        assert record.state is ProviderState.FAILED, record
        assert CLIENT_GONE in (record.status.reason or "")
    # Well under the keepalive interval, at which a provider that missed the leaving would write
    # to the dead streams and learn of it only then.
    assert honest_s < provider.settings.p2p.read_timeout_s / 4, f"the honest job took {honest_s:.2f} s"


async def _leave_once_running(jobs: JobClient, provider: Node, request: JobRequest) -> None:
    """Send `request` and reset its stream as soon as the provider says it runs."""
    running = asyncio.Event()
    sending = asyncio.create_task(
        jobs.request_job(
            provider.host.peer_id, request, lambda e: isinstance(e, JobProgress) and running.set()
        )
    )
    waiting = asyncio.create_task(running.wait())
    async with asyncio.timeout(60):
        await asyncio.wait([sending, waiting], return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    assert not sending.done(), sending.result()
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending


def _voucher_request(
    devnet: Devnet, client: Node, provider: Node, tag: bytes, job_input: bytes, cumulative: int
) -> JobRequest:
    voucher = Voucher(client.key.address, provider.key.address, cumulative)
    return JobRequest(
        job_id=Hash32(tag * 32),
        model_id=Hash32(bytes.fromhex(devnet.model_id)),
        input=job_input,
        payment=VoucherPayment(
            voucher.client,
            voucher.provider,
            cumulative,
            sign_voucher(client.key.private_key, devnet.market.domain(), voucher),
        ),
        max_price_wei=PRICE_WEI,
        deadline_ms=2**42,
        stream=False,
    )


async def _reserve_for(devnet: Devnet, client: Node, provider: Node, cumulative: int) -> None:
    """Make vouchers from `client` to `provider` worth `cumulative` wei payable from its deposit."""
    await devnet.market.cover_vouchers(provider.key.address, cumulative, sender=client.key.account)


async def _owed(client: Node, provider: Node) -> int:
    latest = client.client_jobs.pipeline.vouchers.latest(provider.key.address)
    stored = await provider.db.run(provider.db.vouchers.get, client.key.address, provider.key.address)
    amounts = [v.voucher.cumulative_amount for v in (latest, stored) if v is not None]
    return max(amounts, default=0)


def _ended(record: JobRecord) -> bool:
    return record.status.terminal


async def _until(node: Node, job_id: Hash32, done: Callable[[JobRecord], object]) -> JobRecord:
    with node.job_store.watch(job_id) as queue:
        record = await node.db.run(node.db.jobs.find, job_id)
        assert record is not None
        async with asyncio.timeout(60):
            while not done(record):
                record = await queue.get()
    return record
