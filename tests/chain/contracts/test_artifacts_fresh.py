"""The committed artifacts are the compiler's output for the sources in contracts/, not stale copies."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from contract_helpers import TEST_ARTIFACTS

from node.chain.artifacts import (
    Artifact,
    ArtifactError,
    artifact_names,
    load_artifact,
    load_artifact_file,
    source_sha256,
)

REPOSITORY = Path(__file__).resolve().parents[3]
CONTRACTS = REPOSITORY / "contracts"
PACKAGED = ("ProviderRegistry", "JobMarket", "ExampleConsumer")


def every_artifact() -> list[Artifact]:
    packaged = [load_artifact(name) for name in artifact_names()]
    tests_only = [load_artifact_file(path) for path in sorted(TEST_ARTIFACTS.glob("*.json"))]
    return packaged + tests_only


def test_can_load_every_deployable_contract() -> None:
    assert set(PACKAGED) <= set(artifact_names())
    for name in PACKAGED:
        artifact = load_artifact(name)
        assert artifact.name == name
        assert artifact.bytecode.startswith("0x")
        assert len(artifact.bytecode) > 2
        assert artifact.abi_items("function")


@pytest.mark.parametrize("artifact", every_artifact(), ids=lambda a: a.name)
def test_artifact_matches_its_sources(artifact: Artifact) -> None:
    missing = [unit for unit in artifact.sources if not (CONTRACTS / unit).is_file()]
    assert not missing, f"{artifact.name} was built from sources that no longer exist: {missing}"
    assert source_sha256(CONTRACTS, artifact.sources) == artifact.source_sha256, (
        f"{artifact.name}'s artifact is stale: run `node scripts/compile_contracts.mjs` and commit it"
    )


def test_every_source_has_an_artifact() -> None:
    built_from = {unit for artifact in every_artifact() for unit in artifact.sources}
    on_disk = {
        str(path.relative_to(CONTRACTS))
        for d in ("src", "examples", "test")
        for path in (CONTRACTS / d).rglob("*.sol")
    }
    assert on_disk == built_from, "a contract source is not compiled into any artifact"


def test_artifacts_use_the_pinned_compiler_and_settings() -> None:
    pinned = json.loads((CONTRACTS / "package.json").read_text())["devDependencies"]["solc"]
    for artifact in every_artifact():
        assert artifact.compiler.startswith(pinned + "+"), artifact.compiler
        assert artifact.settings["evmVersion"] == "prague"
        assert artifact.settings["optimizer"]["enabled"] is True
        assert artifact.settings["metadata"]["bytecodeHash"] == "none"


def test_cannot_load_an_unknown_artifact() -> None:
    with pytest.raises(ArtifactError, match="no compiled artifact for contract 'Nope'"):
        load_artifact("Nope")


def test_cannot_load_a_malformed_artifact(tmp_path: Path) -> None:
    broken = tmp_path / "Broken.json"
    broken.write_text(json.dumps({"name": "Broken", "abi": []}))
    with pytest.raises(ArtifactError, match="lacks bytecode"):
        load_artifact_file(broken)
    broken.write_text("{not json")
    with pytest.raises(ArtifactError, match="cannot read artifact"):
        load_artifact_file(broken)


@pytest.mark.slow
def test_artifacts_are_exactly_what_the_pinned_compiler_builds() -> None:
    """Recompile everything (solc-js, pinned settings) and compare byte for byte with what is committed."""
    node = shutil.which("node")
    if node is None or not (CONTRACTS / "node_modules" / "solc").is_dir():
        pytest.fail("node and solc-js are needed: run `bash scripts/dev.sh setup`")
    completed = subprocess.run(
        [node, str(REPOSITORY / "scripts" / "compile_contracts.mjs"), "--check"],
        capture_output=True,
        check=False,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr.decode()
