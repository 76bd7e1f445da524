"""A test marketplace of real nodes run in a child process, so the nodes' threads, logs and servers
never share a process with the tests, which reach them only as users do (over gRPC or HTTP).

The child runs a script that builds the marketplace and hands it to `serve`: it prints one JSON
line describing the marketplace when ready and runs until its stdin closes, so it also stops when
the test session dies. Its log goes to `marketplace.log` in the root.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Generic, TypeVar

# The child runs its script directly, so it finds this module through PYTHONPATH.
TESTS_DIR = Path(__file__).parent

Devnet = TypeVar("Devnet")


class ChildMarketplace(Generic[Devnet]):
    def __init__(
        self,
        script: str,
        root: Path,
        parse: Callable[[dict[str, Any]], Devnet],
        *,
        name: str,
        start_timeout_s: float,
    ) -> None:
        self.script = script
        self.root = root
        self.parse = parse
        self.name = name
        self.start_timeout_s = start_timeout_s
        self.log = root / "marketplace.log"
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> Devnet:
        paths = [str(TESTS_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
        with self.log.open("wb") as log:
            self._process = subprocess.Popen(
                [sys.executable, self.script, str(self.root)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)},
            )
        stdout = self._process.stdout
        assert stdout is not None
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(self.start_timeout_s)
        if not ready or not ready[0]:
            self.stop()
            tail = self.log.read_text(errors="replace")[-6000:]
            raise RuntimeError(
                f"the {self.name} test marketplace did not start in {self.start_timeout_s} s:\n{tail}"
            )
        return self.parse(json.loads(ready[0]))

    def stop(self) -> None:
        if self._process is None:
            return
        assert self._process.stdin is not None
        self._process.stdin.close()
        try:
            self._process.wait(60.0)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


async def serve(marketplace: AbstractAsyncContextManager[Any]) -> None:
    """In the child: describe the marketplace on stdout once it runs, then keep it running until
    the test session closes stdin."""
    async with marketplace as devnet:
        fields = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(devnet).items()}
        print(json.dumps(fields), flush=True)
        await asyncio.to_thread(sys.stdin.read)
