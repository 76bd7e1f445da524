"""A challenger's node serves its disputes' evidence to jurors over `/gpunode/blob/1` between real
hosts on 127.0.0.1, and nothing else it holds."""

from __future__ import annotations

import os
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from node.chain.court import DisputeOpened
from node.chain.registry import TxInfo
from node.config import P2PSettings
from node.jobstore.blobs import JobBlobs
from node.p2p.blob_protocol import fetch_blob, serve_blobs
from node.p2p.errors import BlobNotFound
from node.p2p.host import P2PHost
from node.p2p.identity import peer_id_to_bytes
from node.provider.jury import Evidence, blob_evidence
from node.settlement.evidence import DisputeEvidence
from node.types import Address, Hash32, sha256

SETTINGS = P2PSettings.model_validate({"read_timeout_s": 2.0, "job_timeout_s": 10.0})


def dispute_on(input_bytes: bytes, output: bytes, peer: bytes) -> DisputeOpened:
    return DisputeOpened(
        dispute_id=Hash32(os.urandom(32)),
        job_id=Hash32(os.urandom(32)),
        provider=Address("0x" + "11" * 20),
        challenger=Address("0x" + "22" * 20),
        model_id=sha256(b"model"),
        input_hash=sha256(input_bytes),
        output_hash=sha256(output),
        profile_hash=sha256(b"profile"),
        escrowed=False,
        draw_block=0,
        evidence_peer=peer,
        tx=TxInfo("0x", 0, 0),
    )


async def no_chain_evidence(dispute: DisputeOpened) -> Evidence | None:
    return None


async def test_can_fetch_a_disputes_evidence_and_nothing_else(tmp_path: Path) -> None:
    blobs = JobBlobs(tmp_path / "blobs", fsync=False)
    job_input, claimed, private = b"the input", b"the claimed output", b"another client's job"
    for data in (job_input, claimed, private):
        blobs.write(data)
    evidence = DisputeEvidence(blobs)
    async with AsyncExitStack() as stack:
        challenger = await stack.enter_async_context(P2PHost.start(os.urandom(32), SETTINGS))
        juror = await stack.enter_async_context(P2PHost.start(os.urandom(32), SETTINGS))
        serve_blobs(challenger, evidence)
        await juror.connect(challenger.addrs[0])
        dispute = dispute_on(job_input, claimed, peer_id_to_bytes(challenger.peer_id))
        fetch = blob_evidence(juror, no_chain_evidence, max_size=2**20)
        # Before the dispute is opened, nothing is served.
        assert await fetch(dispute) is None
        evidence.allow(dispute.input_hash, dispute.output_hash)
        assert await fetch(dispute) == Evidence(job_input, claimed)
        # Attacker: a peer asks the challenger for the data of a job it never disputed.
        with pytest.raises(BlobNotFound):
            await fetch_blob(juror, challenger.peer_id, sha256(private), max_size=2**20)
