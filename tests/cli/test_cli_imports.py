"""A command loads the libraries of its own command alone: `gpunode version` answers at once."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
sys.argv = ["gpunode", *sys.argv[1:]]
from node.cli.main import main
try:
    main()
except SystemExit:
    pass
heavy = sorted({"grpc", "web3", "libp2p", "torch", "sqlalchemy", "eth_account"} & set(sys.modules))
print("loaded:", ",".join(heavy))
"""


def _loaded(*args: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True, timeout=120
    )
    line = done.stdout.strip().splitlines()[-1]
    return {name for name in line.removeprefix("loaded:").split(",") if name}


def test_version_loads_no_heavy_library() -> None:
    assert _loaded("version") == set()


def test_a_command_loads_only_what_it_needs() -> None:
    assert "grpc" not in _loaded("keys", "--help")
    assert "grpc" in _loaded("--help")  # the whole command tree, for the full help
