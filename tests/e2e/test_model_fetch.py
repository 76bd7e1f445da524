"""Models and large inputs and outputs over `/gpunode/blob/1`, between real nodes: a provider runs a
model it did not hold, fetched from the client that names it (checked, installed, warmed, one fetch
for concurrent jobs, the cold start paid once); inputs and outputs above the inline limit travel by
reference. Every way a fetch can go wrong fails the job with a clear reason, installs nothing, costs
the client nothing and does not count against the provider. Escrowed jobs the same: the escrow holds
the cold start; a failed fetch leaves the job unclaimed and its escrow comes back whole; a provider
that claims and never delivers is paid nothing; a dApp's job for a model no provider holds is not
claimed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, contextmanager
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from e2e_support import (
    CHALLENGE_WINDOW_S,
    PRICE_WEI,
    Devnet,
    deployed,
    make_builtin_model,
    mlp_input,
    register,
    serve_cheaply,
)
from safetensors.numpy import load, save

from node.app import Node
from node.chain.job_logs import ChainOutcome, chain_outcome
from node.chain.market import JobStatus as ChainJobStatus
from node.discovery.advert import Device, DeviceKind, Offer
from node.domain.service import JobSpec, JobView
from node.domain.state import JobState, PaymentPath, Role
from node.errors import ChainError, SchedulerError
from node.executor.errors import InvalidInput, UnknownModel
from node.executor.hf_requests import parse_generation
from node.executor.hf_tiny import write_tiny
from node.executor.manifest import HfSpec, ModelManifest
from node.p2p.blob_protocol import serve_blobs
from node.p2p.blob_store import CHUNK_SIZE, BlobSource, BlobSources, Manifest
from node.p2p.job_messages import (
    INLINE_LIMIT,
    INVALID_INPUT,
    MODEL_UNAVAILABLE,
    BlobRef,
    JobAccepted,
    JobFailed,
    JobRejected,
    JobRequest,
    JobResponse,
    OnchainPayment,
    VoucherPayment,
)
from node.p2p.job_protocol import JobClient
from node.provider.delivery import MIN_RUN_S, SUBMIT_ROOM_S
from node.provider.model_manifests import ModelManifests
from node.settlement.terms import escrow_terms
from node.types import FetchTerms, Hash32, sha256

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

COLD_START_WEI = 10 * PRICE_WEI
# The second provider fetches models of at most this many bytes.
SMALL_LIMIT = 64 * 1024
BIG = {"max_input_bytes": 32 * 2**20}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def net(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Devnet]:
    """A client and two providers that fetch models they lack: the first up to its default limit,
    the second up to `SMALL_LIMIT`; both hold the marketplace's own model."""
    root = tmp_path_factory.mktemp("fetch")
    async with deployed(root / "net") as devnet, AsyncExitStack() as stack:
        place = devnet.place
        client_settings = place.settings("client", provider=False, executor=BIG)
        client = await stack.enter_async_context(place.node(client_settings, devnet.keys[8]).running())
        devnet.client = client
        providers = []
        for i in range(2):
            settings = place.settings(
                f"provider{i}", provider=True, bootstrap=[client.host.addrs[0]], executor=BIG
            )
            settings.provider.cold_start_price_wei = COLD_START_WEI
            settings.provider.max_fetched_models = 50
            if i == 1:
                settings.provider.max_fetch_bytes = SMALL_LIMIT
            await register(devnet, devnet.keys[1 + i])
            providers.append(place.node(settings, devnet.keys[1 + i]))
        devnet.providers = list(
            await asyncio.gather(*(stack.enter_async_context(p.running()) for p in providers))
        )
        await client.discovery.directory.wait_for(lambda d: len(d) >= 2, timeout_s=60.0)
        await client.client_jobs.deposit(10**17)
        yield devnet


def client_of(net: Devnet) -> Node:
    assert net.client is not None
    return net.client


async def own_model(net: Devnet, name: str, **config: int) -> str:
    """A built-in model only the client holds (its own weights, so its own id)."""
    out = net.root / name
    model_id = await asyncio.to_thread(make_builtin_model, out, "mlp", name, **config)
    await client_of(net).services.models.add(out)
    return model_id


