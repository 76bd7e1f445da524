"""Walk the README's "Using a node" section as a new user would, and time it.

The section's three bash blocks (a dev chain, the provider, the client) run as written, each
command in its own process: the provider and the client in homes of their own, on ports `init`
picks; commands ending in `&` stay up in the background until the walk ends. The words the README
leaves to the reader (PROVIDER_ADDRESS, REGISTRY, MARKET, MODEL_ID) are taken from what earlier
commands printed; the chain's port 8545 becomes a free one. The user brings `my-model.pt2` (a
torch.export program) and `input.safetensors`.

    python scripts/readme_walk.py          # seconds per step and from nothing to the first result
    python scripts/readme_walk.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SECTION = "## Using a node"
ROLES = ("chain", "provider", "client")
PLACEHOLDERS = ("PROVIDER_ADDRESS", "REGISTRY", "MARKET", "MODEL_ID")
PASSWORD = "correct horse battery staple"
# What a background command prints once it serves.
READY = {"anvil": re.compile(r"Listening on"), "gpunode": re.compile(r" ready — ")}
STEP_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Command:
    role: str
    line: str  # as the README writes it, comment removed

    @property
    def background(self) -> bool:
        return self.line.endswith("&")

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.line.removesuffix("&").strip())


def _section_blocks(readme: Path) -> list[str]:
    text = readme.read_text()
    section = text[text.index(SECTION) + len(SECTION) :]
    section = section[: section.index("\n## ")] if "\n## " in section else section
    return re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)


def _block_lines(block: str) -> Iterator[str]:
    for raw in block.splitlines():
        line = re.sub(r"\s+#.*$", "", raw).strip()
        if line and not line.startswith("#"):
            yield line


def readme_commands(readme: Path = README) -> list[Command]:
    """The walk: the commands of the section's first bash blocks (a dev chain, the provider, the
    client), in order, each with the role of its block."""
    blocks = _section_blocks(readme)
    if len(blocks) < len(ROLES):
        raise ValueError(f"{SECTION} has {len(blocks)} bash blocks, not {len(ROLES)} ({', '.join(ROLES)})")
    walked = zip(ROLES, blocks, strict=False)
    return [Command(role, line) for role, block in walked for line in _block_lines(block)]


def readme_examples(readme: Path = README) -> list[Command]:
    """The commands of the section's further bash blocks: shown to the reader (and checked
    against the CLI), not part of the walk."""
    blocks = _section_blocks(readme)[len(ROLES) :]
    return [Command("example", line) for block in blocks for line in _block_lines(block)]


@dataclass
class Step:
    role: str
    line: str
    seconds: float
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Walk:
    """One walk's state: where each role lives, what the README left to the reader, what ran."""

    work: Path
    chain_port: int
    values: dict[str, str] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    background: list[subprocess.Popen[str]] = field(default_factory=list)
    logs: dict[str, list[str]] = field(default_factory=dict)

    def home(self, role: str) -> Path:
        return self.work / f"home-{role}"

    def env(self, role: str) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("GPUNODE_") and key != "COLUMNS"
        }
        env["GPUNODE_HOME"] = str(self.home(role))
        env["GPUNODE_KEY_PASSWORD"] = PASSWORD
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        # This checkout's code, whichever checkout the environment was installed from.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        return env

    def resolve(self, line: str) -> str:
        line = line.replace("8545", str(self.chain_port))
        for word in PLACEHOLDERS:
            if word in line:
                if word not in self.values:
                    raise RuntimeError(f"the README uses {word} before any command printed it: {line}")
                line = line.replace(word, self.values[word])
        return line

    def run(self, command: Command, *, line: str | None = None) -> Step:
        text = self.resolve(line or command.line)
        # The chain's block runs in the clone (anvil's path is the clone's); the rest where the
        # user keeps their model and input.
        cwd = ROOT if command.role == "chain" else self.work
        if command.background:
            return self._start(command.role, text, cwd)
        started = time.perf_counter()
        done = subprocess.run(
            shlex.split(text),
            cwd=cwd,
            env=self.env(command.role),
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        seconds = time.perf_counter() - started
        step = Step(command.role, text, seconds, done.returncode, done.stdout, done.stderr)
        self.steps.append(step)
        self._learn(step.stdout + step.stderr)
        return step

    def _start(self, role: str, text: str, cwd: Path) -> Step:
        argv = shlex.split(text.removesuffix("&").strip())
        started = time.perf_counter()
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=self.env(role),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.background.append(process)
        lines: queue.Queue[str | None] = queue.Queue()
        log = self.logs.setdefault(text, [])

        def drain() -> None:
            assert process.stdout is not None
            for out in process.stdout:
                log.append(out)
                lines.put(out)
            lines.put(None)

        threading.Thread(target=drain, daemon=True).start()
        ready = READY[Path(argv[0]).name]
        seen: list[str] = []
        deadline = time.monotonic() + STEP_TIMEOUT_S
        code = 0
        while True:
            try:
                out = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                code = -1
                break
            if out is None:
                code = process.wait()
                break
            seen.append(out)
            if ready.search(out):
                # What a daemon prints after its ready line (its addresses) follows at once.
                with suppress(queue.Empty):
                    while (more := lines.get(timeout=0.5)) is not None:
                        seen.append(more)
                break
        step = Step(role, text, time.perf_counter() - started, code, "".join(seen), "")
        self.steps.append(step)
        self._learn(step.stdout)
        return step

    def _learn(self, output: str) -> None:
        """Pick up the values the README tells the reader to carry over from a command's output."""
        found = {
            "REGISTRY": re.search(r"--registry-address (0x[0-9a-fA-F]{40})", output),
            "MARKET": re.search(r"--market-address (0x[0-9a-fA-F]{40})", output),
            "MODEL_ID": re.search(r"installed as ([0-9a-f]{64})", output),
            "PROVIDER_ADDRESS": re.search(r"^\s+(/ip4/(?!127\.)\S+/p2p/\S+)$", output, flags=re.MULTILINE),
        }
        for word, match in found.items():
            if match and word not in self.values:
                self.values[word] = match.group(1)

    def daemon_logs(self, lines: int = 60) -> str:
        """The last lines each background command printed, to tell why a step failed."""
        return "\n".join(f"--- {line}\n{''.join(log[-lines:])}" for line, log in self.logs.items())

    def stop(self) -> None:
        for process in reversed(self.background):
            if process.poll() is None:
                process.terminate()
        for process in reversed(self.background):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def write_user_files(work: Path) -> None:
    """What the user brings: their own exported model, an input, and a wrong-shaped input."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(7)
    model = user_model()
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model, (torch.randn(2, 16),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(work / "my-model.pt2"))
    save_file({"features": torch.randn(3, 16)}, str(work / "input.safetensors"))
    save_file({"features": torch.randn(3, 15)}, str(work / "bad-input.safetensors"))


def user_model() -> object:
    import torch

    class Scorer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = torch.nn.Linear(16, 32)
            self.out = torch.nn.Linear(32, 4)

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.out(torch.relu(self.hidden(features))), dim=-1)

    torch.manual_seed(7)
    return Scorer().eval()


def eager_output(work: Path) -> bytes:
    """The model's output on the input with plain torch in this process, as raw tensor bytes."""
    import torch
    from safetensors.torch import load_file

    torch.set_num_threads(1)
    model = user_model()
    with torch.no_grad():
        out = model(load_file(str(work / "input.safetensors"))["features"])  # type: ignore[operator]
    return bytes(out.contiguous().numpy().tobytes())


def output_tensor_bytes(path: Path) -> bytes:
    from safetensors.numpy import load_file

    return bytes(load_file(str(path))["output"].tobytes())


@contextmanager
def walking(work: Path) -> Iterator[Walk]:
    walk = Walk(work=work, chain_port=free_port())
    try:
        yield walk
    finally:
        walk.stop()


def run(work: Path) -> dict[str, object]:
    """The whole walk; what it found and how long each step took."""
    started = time.perf_counter()
    write_user_files(work)
    with walking(work) as walk:
        for command in readme_commands():
            step = walk.run(command)
            if step.returncode != 0:
                output = f"{step.stdout}\n{step.stderr}\n{walk.daemon_logs()}"
                raise RuntimeError(f"`{step.line}` exited {step.returncode}:\n{output}")
        first_result_s = time.perf_counter() - started
        matches = output_tensor_bytes(work / "output.safetensors") == eager_output(work)
    return {
        "first_result_s": round(first_result_s, 2),
        "bit_identical": matches,
        "steps": [{"role": s.role, "command": s.line, "seconds": round(s.seconds, 2)} for s in walk.steps],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = run(Path(tmp))
    if args.json:
        print(json.dumps(report))
        return 0
    for step in report["steps"]:  # type: ignore[attr-defined]
        print(f"{step['seconds']:8.2f} s  {step['role']:<8} {step['command']}")
    print(f"{report['first_result_s']:8.2f} s  from nothing to the first result")
    print(f"output bit-identical to eager torch: {report['bit_identical']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
