"""A GPU worker's sandbox binds its own GPU's device node and no other, found the way the driver
numbers them; checked on the argv the real recipe builds (no GPU needed), in every mode here."""

from __future__ import annotations

from pathlib import Path

import pytest
from executor_support import BuiltinModels, executor_settings, working_modes

from node.errors import ExecutorError
from node.executor import gpu_binding as binding
from node.executor.errors import SandboxUnavailable
from node.executor.sandbox import Sandbox, SandboxedProcess, SandboxMode, SandboxSpec
from node.executor.sandbox_mode import create_sandbox
from node.executor.worker_handle import WorkerHandle

# Three GPUs whose driver minor numbers are not their PCI order (as on many multi-GPU boards).
GPUS = {"0000:17:00.0": (2, "a"), "0000:65:00.0": (0, "b"), "0000:ca:00.0": (1, "c")}


def uuid(letter: str) -> str:
    return f"GPU-{letter * 8}-{letter * 4}-{letter * 4}-{letter * 4}-{letter * 12}"


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    gpus, dev = tmp_path / "gpus", tmp_path / "dev"
    for bus, (minor, letter) in GPUS.items():
        (gpus / bus).mkdir(parents=True)
        (gpus / bus / "information").write_text(
            f"Model: \t\t NVIDIA H100\nGPU UUID: \t {uuid(letter)}\nBus Location: \t {bus}\n"
            f"Device Minor: \t {minor}\nGPU Excluded:\t No\n"
        )
    dev.mkdir()
    for name in ("nvidia0", "nvidia1", "nvidia2", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"):
        (dev / name).touch()
    monkeypatch.setattr(binding, "DRIVER_GPUS", gpus)
    monkeypatch.setattr(binding, "DEV", dev)
    return dev


@pytest.mark.parametrize(
    ("device", "minor", "letter"), [("cuda:0", 2, "a"), ("cuda:1", 0, "b"), ("cuda:2", 1, "c")]
)
def test_binds_the_device_node_the_driver_gives_the_gpu(
    machine: Path, device: str, minor: int, letter: str
) -> None:
    bound = binding.gpu_binding(device)
    assert bound.nodes == (
        str(machine / f"nvidia{minor}"),
        str(machine / "nvidiactl"),
        str(machine / "nvidia-uvm"),
    )
    assert bound.env == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": uuid(letter)}


@pytest.mark.parametrize("device", ["cuda:3", "cuda:-1", "cuda:0,1", "cuda:0/../../sda", "cuda", "meta"])
def test_cannot_name_a_gpu_that_is_not_one(machine: Path, device: str) -> None:
    with pytest.raises(ExecutorError, match=r"does not exist|is not .cpu. or .cuda:N."):
        binding.gpu_binding(device)


class RecordingSandbox(Sandbox):
    """The real recipe of `base`; records the argv it would launch instead of launching it."""

    def __init__(self, base: Sandbox) -> None:
        super().__init__(base.mode, uid_base=base.uid_base, cgroups=base.cgroups)
        self.argv: list[str] = []

    async def spawn(self, spec: SandboxSpec, **popen: object) -> SandboxedProcess:
        self.argv = self.command(spec, None)
        raise SandboxUnavailable("recorded")


def _pairs(argv: list[str], flag: str) -> list[tuple[str, ...]]:
    width = 3 if flag in ("--dev-bind", "--setenv") else 2
    return [tuple(argv[i + 1 : i + width]) for i, arg in enumerate(argv) if arg == flag]


@pytest.mark.parametrize("mode", working_modes())
async def test_a_gpu_workers_sandbox_sees_its_own_gpu_only(
    machine: Path, builtin_models: BuiltinModels, mode: SandboxMode
) -> None:
    settings = executor_settings(builtin_models.store.root)
    base = await create_sandbox(settings, mode)
    try:
        sandbox = RecordingSandbox(base)
        model = builtin_models.mlp
        with pytest.raises(SandboxUnavailable, match="recorded"):
            await WorkerHandle.start(
                sandbox, model, builtin_models.store.path(model.model_id), settings, device="cuda:1"
            )
    finally:
        if base.cgroups is not None:
            base.cgroups.close()
    # cuda:1 is the second GPU in PCI order, minor 0: before, /dev/nvidia1 (another GPU) was bound,
    # with the profilers' /dev/nvidia-uvm-tools, and CUDA_VISIBLE_DEVICES=1 in CUDA's own order.
    nodes = [str(machine / name) for name in ("nvidia0", "nvidiactl", "nvidia-uvm")]
    assert _pairs(sandbox.argv, "--dev-bind") == [(node, node) for node in nodes]
    env = dict(_pairs(sandbox.argv, "--setenv"))
    assert env["CUDA_VISIBLE_DEVICES"] == uuid("b")
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert not any("nvidia-uvm-tools" in arg or arg.endswith(("nvidia1", "nvidia2")) for arg in sandbox.argv)
