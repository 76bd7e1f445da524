"""Precision in adverts: a provider serves a causal LM and its int8 variant as two priced offers,
each advertised with its task and precision; a client asks for the model in int8 and runs the
variant, which it checks against both manifests, so no provider can pass another model off as one."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
import pytest_asyncio
from e2e_support import PRICE_WEI, Devnet, deployed, register, serve_cheaply

from node.discovery.advert import ModelPrice
from node.domain.service import JobSpec
from node.domain.state import JobState
from node.executor.errors import UnknownModel
from node.executor.hf_model import read_hf_dir
from node.executor.hf_requests import parse_generation
from node.executor.hf_tiny import write_tiny
from node.executor.store import ModelStore
from node.p2p.job_messages import JobRejected
from node.types import Hash32, sha256

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

REQUEST = json.dumps({"prompt": "Hello", "max_tokens": 8, "temperature": 0}).encode()


class Variants:
    def __init__(self, devnet: Devnet, full: str, int8: str, weights_id: str) -> None:
        self.devnet, self.full, self.int8, self.weights_id = devnet, full, int8, weights_id


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def variants(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Variants]:
    root = tmp_path_factory.mktemp("precision")
    llama = write_tiny("llama", root / "tiny-llama")
    full, int8 = read_hf_dir(llama)[0], read_hf_dir(llama, quantization="int8")[0]
    async with deployed(root / "net") as devnet, AsyncExitStack() as stack:
        devnet.model_dir, devnet.model_id = llama, full.model_id
        client = await stack.enter_async_context(devnet.client_node().running())
        devnet.client = client
        bootstrap = [client.host.addrs[0]]
        await register(devnet, devnet.keys[1])
        settings = devnet.provider_settings(0, bootstrap=bootstrap, model_dir=llama)
        store = ModelStore(settings.executor.model_dir, settings.executor.model_cache_bytes)
        store.import_hf_dir(llama, quantization="int8")
        provider = devnet.provider_node(0, bootstrap=bootstrap, settings=settings)
        devnet.providers = [await stack.enter_async_context(provider.running())]
        await client.discovery.directory.wait_for(lambda d: len(d) >= 1, timeout_s=60.0)
        await client.client_jobs.deposit(10**17)
        yield Variants(devnet, full.model_id, int8.model_id, full.weights_id)


async def settled(variants: Variants, job_id: str) -> JobState:
    client = variants.devnet.client
    assert client is not None
    async for view in client.services.jobs.watch(job_id):
        if view.terminal:
            return view.state
    raise AssertionError("the watch ended before the job did")


async def test_can_see_each_models_task_and_precision_in_the_providers_advert(variants: Variants) -> None:
    client = variants.devnet.client
    assert client is not None
    peers = await client.services.node.peers()
    offered = {m.model_id: m for p in peers if p.provider for m in p.models}
    assert (offered[variants.full].task, offered[variants.full].precision) == ("generate", "fp32")
    assert (offered[variants.int8].task, offered[variants.int8].precision) == ("generate", "int8")
    advert = client.discovery.directory.live()[0]
    weights = {p.model_id.hex(): p.weights_id for p in advert.offer.prices}
    assert weights[variants.full] == weights[variants.int8] == Hash32(bytes.fromhex(variants.weights_id))


async def test_can_ask_for_a_model_in_int8_and_run_its_variant(variants: Variants) -> None:
    client = variants.devnet.client
    assert client is not None
    view = await client.services.jobs.submit(JobSpec(model_id=variants.full, input=REQUEST, precision="int8"))
    assert view.model_id == variants.int8
    assert await settled(variants, view.job_id) is JobState.SETTLED
    done = await client.services.jobs.get(view.job_id)
    assert done.output is not None
    assert parse_generation(done.output).completion_tokens > 0
    plain = await client.services.jobs.submit(
        JobSpec(model_id=variants.full, input=REQUEST, precision="fp32")
    )
    assert plain.model_id == variants.full


async def test_cannot_ask_for_a_precision_nobody_offers(variants: Variants) -> None:
    client = variants.devnet.client
    assert client is not None
    before = {view.job_id for view in await client.services.jobs.list()}
    with pytest.raises(UnknownModel, match=r"in bf16 \(offered: fp32\)"):
        await client.services.jobs.submit(JobSpec(model_id=variants.full, input=REQUEST, precision="bf16"))
    # Nothing stored, nothing paid (jobs of earlier tests may still be settling).
    assert {view.job_id for view in await client.services.jobs.list()} == before


async def test_cannot_pass_another_model_off_as_a_variant(variants: Variants) -> None:
    """A registered provider advertises, cheaper, a model it says is made of the same files in int8.
    Its claim does not survive the manifest check: the client runs the honest variant."""
    devnet, client = variants.devnet, variants.devnet.client
    assert client is not None
    asked: list[object] = []

    async def take_anything(peer: str, request: object) -> AsyncIterator[JobRejected]:
        asked.append(request)
        yield JobRejected("busy", "never runs anything")

    impostor = ModelPrice(
        sha256(b"some other model"),
        PRICE_WEI // 4,
        task="generate",
        precision="int8",
        weights_id=Hash32(bytes.fromhex(variants.weights_id)),
    )
    async with AsyncExitStack() as stack:
        await serve_cheaply(devnet, stack, devnet.keys[5], take_anything, price=impostor)  # type: ignore[arg-type]
        await client.discovery.directory.wait_for(lambda d: len(d) >= 2, timeout_s=60)
        view = await client.services.jobs.submit(
            JobSpec(model_id=variants.full, input=REQUEST, precision="int8")
        )
        assert view.model_id == variants.int8
        assert await settled(variants, view.job_id) is JobState.SETTLED
    assert asked == []
