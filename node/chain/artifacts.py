"""Compiled contract artifacts, shipped as package data so installing gpunode needs no compiler.

`scripts/compile_contracts.mjs` writes `node/chain/artifacts/<Name>.json`; this module only reads
them. `source_sha256` lets a test prove an artifact was built from the sources in `contracts/`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from node.errors import ChainError

_REQUIRED_KEYS = ("name", "abi", "bytecode", "deployedBytecode", "compiler", "settings", "sourceSha256")


class ArtifactError(ChainError):
    """A compiled contract artifact is missing or malformed."""


@dataclass(frozen=True, slots=True)
class Artifact:
    """One compiled contract: what `ChainClient.deploy` and `ChainClient.contract` need."""

    name: str
    abi: tuple[dict[str, Any], ...]
    bytecode: str
    deployed_bytecode: str
    compiler: str
    settings: dict[str, Any]
    source_sha256: str
    # Source files (relative to `contracts/`) the contract is built from; they feed `source_sha256`.
    sources: tuple[str, ...] = ()

    def abi_items(self, kind: str) -> list[dict[str, Any]]:
        """The ABI entries of one kind: "function", "event", "error", "constructor"."""
        return [item for item in self.abi if item.get("type") == kind]


def artifact_from_json(data: dict[str, Any], *, origin: str) -> Artifact:
    """Build an `Artifact` from the compiler script's JSON, naming `origin` in any error."""
    missing = [key for key in _REQUIRED_KEYS if key not in data]
    if missing:
        raise ArtifactError(
            f"artifact {origin} lacks {', '.join(missing)}",
            hint="rebuild it with `node scripts/compile_contracts.mjs`",
        )
    return Artifact(
        name=str(data["name"]),
        abi=tuple(data["abi"]),
        bytecode=str(data["bytecode"]),
        deployed_bytecode=str(data["deployedBytecode"]),
        compiler=str(data["compiler"]),
        settings=dict(data["settings"]),
        source_sha256=str(data["sourceSha256"]),
        sources=tuple(str(s) for s in data.get("sources", ())),
    )


def load_artifact(name: str) -> Artifact:
    """Load the packaged artifact of contract `name` (e.g. "JobMarket")."""
    resource = _artifact_dir().joinpath(f"{name}.json")
    if not resource.is_file():
        raise ArtifactError(
            f"no compiled artifact for contract {name!r}",
            hint=f"known: {', '.join(artifact_names()) or 'none'}; run `node scripts/compile_contracts.mjs`",
        )
    return artifact_from_json(json.loads(resource.read_text(encoding="utf-8")), origin=f"{name}.json")


def load_artifact_file(path: Path) -> Artifact:
    """Load an artifact from a file outside the package (test-only contracts)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"cannot read artifact {path}: {exc}") from exc
    return artifact_from_json(data, origin=str(path))


def artifact_names() -> list[str]:
    """Names of every packaged artifact."""
    names = (entry.name for entry in _artifact_dir().iterdir())
    return sorted(name.removesuffix(".json") for name in names if name.endswith(".json"))


def _artifact_dir() -> resources.abc.Traversable:
    return resources.files("node.chain").joinpath("artifacts")


def source_sha256(contracts_dir: Path, sources: Iterable[str]) -> str:
    """The hash the compiler script records: sha256 over `path NUL content NUL`, paths sorted."""
    digest = hashlib.sha256()
    for unit in sorted(sources):
        digest.update(unit.encode() + b"\0")
        digest.update((contracts_dir / unit).read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()
