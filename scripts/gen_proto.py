"""Generate Python code (messages, .pyi stubs, gRPC stubs) for every proto under proto/ into node/gen/.

protoc writes absolute imports such as `from gpunode.v1 import job_pb2`; they are rewritten to
`from node.gen.gpunode.v1 import job_pb2` so the generated code lives inside the package.

    python scripts/gen_proto.py               # regenerate node/gen in place
    python scripts/gen_proto.py --out DIR     # generate into DIR (used by the freshness test)
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
DEFAULT_OUT = ROOT / "node" / "gen"
PACKAGE = "node.gen"
HEADER = '"""Generated from proto/ by scripts/gen_proto.py; do not edit."""\n'

_SERVICE = re.compile(r"^\s*service\s+\w+\s*\{", re.MULTILINE)


def proto_files() -> list[Path]:
    return sorted(PROTO_DIR.rglob("*.proto"))


def _top_level_packages() -> set[str]:
    return {p.relative_to(PROTO_DIR).parts[0] for p in proto_files()}


def _run_protoc(out: Path) -> None:
    include = str(resources.files("grpc_tools") / "_proto")
    for proto in proto_files():
        args = [f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={out}", f"--pyi_out={out}"]
        if _SERVICE.search(proto.read_text()):
            args.append(f"--grpc_python_out={out}")
        status = protoc.main(["protoc", *args, str(proto)])
        if status != 0:
            raise SystemExit(f"protoc failed on {proto.relative_to(ROOT)} (status {status})")


def _fix_imports(out: Path) -> None:
    # Only imports of our own protos are rewritten; google.protobuf stays as it is.
    pattern = re.compile(rf"^(from|import) ({'|'.join(map(re.escape, _top_level_packages()))})(\.| )", re.M)
    for path in sorted([*out.rglob("*.py"), *out.rglob("*.pyi")]):
        text = path.read_text()
        fixed = pattern.sub(lambda m: f"{m.group(1)} {PACKAGE}.{m.group(2)}{m.group(3)}", text)
        if fixed != text:
            path.write_text(fixed)


def _quiet_stubs(out: Path) -> None:
    # protoc's stubs use bare generics (`Mapping`) that `mypy --strict` rejects; they are
    # generated, so they are read for their types but not checked.
    for path in sorted(out.rglob("*.pyi")):
        path.write_text("# mypy: ignore-errors\n" + path.read_text())


def _add_init_files(out: Path) -> None:
    (out / "__init__.py").write_text(HEADER)
    for directory in sorted(p for p in out.rglob("*") if p.is_dir() and p.name != "__pycache__"):
        (directory / "__init__.py").write_text(HEADER)


def generate(out: Path) -> None:
    """Generate into `out`, replacing whatever was there."""
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp) / "gen"
        staging.mkdir()
        _run_protoc(staging)
        _fix_imports(staging)
        _quiet_stubs(staging)
        _add_init_files(staging)
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(staging, out, ignore=shutil.ignore_patterns("__pycache__"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default: node/gen)")
    args = parser.parse_args(argv)
    generate(args.out)
    print(f"generated {len(proto_files())} proto files into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
