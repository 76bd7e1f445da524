"""The README's "Using a node" section, run as written: anvil, a provider home and a client home as
separate processes on ports of their own, the user's own `.pt2` added while the provider runs.

The README is the single source: its commands are parsed here, so a command it shows that the CLI
no longer takes fails the drift test at once, and the walk runs exactly what it shows.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import typer

from node.cli.main import _register_groups, app

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from readme_walk import (
    ROLES,
    Walk,
    eager_output,
    output_tensor_bytes,
    readme_commands,
    readme_examples,
    walking,
    write_user_files,
)

_register_groups()


class CommandDrift(Exception):
    """A command the README shows that the CLI does not take."""


def _parse(argv: list[str]) -> None:
    """Parse `gpunode …` as the CLI would, without running it: unknown commands and options fail.

    typer carries its own copy of click, so its groups and errors are recognised by what they do."""
    command: Any = typer.main.get_command(app)
    words = argv[1:]
    try:
        while hasattr(command, "resolve_command"):
            with command.make_context("gpunode", [*words], resilient_parsing=True) as context:
                name, sub, words = command.resolve_command(context, words)
            if sub is None:
                raise CommandDrift(f"no command {name}")
            command = sub
        command.make_context(str(command.name), [*words])
    except Exception as exc:
        if isinstance(exc, CommandDrift) or not hasattr(exc, "format_message"):
            raise
        raise CommandDrift(f"{' '.join(argv)}: {exc.format_message()}") from exc


def test_every_readme_command_is_one_the_cli_takes() -> None:
    commands = readme_commands()
    assert {c.role for c in commands} == set(ROLES)
    for command in commands + readme_examples():
        argv = command.argv
        if argv[0] == "gpunode":
            _parse(argv)
        elif command.role != "example":
            assert Path(argv[0]).name == "anvil", command.line
    shown = [" ".join(c.argv) for c in commands if c.argv[0] == "gpunode"]
    # The path a user takes from nothing to a result, each step shown.
    for step in (
        "gpunode init --provider",
        "gpunode keys fund",
        "gpunode contracts deploy",
        "gpunode provider register",
        "gpunode provider start",
        "gpunode models add",
        "gpunode node start",
        "gpunode deposit 100000000000000000",
        "gpunode job submit MODEL_ID",
    ):
        assert any(line.startswith(step) for line in shown), step


def test_a_command_the_cli_does_not_take_is_caught() -> None:
    for drifted in ("gpunode job submit MODEL_ID input.safetensors --wiat", "gpunode keys fundd"):
        with pytest.raises(CommandDrift):
            _parse(shlex.split(drifted))


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_readme_walk_gets_the_result_of_eager_torch(tmp_path: Path) -> None:
    started = time.perf_counter()
    write_user_files(tmp_path)
    with walking(tmp_path) as walk:
        for command in readme_commands():
            step = walk.run(command)
            assert step.returncode == 0, f"`{step.line}`:\n{step.stdout}\n{step.stderr}"
        first_result_s = time.perf_counter() - started
        # Bit for bit what the user's model gives under plain torch.
        assert output_tensor_bytes(tmp_path / "output.safetensors") == eager_output(tmp_path)
        print(f"\nfrom nothing to the first result: {first_result_s:.1f} s")
        for step in walk.steps:
            print(f"{step.seconds:7.2f} s  {step.role:<8} {step.line}")
        _a_wrong_shaped_input_shows_its_cause_and_costs_nothing(walk)


def _a_wrong_shaped_input_shows_its_cause_and_costs_nothing(walk: Walk) -> None:
    submit = next(c for c in readme_commands() if c.argv[:3] == ["gpunode", "job", "submit"])
    jobs_before = _jobs(walk)
    bad = walk.run(
        submit,
        line=submit.line.replace("input.safetensors", "bad-input.safetensors").replace(
            "--out output.safetensors", "--out bad-output.safetensors"
        ),
    )
    assert bad.returncode == 1
    # The real cause, first and alone: the input's shape against the model's.
    first = bad.stderr.strip().splitlines()[0]
    assert "features" in first, bad.stderr
    assert "F32[3, 15]" in first, bad.stderr
    assert not (walk.work / "bad-output.safetensors").exists()
    assert _jobs(walk) == jobs_before  # nothing stored, so nothing paid
    # The provider is not blamed: the next good job goes to it straight away.
    again = walk.run(submit)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(_jobs(walk)) == len(jobs_before) + 1


def _jobs(walk: Walk) -> list[dict[str, object]]:
    import subprocess

    done = subprocess.run(
        ["gpunode", "job", "list", "--json"],
        env=walk.env("client"),
        capture_output=True,
        text=True,
        check=True,
        cwd=walk.work,
    )
    jobs: list[dict[str, object]] = json.loads(done.stdout)["jobs"]
    return jobs