async def settled(node: Node, job_id: str) -> JobView:
    async for view in node.services.jobs.watch(job_id):
        if view.terminal:
            return view
    raise AssertionError("the watch ended before the job did")


async def run(net: Devnet, model_id: str, job_input: bytes, provider: Node) -> JobView:
    client = client_of(net)
    spec = JobSpec(model_id=model_id, input=job_input, provider=provider.key.address, max_price_wei=10**15)
    view = await client.services.jobs.submit(spec)
    return await settled(client, view.job_id)


def held(node: Node, model_id: str) -> bool:
    try:
        node.model_store.path(model_id)
    except UnknownModel:
        return False
    return True


async def refused(net: Devnet, model_id: str, job_input: bytes, provider: Node, reason: str) -> JobView:
    """The job fails saying `reason`; the provider installs nothing, the client's vouchers promise
    nothing more and the provider's record with the client stays clean."""
    client = client_of(net)
    vouchers = client.client_jobs.pipeline.vouchers
    owed = vouchers.owed(provider.key.address)
    done = await run(net, model_id, job_input, provider)
    assert done.state is JobState.FAILED, done
    assert done.error is not None
    assert reason in done.error, done.error
    assert not held(provider, model_id)
    assert vouchers.owed(provider.key.address) == owed  # the next job is covered by what it signed
    stats = client.client_jobs.pipeline.matchmaker.stats.get(provider.key.address)
    assert stats is None or stats.consecutive_failures == 0
    return done


@contextmanager
def serving(client: Node, source: BlobSource) -> Any:
    """The client's blob server answers from `source` (an attacker's), then from its own again."""
    serve_blobs(client.host, source)
    try:
        yield
    finally:
        serve_blobs(client.host, BlobSources(ModelManifests(client.model_store), client.shared_blobs))


# a client runs its own model on a provider that did not hold it ---------------------------------


async def test_can_run_its_own_model_on_a_provider_that_fetches_it(net: Devnet) -> None:
    provider = net.providers[0]
    model_id = await own_model(net, "own-mlp", hidden=128)
    assert not held(provider, model_id)
    first = await run(net, model_id, mlp_input(1), provider)
    assert first.state is JobState.SETTLED, first
    assert first.price_wei == PRICE_WEI + COLD_START_WEI  # the cold start, once
    assert held(provider, model_id)
    assert load(first.output or b"")["output"].shape == (2, 16)
    # Its advert now lists the model warm at the plain price: the next job pays no cold start.
    key = Hash32(bytes.fromhex(model_id))
    directory = client_of(net).discovery.directory
    await directory.wait_for(
        lambda d: (a := d.get(provider.key.address)) is not None and a.price_for(key) is not None, 30.0
    )
    second = await run(net, model_id, mlp_input(2), provider)
    assert second.state is JobState.SETTLED, second
    assert second.price_wei == PRICE_WEI
    assert provider.provider is not None
    assert provider.provider.fetcher is not None
    assert [c.model_id for c in provider.provider.fetcher.cold_starts].count(model_id) == 1


async def test_can_generate_with_its_own_hugging_face_model_on_a_provider_that_fetches_it(
    net: Devnet,
) -> None:
    """A Hugging Face directory (safetensors, config, tokenizer) passes the same checks fetched as
    `models add` runs on it, and the provider's sandboxed worker generates with it."""
    provider = net.providers[0]
    model_dir = await asyncio.to_thread(write_tiny, "gpt2", net.root / "own-gpt2", context=128)
    model_id = (await client_of(net).services.models.add(model_dir)).model_id
    request = json.dumps({"prompt": "Hello", "max_tokens": 8, "seed": 3}).encode()
    done = await run(net, model_id, request, provider)
    assert done.state is JobState.SETTLED, done
    assert parse_generation(done.output or b"").completion_tokens > 0
    assert held(provider, model_id)


async def test_can_share_one_fetch_among_concurrent_jobs_for_one_model(net: Devnet) -> None:
    provider = net.providers[0]
    model_id = await own_model(net, "shared-mlp", hidden=96)
    done = await asyncio.gather(*(run(net, model_id, mlp_input(seed), provider) for seed in range(3)))
    assert [d.state for d in done] == [JobState.SETTLED] * 3, done
    assert provider.provider is not None
    assert provider.provider.fetcher is not None
    assert [c.model_id for c in provider.provider.fetcher.cold_starts].count(model_id) == 1


