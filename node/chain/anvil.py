"""A local anvil dev chain as an async context manager.

Anvil comes from npm (`@foundry-rs/anvil`, installed by `bash scripts/dev.sh setup` into
`contracts/node_modules`); a binary on PATH works too. It is ready when it prints its
`Listening on` line; its output is drained for as long as it runs so the pipe never fills.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import threading
from functools import cache
from pathlib import Path
from types import TracebackType

from eth_account import Account
from eth_account.signers.local import LocalAccount

from node.errors import ChainError
from node.logging import get_logger

log = get_logger(__name__)

# Anvil's (and hardhat's) well-known development mnemonic: its accounts are funded at genesis.
DEFAULT_MNEMONIC = "test test test test test test test test test test test junk"
DEFAULT_ACCOUNTS = 10
# The contracts are compiled for prague, the fork py-evm runs: both backends execute the same rules.
DEFAULT_HARDFORK = "prague"
# Chain states anvil keeps (in memory): reads at a block further back fail.
_STATES_KEPT = 256
_NPM_BINARY = Path("contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
_LISTENING = re.compile(r"Listening on ([0-9.]+):(\d+)")


def find_anvil() -> Path:
    """The anvil binary: `GPUNODE_ANVIL`, the npm install in this checkout, then PATH."""
    override = os.environ.get("GPUNODE_ANVIL")
    candidates = [Path(override)] if override else []
    repository_root = Path(__file__).resolve().parents[2]
    candidates += [repository_root / _NPM_BINARY, Path.cwd() / _NPM_BINARY]
    on_path = shutil.which("anvil")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ChainError(
        "the anvil binary was not found", hint="run `bash scripts/dev.sh setup` to install it from npm"
    )


@cache
def mnemonic_accounts(
    mnemonic: str = DEFAULT_MNEMONIC, count: int = DEFAULT_ACCOUNTS
) -> tuple[LocalAccount, ...]:
    """The accounts anvil funds for `mnemonic` (BIP-44 path m/44'/60'/0'/0/i)."""
    Account.enable_unaudited_hdwallet_features()
    return tuple(
        Account.from_mnemonic(mnemonic, account_path=f"m/44'/60'/0'/0/{index}") for index in range(count)
    )


class AnvilProcess:
    """One anvil process on 127.0.0.1; `port=0` lets anvil pick a free port.

    The process and the thread that reads its output belong to no event loop, so an anvil
    started under one loop (a session-wide test fixture) can serve and be stopped from another.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        accounts: int = DEFAULT_ACCOUNTS,
        hardfork: str = DEFAULT_HARDFORK,
        ready_timeout_s: float = 30.0,
        binary: Path | None = None,
    ) -> None:
        self._requested_port = port
        self._account_count = accounts
        self._hardfork = hardfork
        self._ready_timeout_s = ready_timeout_s
        self._binary = binary
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise ChainError("anvil is not running", hint="enter `async with AnvilProcess()` first")
        return self._port

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def accounts(self) -> list[LocalAccount]:
        return list(mnemonic_accounts(DEFAULT_MNEMONIC, self._account_count))

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    async def __aenter__(self) -> AnvilProcess:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start anvil (again on the same port after `kill()`) and wait for its listening line."""
        if self.running:
            return
        port = self._port if self._port is not None else self._requested_port
        binary = self._binary or find_anvil()
        try:
            process = await asyncio.to_thread(self._spawn, binary, port)
        except OSError as exc:
            raise ChainError(
                f"cannot run anvil at {binary}: {exc.strerror}", hint="run `bash scripts/dev.sh setup`"
            ) from exc
        self._process = process
        loop = asyncio.get_running_loop()
        listening: asyncio.Future[int] = loop.create_future()
        self._reader = threading.Thread(
            target=_read_output, args=(process, loop, listening), name="anvil-output", daemon=True
        )
        self._reader.start()
        try:
            self._port = await asyncio.wait_for(listening, self._ready_timeout_s)
        except TimeoutError as exc:
            await self.stop()
            raise ChainError(f"anvil did not start listening within {self._ready_timeout_s} s") from exc
        except BaseException:
            await self.stop()
            raise
        log.info("anvil_started", port=self._port, pid=process.pid)

    def _spawn(self, binary: Path, port: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                str(binary),
                "--host", "127.0.0.1",
                "--port", str(port),
                "--accounts", str(self._account_count),
                "--mnemonic", DEFAULT_MNEMONIC,
                "--hardfork", self._hardfork,
                # Without it anvil writes every old state to ~/.foundry/anvil/tmp and never
                # removes it: gigabytes per long test run. Recent states (for replaying a
                # reverted transaction at its block) stay in memory.
                "--prune-history", str(_STATES_KEPT),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    async def stop(self) -> None:
        """Terminate anvil and wait for it; kill it if it does not exit promptly."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                await asyncio.to_thread(process.wait, 5.0)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)
        await self._join_reader()
        log.info("anvil_stopped", port=self._port, status=process.returncode)

    async def kill(self) -> None:
        """Kill anvil abruptly (SIGKILL), as a crash would; `start()` brings it back on the same port."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            await asyncio.to_thread(process.wait)
        await self._join_reader()

    async def _join_reader(self) -> None:
        if self._reader is not None:
            await asyncio.to_thread(self._reader.join)
            self._reader = None
        if self._process is not None and self._process.stdout is not None:
            self._process.stdout.close()


def _read_output(
    process: subprocess.Popen[bytes], loop: asyncio.AbstractEventLoop, listening: asyncio.Future[int]
) -> None:
    """Find the listening line, then keep draining anvil's log so its pipe never fills."""
    stream = process.stdout
    if stream is None:
        return
    seen: list[str] = []
    for raw in stream:
        if listening.done():
            continue
        line = raw.decode(errors="replace").strip()
        seen.append(line)
        match = _LISTENING.search(line)
        if match:
            loop.call_soon_threadsafe(_resolve, listening, int(match.group(2)), None)
    if not listening.done():
        status = process.wait()
        failure = ChainError(
            f"anvil exited with status {status} before listening: {' | '.join(seen[-3:])}",
            hint="is the port already in use?",
        )
        loop.call_soon_threadsafe(_resolve, listening, 0, failure)


def _resolve(future: asyncio.Future[int], port: int, failure: BaseException | None) -> None:
    if future.done():
        return
    if failure is not None:
        future.set_exception(failure)
    else:
        future.set_result(port)
