"""Small problems whose evidence is known by construction, shared by the AmortizedExplainer tests
and the script they launch under torchrun."""

import torch
from torch import nn


class Quadrants(nn.Module):
    """Four classes: the logit of class c is the mean brightness of image quadrant c
    (top-left, top-right, bottom-left, bottom-right)."""

    def forward(self, x):
        h, w = x.shape[2] // 2, x.shape[3] // 2
        quadrants = [x[:, :, :h, :w], x[:, :, :h, w:], x[:, :, h:, :w], x[:, :, h:, w:]]
        return torch.stack([q.mean(dim=(1, 2, 3)) for q in quadrants], dim=1) * 8.0


def quadrant_region(label: int, size: int = 16) -> tuple:
    half = size // 2
    top, left = (label // 2) * half, (label % 2) * half
    return slice(top, top + half), slice(left, left + half)


def quadrant_data(n: int, seed: int, size: int = 16, dtype=torch.float32):
    """Dim noise with one bright square in the quadrant of the label."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=generator, dtype=dtype) * 0.2
    y = torch.randint(0, 4, (n,), generator=generator)
    for i, label in enumerate(y.tolist()):
        rows, cols = quadrant_region(label, size)
        x[i, :, rows.start + 2 : rows.stop - 2, cols.start + 2 : cols.stop - 2] = 1.0
    return x, y


def quadrant_masks(labels: torch.Tensor, size: int = 16) -> torch.Tensor:
    masks = torch.zeros(len(labels), size, size, dtype=torch.bool)
    for i, label in enumerate(labels.tolist()):
        masks[i][quadrant_region(label, size)] = True
    return masks


def batches(x, y, size):
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]