async def test_can_fetch_a_model_from_a_provider_that_holds_it(net: Devnet) -> None:
    """A peer advertising the model serves it when the client does not (here: the client is told
    to hold nothing; the first provider fetched the model before and lists it)."""
    holder, fetcher = net.providers
    model_id = await own_model(net, "relayed-mlp", hidden=16)
    assert (await run(net, model_id, mlp_input(3), holder)).state is JobState.SETTLED
    key = Hash32(bytes.fromhex(model_id))
    directory = fetcher.discovery.directory
    await directory.wait_for(
        lambda d: (a := d.get(holder.key.address)) is not None and a.price_for(key) is not None, 30.0
    )
    with serving(client_of(net), BlobSources()):  # the client serves nothing now
        done = await run(net, model_id, mlp_input(4), fetcher)
    assert done.state is JobState.SETTLED, done
    assert held(fetcher, model_id)


# large inputs and outputs by reference ----------------------------------------------------------


async def test_can_send_an_input_above_the_inline_limit_by_reference(net: Devnet) -> None:
    rows = INLINE_LIMIT // (64 * 4) + 100
    job_input = mlp_input(5, rows=rows)
    assert len(job_input) > INLINE_LIMIT
    done = await run(net, net.model_id, job_input, net.providers[0])
    assert done.state is JobState.SETTLED, done
    assert load(done.output or b"")["output"].shape == (rows, 16)
    assert len(client_of(net).shared_blobs) == 0  # given to the provider only while it ran


async def test_can_get_an_output_above_the_inline_limit_by_reference(net: Devnet) -> None:
    model_id = await own_model(net, "wide-mlp", out_features=2048)
    rows = INLINE_LIMIT // (2048 * 4) + 10
    done = await run(net, model_id, mlp_input(6, rows=rows), net.providers[0])
    assert done.state is JobState.SETTLED, done
    output = load(done.output or b"")["output"]
    assert output.shape == (rows, 2048)
    assert output.dtype == np.float32
    assert done.receipt is not None


# bad models and bad peers ------------------------------------------------------------------------


class Tampering:
    """A blob source that flips a byte of one blob as it serves it."""

    def __init__(self, inner: BlobSource, victim: Hash32) -> None:
        self.inner, self.victim = inner, victim

    def manifest(self, digest: Hash32, peer: str) -> Manifest | None:
        return self.inner.manifest(digest, peer)

    def read(self, digest: Hash32, offset: int, length: int) -> bytes:
        data = self.inner.read(digest, offset, length)
        if digest == self.victim and data:
            return bytes([data[0] ^ 1]) + data[1:]
        return data


class CutOff(Tampering):
    """A blob source that stops serving one blob after its first chunk."""

    def read(self, digest: Hash32, offset: int, length: int) -> bytes:
        if digest == self.victim and offset >= CHUNK_SIZE:
            raise ConnectionResetError("the peer went away")
        return self.inner.read(digest, offset, length)


def weights_of(net: Devnet, model_id: str) -> Hash32:
    manifest = client_of(net).model_store.get(model_id)
    return Hash32(bytes.fromhex(manifest.files["weights.safetensors"]))


async def test_cannot_install_a_model_whose_files_a_peer_tampered_with(net: Devnet) -> None:
    client, provider = client_of(net), net.providers[0]
    model_id = await own_model(net, "tampered-mlp", hidden=48)
    own = BlobSources(ModelManifests(client.model_store), client.shared_blobs)
    with serving(client, Tampering(own, weights_of(net, model_id))):
        await refused(net, model_id, mlp_input(7), provider, "could not be fetched")
    # Served honestly, the same model runs: nothing of the tampered attempt stuck.
    assert (await run(net, model_id, mlp_input(7), provider)).state is JobState.SETTLED


async def test_cannot_install_a_model_from_a_peer_that_stops_mid_transfer(net: Devnet) -> None:
    client, provider = client_of(net), net.providers[0]
    model_id = await own_model(net, "cut-mlp", out_features=1024)
    assert (client.model_store.path(model_id) / "weights.safetensors").stat().st_size > CHUNK_SIZE
    own = BlobSources(ModelManifests(client.model_store), client.shared_blobs)
    with serving(client, CutOff(own, weights_of(net, model_id))):
        await refused(net, model_id, mlp_input(8), provider, "could not be fetched")


