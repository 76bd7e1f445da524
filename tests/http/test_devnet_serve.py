"""`gpunode devnet --serve` as a user runs it: it prints the dashboard's URL and the exports for
OpenAI's clients, and the README's five-line `openai` example streams a reply from it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
GPUNODE = Path(sys.executable).with_name("gpunode")
START_TIMEOUT_S = 300.0


def readme_example() -> str:
    section = README.read_text().split("## The HTTP face", 1)[1].split("\n## ", 1)[0]
    (example,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    return str(example)


def test_the_readme_example_is_five_lines() -> None:
    assert len(readme_example().strip().splitlines()) == 5


def served_lines(devnet: subprocess.Popen[str], until: str) -> list[str]:
    """The devnet's stderr lines up to the one holding `until`."""
    assert devnet.stderr is not None
    lines: list[str] = []

    def read() -> None:
        assert devnet.stderr is not None
        for line in devnet.stderr:
            lines.append(line.rstrip("\n"))
            if until in line:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(START_TIMEOUT_S)
    if not lines or until not in lines[-1]:
        pytest.fail("the devnet did not come up:\n" + "\n".join(lines[-40:]))
    return lines


@pytest.mark.slow
def test_can_run_the_readme_openai_example_against_devnet_serve(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "GPUNODE_CONFIG": str(tmp_path / "absent.toml"),
        "GPUNODE_HOME": str(tmp_path / "home"),
        "COLUMNS": "200",
    }
    argv = [str(GPUNODE), "devnet", "--serve", "--providers", "1", "--jobs", "2", "--dapp-jobs", "0"]
    argv += ["--home", str(tmp_path / "devnet"), "--api", "127.0.0.1:0", "--http", "127.0.0.1:0"]
    devnet = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = served_lines(devnet, "Ctrl-C stops every node")
        exports = dict(re.findall(r"export (\w+)=(\S+)", "\n".join(lines)))
        assert exports["OPENAI_BASE_URL"].endswith("/v1")
        dashboard = next(line for line in lines if line.startswith("dashboard: "))
        assert httpx.get(dashboard.removeprefix("dashboard: ")).status_code == 200

        example = subprocess.run(
            [sys.executable, "-c", readme_example()],
            env={**os.environ, **exports},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert example.returncode == 0, example.stderr
        assert example.stdout  # the streamed reply
    finally:
        devnet.send_signal(signal.SIGINT)
        try:
            devnet.wait(60)
        except subprocess.TimeoutExpired:
            devnet.kill()
            devnet.wait()
    assert devnet.returncode == 0
