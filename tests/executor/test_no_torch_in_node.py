"""The node process never imports torch on the job path: torch lives in workers and the probe."""

from __future__ import annotations

import subprocess
import sys

NODE_SIDE = [
    "node.executor.pool",
    "node.executor.lane",
    "node.executor.result",
    "node.executor.store",
    "node.executor.inventory",
    "node.executor.checks",
    "node.cli.doctor",
]


def test_node_side_modules_do_not_import_torch() -> None:
    report = "print(sorted(m for m in sys.modules if m.startswith('torch')))"
    code = f"import sys; import {', '.join(NODE_SIDE)}; {report}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