async def test_cannot_fetch_a_model_nobody_serves(net: Devnet) -> None:
    model_id = await own_model(net, "unserved-mlp", hidden=24)
    with serving(client_of(net), BlobSources()):  # the client holds it, but serves nothing
        await refused(net, model_id, mlp_input(9), net.providers[0], "could not be fetched from any peer")


async def test_cannot_submit_a_model_nobody_holds(net: Devnet) -> None:
    """A model id neither the client nor any provider holds (a typo) is refused at once."""
    nobody = sha256(b"a model nobody holds").hex()
    with pytest.raises(UnknownModel, match="no live provider offers model"):
        await client_of(net).services.jobs.submit(JobSpec(model_id=nobody, input=mlp_input(9)))


async def test_cannot_fetch_a_model_above_the_providers_limit(net: Devnet) -> None:
    model_id = await own_model(net, "big-mlp", hidden=512)
    size = (client_of(net).model_store.path(model_id) / "weights.safetensors").stat().st_size
    assert size > SMALL_LIMIT
    await refused(net, model_id, mlp_input(10), net.providers[1], f"larger than the {SMALL_LIMIT} bytes")


def hf_files(config: dict[str, Any], **extra: bytes) -> dict[str, bytes]:
    weights = {"transformer.wte.weight": np.zeros((8, 4), dtype=np.float32)}
    files = {
        "config.json": json.dumps(config).encode(),
        "tokenizer.json": b'{"version": "1.0"}',
        "model.safetensors": bytes(save(weights)),
    }
    return files | extra


GPT2 = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_positions": 64}


def share_crafted(net: Devnet, provider: Node, files: dict[str, bytes]) -> str:
    """The attacking client hands the provider a hand-made Hugging Face model: its manifest (which
    claims an allowed GPT-2) and files, shared over its own blob server."""
    manifest = ModelManifest(
        name="crafted",
        format="huggingface",
        files={name: sha256(data).hex() for name, data in files.items()},
        hf=HfSpec(
            task="generate",
            architecture="GPT2LMHeadModel",
            model_type="gpt2",
            precision="F32",
            context_length=64,
        ),
    )
    shared = client_of(net).shared_blobs
    for data in (manifest.canonical_bytes(), *files.values()):
        shared.share(data, provider.host.peer_id)
    # The attacker's node sends jobs for the model although its store does not hold it.
    matchmaker = client_of(net).client_jobs.pipeline.matchmaker
    crafted, holds = Hash32(bytes.fromhex(manifest.model_id)), matchmaker.held_here
    matchmaker.held_here = lambda model_id: model_id == crafted or holds(model_id)
    return manifest.model_id


PROMPT = json.dumps({"prompt": "hi", "max_tokens": 2}).encode()


async def test_cannot_install_a_fetched_model_carrying_a_pickle(net: Devnet) -> None:
    provider = net.providers[0]
    pickle = b"\x80\x04\x95" + b"cos\nsystem\n(S'echo owned'\ntR."
    model_id = share_crafted(net, provider, hf_files(GPT2, **{"pytorch_model.bin": pickle}))
    await refused(net, model_id, PROMPT, provider, "pytorch_model.bin is not a file")


async def test_cannot_install_a_fetched_model_of_an_architecture_not_allowed(net: Devnet) -> None:
    provider = net.providers[0]
    config = GPT2 | {"architectures": ["EvilForCausalLM"]}
    model_id = share_crafted(net, provider, hf_files(config))
    await refused(net, model_id, PROMPT, provider, "architecture 'EvilForCausalLM' is not one this node runs")


async def test_cannot_install_a_fetched_model_asking_for_remote_code(net: Devnet) -> None:
    provider = net.providers[0]
    config = GPT2 | {"auto_map": {"AutoModelForCausalLM": "evil.EvilModel"}}
    model_id = share_crafted(net, provider, hf_files(config))
    await refused(net, model_id, PROMPT, provider, "asks for remote code")


