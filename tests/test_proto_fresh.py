"""The committed node/gen/ must be exactly what scripts/gen_proto.py makes from proto/ now."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_generated_protobuf_code_matches_proto_sources(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--out", str(out)], check=True)
    committed = ROOT / "node" / "gen"
    fresh, current = _files(out), _files(committed)
    assert fresh == current, f"missing: {sorted(fresh - current)}, extra: {sorted(current - fresh)}"
    stale = [str(p) for p in sorted(fresh) if not filecmp.cmp(out / p, committed / p, shallow=False)]
    assert not stale, f"stale generated files {stale}: run `python scripts/gen_proto.py`"


def test_every_proto_has_generated_messages() -> None:
    protos = sorted((ROOT / "proto").rglob("*.proto"))
    assert protos
    for proto in protos:
        rel = proto.relative_to(ROOT / "proto").with_suffix("")
        generated = ROOT / "node" / "gen" / rel.parent / f"{rel.name}_pb2.py"
        assert generated.is_file(), f"{proto} has no generated module at {generated}"
