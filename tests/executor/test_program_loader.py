"""The worker's loader runs honest exported programs exactly as `torch.export.load` would: dynamic
shapes, multi-output and list-output operators, infinities in arguments, both export dialects."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from node.executor.errors import ProgramRefused
from node.executor.program_loader import load_program


class Mixed(nn.Module):
    """Embedding, layer norm, causal attention, max over a dim, split, conv + batch norm (eval)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.position = nn.Embedding(50, 16), nn.Embedding(32, 16)
        self.norm, self.qkv = nn.LayerNorm(16), nn.Linear(16, 48)
        self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, ids: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, t = ids.shape
        x = self.norm(self.embed(ids) + self.position(torch.arange(t)))
        q, k, v = self.qkv(x).view(b, t, 3, 2, 8).permute(2, 0, 3, 1, 4)
        attended = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        attended = attended.transpose(1, 2).reshape(b, t, 16)
        top, index = attended.max(dim=-1)
        first, second = torch.split(attended, 8, dim=-1)
        pixels = nn.functional.interpolate(self.bn(torch.relu(self.conv(image))), scale_factor=2)
        return top, index, first.sum(-1) + second.mean(-1), pixels.flatten(1).softmax(-1)


@pytest.fixture(scope="module")
def mixed_program() -> torch.export.ExportedProgram:
    torch.manual_seed(3)
    batch, length = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("length", min=2, max=32)
    example = (torch.randint(0, 50, (3, 7)), torch.randn(3, 3, 8, 8))
    return torch.export.export(Mixed().eval(), example, dynamic_shapes=({0: batch, 1: length}, {0: batch}))


@pytest.mark.parametrize("dialect", ["training", "decomposed"])
def test_can_run_an_exported_program_bit_identical_to_torch_export_load(
    mixed_program: torch.export.ExportedProgram, dialect: str
) -> None:
    program = mixed_program if dialect == "training" else mixed_program.run_decompositions()
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    data = buffer.getvalue()
    run = load_program(data, inputs=2, outputs=4, device="cpu")
    ids, image = torch.randint(0, 50, (5, 11)), torch.randn(5, 3, 8, 8)
    with torch.inference_mode():
        expected = torch.export.load(io.BytesIO(data)).module()(ids, image)
        got = run(ids, image)
    assert len(got) == len(expected) == 4
    for mine, theirs in zip(got, expected, strict=True):
        assert torch.equal(mine, theirs)


def test_cannot_load_a_program_with_other_outputs_than_declared(
    mixed_program: torch.export.ExportedProgram,
) -> None:
    buffer = io.BytesIO()
    torch.export.save(mixed_program, buffer)
    with pytest.raises(ProgramRefused, match="returns 4 outputs, its manifest declares 1"):
        load_program(buffer.getvalue(), inputs=2, outputs=1, device="cpu")