# large inputs that do not arrive ----------------------------------------------------------------


async def send_by_reference(net: Devnet, ref: BlobRef) -> JobRejected:
    """A request whose input is `ref`, sent by the client's own host; the provider must refuse
    it before it stores or charges anything."""
    client, provider = client_of(net), net.providers[0]
    assert provider.provider is not None
    before = await provider.db.run(provider.db.jobs.list, role=Role.PROVIDER, limit=10_000)
    payment = VoucherPayment(client.key.address, provider.key.address, PRICE_WEI, b"\x01" * 65)
    request = JobRequest(
        job_id=Hash32(os.urandom(32)),
        model_id=Hash32(bytes.fromhex(net.model_id)),
        input=ref,
        payment=payment,
        max_price_wei=PRICE_WEI,
        deadline_ms=int((time.time() + 30) * 1000),
    )
    outcome = await JobClient(client.host).request_job(provider.host.peer_id, request)
    assert isinstance(outcome, JobRejected), outcome
    assert outcome.code == INVALID_INPUT  # the client's fault: no provider is blamed for it
    after = await provider.db.run(provider.db.jobs.list, role=Role.PROVIDER, limit=10_000)
    assert len(after) == len(before)
    return outcome


async def test_cannot_send_an_input_reference_nobody_serves(net: Devnet) -> None:
    rejected = await send_by_reference(net, BlobRef(sha256(b"an input nobody serves"), 5 * 2**20))
    assert "could not be fetched from the client" in rejected.reason


