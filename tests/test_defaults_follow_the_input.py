"""The size-dependent defaults follow the input: the paper's values at 224 px, the same fractions
of the shortest side elsewhere, explicit values used as given, and a map that points where it
pointed when the image's resolution changes."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from captum_masks import (
    Blur,
    BlurPyramid,
    MeaningfulPerturbation,
    NeuroMaskAttr,
    SigmoidMask,
    SmoothMaxMask,
    UpsampledMask,
)
from captum_masks.bench.kind_tasks import kind_task
from captum_masks.bench.kinds import _positions, points_at


def test_at_224_px_the_derived_sizes_are_the_papers():
    assert UpsampledMask().sizes_for((224, 224)) == (8, 5.0, 4)
    assert Blur().sigma_for((224, 224)) == pytest.approx(10.0)
    assert BlurPyramid().max_sigma_for((224, 224)) == pytest.approx(20.0)
    assert SmoothMaxMask().sizes_for((224, 224)) == (7, 21.0, 4, 21.0)
    assert SigmoidMask().block_for((224, 224)) == 4


@given(
    shape=st.lists(st.integers(1, 600), min_size=1, max_size=3),
    scale=st.integers(2, 4),
)
def test_derived_sizes_grow_with_the_shortest_side_and_never_vanish(shape, scale):
    larger = [side * scale for side in shape]
    factor, sigma, jitter = UpsampledMask().sizes_for(shape)
    assert factor >= 1 and sigma > 0 and 0 <= jitter < factor + 1
    assert UpsampledMask().sizes_for(larger)[0] >= factor
    assert Blur().sigma_for(larger) == pytest.approx(scale * Blur().sigma_for(shape))
    assert SigmoidMask().block_for(larger) >= SigmoidMask().block_for(shape) >= 1
    # about 28 cells along the shortest side, whatever its length
    cells = min(UpsampledMask().cell_shape(shape))
    assert cells == min(shape) or 14 <= cells <= 56


def test_explicit_sizes_are_used_as_given():
    assert UpsampledMask(factor=3, smooth_sigma=0.0, jitter=0).sizes_for((32, 32)) == (3, 0.0, 0)
    assert UpsampledMask(factor=3).sizes_for((500, 500)) == (3, 1.875, 1)
    assert Blur(sigma=2.5).sigma_for((1000,)) == 2.5
    assert SmoothMaxMask(step=5, sigma=9.0, stride=2, margin=0.0).sizes_for((32, 32)) == (
        5,
        9.0,
        2,
        0.0,
    )
    assert SigmoidMask(block=7).block_for((16, 16)) == 7


class BrightSquare(nn.Module):
    """Class 1's logit is how much brighter a square is than the image's mean: the evidence is
    the square, wherever it is, at any resolution given in relative coordinates."""

    def __init__(self, top: float, left: float, side: float):
        super().__init__()
        self.box = (top, left, side)

    def forward(self, x):
        height, width = x.shape[-2:]
        top, left, side = self.box
        rows = slice(round(top * height), round((top + side) * height))
        cols = slice(round(left * width), round((left + side) * width))
        contrast = x[:, :, rows, cols].mean(dim=(1, 2, 3)) - x.mean(dim=(1, 2, 3))
        return torch.stack([-contrast, contrast], dim=1) * 8.0


def _bright_square(size: int, top: float, left: float, side: float) -> torch.Tensor:
    image = torch.full((1, 3, size, size), 0.2)
    rows = slice(round(top * size), round((top + side) * size))
    cols = slice(round(left * size), round((left + side) * size))
    image[..., rows, cols] = 1.0
    return image


@settings(max_examples=2, deadline=None)
@given(top=st.floats(0.05, 0.6), left=st.floats(0.05, 0.6))
def test_scaling_the_resolution_leaves_the_default_maps_pointing_where_it_was(top, left):
    side = 0.25
    small = _bright_square(64, top, left, side)
    large = nn.functional.interpolate(small, scale_factor=2, mode="nearest")  # 64 → 128 px
    model = BrightSquare(top, left, side)
    for image in (small, large):
        size = image.shape[-1]
        attribution = MeaningfulPerturbation(model).attribute(image, target=1)[0, 0]
        row, col = divmod(attribution.argmax().item(), size)
        # the pointing game's tolerance, 15 px at 224 px, in this image's pixels
        tolerance = round(15 * size / 224)
        low, high = round(top * size) - tolerance, round((top + side) * size) + tolerance
        inside_rows = low <= row < high
        low, high = round(left * size) - tolerance, round((left + side) * size) + tolerance
        assert inside_rows and low <= col < high, (size, row, col)


#: volumes and rows at the defaults: tests/test_input_kinds.py
@pytest.mark.parametrize("method", [MeaningfulPerturbation, NeuroMaskAttr])
def test_a_trained_sequence_model_is_pointed_at_its_evidence_at_default_settings(method):
    task = kind_task("sequences", n=8, split="calibration")
    model = task.model
    attribution = method(model).attribute(task.inputs, target=task.targets, channels_last=False)
    scores = _positions(task, attribution)
    assert points_at(scores, task.evidence).mean() >= 0.85