async def test_cannot_send_an_input_whose_bytes_do_not_match_its_reference(net: Devnet) -> None:
    client, provider = client_of(net), net.providers[0]
    job_input = mlp_input(11, rows=INLINE_LIMIT // 256 + 10)
    digest = client.shared_blobs.share(job_input, provider.host.peer_id)
    try:
        own = BlobSources(ModelManifests(client.model_store), client.shared_blobs)
        with serving(client, Tampering(own, digest)):
            rejected = await send_by_reference(net, BlobRef(digest, len(job_input)))
        assert "does not match" in rejected.reason
        # An input larger than its reference says is refused from the blob's manifest, unread.
        rejected = await send_by_reference(net, BlobRef(digest, len(job_input) // 2))
        assert "larger than its reference says" in rejected.reason
    finally:
        client.shared_blobs.unshare(digest, provider.host.peer_id)


async def test_cannot_pay_a_cold_start_for_an_input_its_own_model_does_not_take(net: Devnet) -> None:
    """The client checks the input against its own copy of the model before anything is paid or
    fetched: its mistake costs it nothing and the provider never fetches the model."""
    provider = net.providers[0]
    model_id = await own_model(net, "checked-mlp", hidden=40)
    wrong = bytes(save({"not_input": np.zeros((2, 64), dtype=np.float32)}))
    with pytest.raises(InvalidInput, match="takes tensors"):
        await client_of(net).services.jobs.submit(
            JobSpec(model_id=model_id, input=wrong, provider=provider.key.address)
        )
    assert not held(provider, model_id)


# escrowed jobs for a model the provider fetches --------------------------------------------------

FIRST_JOB_WEI = PRICE_WEI + COLD_START_WEI


async def run_escrowed(
    net: Devnet, model_id: str, job_input: bytes, provider: str, *, timeout_s: float = 60.0
) -> tuple[JobView, Hash32]:
    """The client's job paid into escrow on chain, until verified (or over); with the on-chain id
    of its first attempt."""
    client = client_of(net)
    jobs = client.services.jobs
    spec = JobSpec(
        model_id=model_id,
        input=job_input,
        provider=provider,
        max_price_wei=10**15,
        payment=PaymentPath.ESCROW,
        timeout_s=timeout_s,
    )
    view = await jobs.submit(spec)
    async for update in jobs.watch(view.job_id):
        if update.terminal or update.state is JobState.VERIFIED:
            break
    record = await client.job_store.get(Hash32(bytes.fromhex(view.job_id)))
    return await jobs.get(view.job_id), escrow_terms(client.key.address, record, 0).job_id


async def refunded_in_full(net: Devnet, onchain_id: Hash32) -> None:
    """The attempt's escrow went back to the client, whole: nobody was paid from it."""
    await client_of(net).settlement.client.tick()  # the background round may have been first
    assert (await net.market.job(onchain_id)).status is ChainJobStatus.NONE
    assert await chain_outcome(net.market, onchain_id) is ChainOutcome.REFUNDED


async def refused_escrowed(net: Devnet, model_id: str, job_input: bytes, provider: Node, reason: str) -> None:
    """The escrowed job fails saying `reason` before the provider claims it: the provider installs
    nothing and is paid nothing (no cold start either), its stake is whole, the client's record of
    it stays clean and its escrow comes back at once."""
    registry = net.deployment.registry
    stake = (await registry.provider(provider.key.address)).stake
    done, onchain_id = await run_escrowed(net, model_id, job_input, provider.key.address)
    assert done.state is JobState.FAILED, done
    assert done.error is not None
    assert reason in done.error, done.error
    assert not held(provider, model_id)
    await refunded_in_full(net, onchain_id)
    assert (await registry.provider(provider.key.address)).stake == stake
    stats = client_of(net).client_jobs.pipeline.matchmaker.stats.get(provider.key.address)
    assert stats is None or stats.consecutive_failures == 0


async def test_can_pay_the_cold_start_of_a_fetched_model_by_escrow(net: Devnet) -> None:
    """An escrowed job for a model the provider lacks escrows the first-job price (cold start
    included); the provider fetches, installs, warms and runs it, then claims it and puts the
    result on chain, all within the escrow's deadline."""
    provider = net.providers[0]
    model_id = await own_model(net, "escrowed-mlp", hidden=56)
    done, onchain_id = await run_escrowed(net, model_id, mlp_input(15), provider.key.address)
    assert done.state is JobState.VERIFIED, done
    assert done.price_wei == FIRST_JOB_WEI
    assert load(done.output or b"")["output"].shape == (2, 16)
    assert held(provider, model_id)
    onchain = await net.market.job(onchain_id)
    assert onchain.status is ChainJobStatus.SUBMITTED
    assert onchain.provider == provider.key.address
    assert onchain.price == FIRST_JOB_WEI


async def test_cannot_make_an_escrowed_job_pay_for_a_model_whose_files_were_tampered_with(
    net: Devnet,
) -> None:
    """The client serves tampered bytes for its own model. The fetch stops at the first chunk
    that does not hash, the provider never claims the job, and neither side is paid: the client
    gets its escrow back, the provider keeps its stake (no result, no pay, whoever is at fault)."""
    client, provider = client_of(net), net.providers[0]
    model_id = await own_model(net, "escrow-tampered-mlp", hidden=44)
    own = BlobSources(ModelManifests(client.model_store), client.shared_blobs)
    with serving(client, Tampering(own, weights_of(net, model_id))):
        await refused_escrowed(net, model_id, mlp_input(16), provider, "could not be fetched")


async def test_cannot_keep_an_escrow_for_a_model_nobody_serves(net: Devnet) -> None:
    """The client is gone as a source (it serves nothing) and no peer holds the model."""
    model_id = await own_model(net, "escrow-unserved-mlp", hidden=36)
    with serving(client_of(net), BlobSources()):
        await refused_escrowed(
            net, model_id, mlp_input(17), net.providers[0], "could not be fetched from any peer"
        )


async def test_cannot_keep_an_escrow_for_a_model_above_the_providers_limit(net: Devnet) -> None:
    model_id = await own_model(net, "escrow-big-mlp", hidden=640)
    await refused_escrowed(
        net, model_id, mlp_input(18), net.providers[1], f"larger than the {SMALL_LIMIT} bytes"
    )


# Between two chunks of a trickled blob: under the 5 s a fetch waits for a silent peer.
TRICKLE_S = 3.0


class Trickling(Tampering):
    """A blob source that sends one blob a chunk every `TRICKLE_S` (a peer too slow for any
    deadline, never silent long enough to look gone), and stops serving it once `stop` is set."""

    def __init__(self, inner: BlobSource, victim: Hash32) -> None:
        super().__init__(inner, victim)
        self.stop = threading.Event()

    def read(self, digest: Hash32, offset: int, length: int) -> bytes:
        if digest == self.victim and self.stop.wait(TRICKLE_S):
            raise ConnectionResetError("the peer went away")
        return self.inner.read(digest, offset, length)


async def test_cannot_keep_an_escrow_whose_model_is_not_fetched_before_its_deadline(net: Devnet) -> None:
    """The client trickles its model's weights, a chunk every few seconds. The provider gives up
    once the room the escrow's on-chain deadline leaves to run the job is gone, and never claims
    the job: the client cancels its escrow and gets it back whole."""
    client, provider, market = client_of(net), net.providers[0], net.market
    model_id = await own_model(net, "trickled-mlp", hidden=2048, out_features=1024)
    weights = client.model_store.path(model_id) / "weights.safetensors"
    assert weights.stat().st_size > 8 * CHUNK_SIZE  # more chunks than the deadline leaves room for
    job_input = mlp_input(23)
    now = int(await market.client.chain_time())
    asked = await market.request_job(
        bytes.fromhex(model_id),
        price=FIRST_JOB_WEI,
        deadline=now + int(SUBMIT_ROOM_S + MIN_RUN_S) + 20,  # seconds to fetch and run
        input_hash=sha256(job_input),
        provider=provider.key.address,
        sender=client.key.account,
    )
    request = JobRequest(
        job_id=Hash32(os.urandom(32)),
        model_id=Hash32(bytes.fromhex(model_id)),
        input=job_input,
        payment=OnchainPayment(asked.job_id),
        max_price_wei=FIRST_JOB_WEI,
        deadline_ms=int((time.time() + 60) * 1000),
    )
    own = BlobSources(ModelManifests(client.model_store), client.shared_blobs)
    trickling = Trickling(own, weights_of(net, model_id))
    try:
        with serving(client, trickling):
            outcome = await JobClient(client.host).request_job(provider.host.peer_id, request)
    finally:
        trickling.stop.set()  # the fetch still under way ends too: nothing is installed
    assert isinstance(outcome, JobFailed), outcome
    assert outcome.code == MODEL_UNAVAILABLE  # the model's source is at fault: no provider is blamed
    assert "escrow's deadline leaves to run it" in outcome.reason, outcome.reason
    assert (await market.job(asked.job_id)).status is ChainJobStatus.REQUESTED  # never claimed
    assert not held(provider, model_id)
    await market.cancel_job(asked.terms, sender=client.key.account)
    assert await chain_outcome(market, asked.job_id) is ChainOutcome.REFUNDED


async def until_followed(provider: Node, block: int) -> None:
    """Wait until the provider's chain follower has handled every event up to `block`."""
    assert provider.provider is not None
    follower = provider.provider.onchain.follower
    async with asyncio.timeout(60):
        while (follower.cursors.load(follower.name) or 0) < block:  # noqa: ASYNC110
            await asyncio.sleep(0.1)


async def test_cannot_make_a_provider_claim_a_dapp_job_for_a_model_it_lacks(net: Devnet) -> None:
    """A dApp's job, posted to the job contract with no client to fetch from, names a model no
    provider holds: no provider claims it (anyone may claim a dApp job, so it is claimed before it
    runs, and a fetch failing after a claim would cost stake; a peer that holds the model can
    claim the job itself, warm). The requester takes its escrow back, whole."""
    market, requester = net.market, net.keys[6]
    model_id = await own_model(net, "dapp-mlp", hidden=28)
    now = int(await market.client.chain_time())
    lacking = await market.request_job(
        bytes.fromhex(model_id),
        price=FIRST_JOB_WEI,
        deadline=now + 3600,
        input=mlp_input(19),
        sender=requester.account,
    )
    await asyncio.gather(*(until_followed(p, lacking.tx.block_number) for p in net.providers))
    assert (await market.job(lacking.job_id)).status is ChainJobStatus.REQUESTED
    assert not any(held(p, model_id) for p in net.providers)
    await market.cancel_job(lacking.terms, sender=requester.account)
    assert await chain_outcome(market, lacking.job_id) is ChainOutcome.REFUNDED


async def test_can_be_paid_the_cold_start_once_the_escrowed_result_is_final(net: Devnet) -> None:
    """The escrow of a fetched model's first job, cold start included, goes to its provider once
    the challenge window has passed."""
    provider = net.providers[1]
    model_id = await own_model(net, "escrow-paid-mlp", hidden=20)
    done, onchain_id = await run_escrowed(net, model_id, mlp_input(20), provider.key.address)
    assert done.state is JobState.VERIFIED, done
    await net.chain.increase_time(CHALLENGE_WINDOW_S + 1)
    assert provider.services.provider is not None
    await provider.services.provider.settle()
    assert await chain_outcome(net.market, onchain_id) is ChainOutcome.FINALIZED
    earnings = await provider.services.provider.earnings()
    assert earnings.pending_onchain_wei == 0


def claiming_and_vanishing(net: Devnet, attacker_index: int) -> Any:
    """An attacker's job handler: it claims the escrowed job at the cold-start price, then fetches
    nothing, runs nothing and answers nothing."""
    key = net.keys[attacker_index]

    async def handle(peer: str, request: JobRequest) -> AsyncIterator[JobResponse]:
        if isinstance(request.payment, OnchainPayment):
            with contextlib.suppress(ChainError):  # asked again: claimed already
                await net.market.claim_job(request.payment.job_id, sender=key.account)
        yield JobAccepted(queue_position=0)

    return handle


async def test_cannot_be_paid_a_cold_start_for_an_escrowed_job_it_never_ran(net: Devnet) -> None:
    """A provider advertises fetch terms, claims the escrowed job (cold start included) and never
    fetches the model nor returns a result. The client's job fails at its own deadline; after the
    escrow's deadline the client takes the escrow back whole, and the attacker has nothing to
    withdraw."""
    client, market, attacker = client_of(net), net.market, net.keys[5]
    offer = Offer(
        devices=(Device(DeviceKind.CPU, "cpu", 2**33),),
        warm_models=(),
        prices=(),
        free_slots=8,
        fetch=FetchTerms(2**30, PRICE_WEI, COLD_START_WEI),
    )
    model_id = await own_model(net, "bait-mlp", hidden=52)
    async with AsyncExitStack() as stack:
        await serve_cheaply(net, stack, attacker, claiming_and_vanishing(net, 5), offer=offer)
        await client.discovery.directory.wait_for(lambda d: d.get(attacker.address) is not None, 60.0)
        done, onchain_id = await run_escrowed(net, model_id, mlp_input(21), attacker.address, timeout_s=4.0)
    assert done.state is JobState.FAILED, done
    assert "gave no good result in time" in (done.error or ""), done.error
    onchain = await market.job(onchain_id)
    assert onchain.status is ChainJobStatus.CLAIMED
    assert onchain.provider == attacker.address
    assert onchain.price == FIRST_JOB_WEI
    # The escrow's deadline passes with no result on chain.
    await net.chain.increase_time(int(onchain.time - await market.client.chain_time()) + 1)
    await refunded_in_full(net, onchain_id)
    assert await market.withdrawable(attacker.address) == 0


# Last in this module: it leaves the first provider fetching no more models.
async def test_cannot_make_a_provider_fetch_more_models_than_it_takes(net: Devnet) -> None:
    """Each fetched model keeps a warm worker: once a provider fetched `max_fetched_models`
    models, its advert stops offering to fetch, so a job for another model it lacks is refused
    before anything is paid or sent, and it still serves the models it fetched."""
    client, provider = client_of(net), net.providers[0]
    assert provider.provider is not None
    fetcher = provider.provider.fetcher
    assert fetcher is not None
    fetcher.max_models = len(fetcher.cold_starts) + 1  # what its operator set, one model to go
    last = await own_model(net, "last-mlp", hidden=8)
    assert (await run(net, last, mlp_input(12), provider)).state is JobState.SETTLED
    await client.discovery.directory.wait_for(
        lambda d: (a := d.get(provider.key.address)) is not None and a.offer.fetch is None, 30.0
    )
    extra = await own_model(net, "one-too-many-mlp", hidden=12)
    with pytest.raises(SchedulerError, match="has no live advert offering model"):
        await client.services.jobs.submit(
            JobSpec(model_id=extra, input=mlp_input(13), provider=provider.key.address)
        )
    assert not held(provider, extra)
    assert (await run(net, last, mlp_input(14), provider)).state is JobState.SETTLED
