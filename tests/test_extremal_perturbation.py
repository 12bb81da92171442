"""Extremal Perturbation on a model whose evidence is a known square of a 224-px image, the
smooth mask generator and the area constraint; the Captum contract is in test_contract.py."""

import pytest
import torch
from torch import nn

from captum_masks import BlurPyramid, ExtremalPerturbation, Optimization, SmoothMaxMask
from captum_masks.regularizers import area

# the evidence: a 48-px square, 4.6% of the image, centred left to right so that the default
# jitter (a horizontal flip every other step, harmless to a photo classifier) leaves it in place
SIDE, TOP, LEFT, SQUARE = 224, 40, 88, 48


class BrightSquare(nn.Module):
    """Class 1's logit grows with the brightness of the square (slope 40, so that a pixel of
    the square moves the logit about as much as an object's pixel moves an ImageNet
    classifier's, against which λ = 300 was set); class 0's is its negation."""

    def forward(self, x):
        evidence = x[:, :, TOP : TOP + SQUARE, LEFT : LEFT + SQUARE].mean(dim=(1, 2, 3)) - 0.6
        return torch.stack([-40 * evidence, 40 * evidence], dim=1)


def images(count: int = 2) -> torch.Tensor:
    x = 0.2 * torch.rand(count, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0))
    x[:, :, TOP : TOP + SQUARE, LEFT : LEFT + SQUARE] += 1.0
    return x


def mass_on_square(attribution: torch.Tensor) -> torch.Tensor:
    inside = attribution[:, 0, TOP : TOP + SQUARE, LEFT : LEFT + SQUARE].sum(dim=(1, 2))
    return inside / attribution[:, 0].sum(dim=(1, 2))


@pytest.mark.parametrize("game", ["preservation", "deletion", "dual"])
def test_each_game_finds_the_square_at_its_area(game):
    attribution = ExtremalPerturbation(BrightSquare().eval()).attribute(
        images(), target=1, areas=0.05, game=game
    )
    assert attribution.shape == (2, 3, SIDE, SIDE)
    # the mask is nearly flat at 1 over its region, so its centre says where it is, not argmax
    weights = attribution[:, 0] / attribution[:, 0].sum(dim=(1, 2), keepdim=True)
    positions = torch.arange(SIDE, dtype=weights.dtype)
    rows = (weights.sum(dim=2) * positions).sum(dim=1)
    cols = (weights.sum(dim=1) * positions).sum(dim=1)
    assert ((rows >= TOP) & (rows < TOP + SQUARE) & (cols >= LEFT) & (cols < LEFT + SQUARE)).all()
    # five times the square's share of the image: the smooth mask's soft edge (σ = 21 px)
    # spills around a square this small
    assert (mass_on_square(attribution) >= 5 * SQUARE**2 / SIDE**2).all()
    # the area constraint is met: about 5% of the image is kept
    torch.testing.assert_close(
        attribution[:, 0].mean(dim=(1, 2)), torch.full((2,), 0.05), atol=0.02, rtol=0
    )


def test_several_areas_are_rows_of_one_batch_and_their_masks_are_averaged():
    explainer = ExtremalPerturbation(BrightSquare().eval())
    x = images(1)
    both, history = explainer.attribute(
        x, target=1, areas=(0.03, 0.08), return_history=True, optimization=Optimization(n_iter=60)
    )
    alone = [
        explainer.attribute(x, target=1, areas=a, optimization=Optimization(n_iter=60))
        for a in (0.03, 0.08)
    ]
    torch.testing.assert_close(both, (alone[0] + alone[1]) / 2, atol=1e-5, rtol=0)
    assert history.loss.shape == (60, 2)  # one column per (image, area)
    assert alone[0][:, 0].mean() < alone[1][:, 0].mean()


def test_the_smooth_mask_is_one_across_a_region_of_ones_and_follows_its_parameters():
    generator = SmoothMaxMask(step=7, sigma=21.0, stride=1)
    params = torch.zeros(1, 1, 32, 32)
    params[0, 0, 10:20, 12:22] = 1.0  # pixels 70-140 by 84-154
    mask = generator.expand(params, (SIDE, SIDE))[0, 0]
    assert mask[95:115, 110:130].min() > 0.95  # deep inside the region
    assert mask[:20].max() < 0.05 and mask[:, 200:].max() < 0.05  # far outside it
    # evaluated every 4 px and upsampled: close to the exact mask
    fast = SmoothMaxMask(step=7, sigma=21.0).expand(params, (SIDE, SIDE))[0, 0]
    assert (fast - mask).abs().mean() < 0.01


@pytest.mark.parametrize("temperature", [0.0, 20.0, 200.0])
def test_the_smooth_maximum_has_the_gradient_of_its_values(temperature):
    # the shifted softmax (T ≤ 80), the maximum-shifted one (T = 200) and the plain mean (T = 0)
    generator = SmoothMaxMask(step=5, sigma=9.0, temperature=temperature, stride=3, margin=5.0)
    params = torch.rand(
        2, 1, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    assert torch.autograd.gradcheck(
        lambda p: generator.evaluated(p, (23, 30)), (params.requires_grad_(True),)
    )


def test_the_margin_band_holds_what_a_region_at_the_border_spills_and_the_area_pays_for_it():
    banded, plain = SmoothMaxMask(margin=21.0), SmoothMaxMask(margin=0.0)
    params = torch.zeros(2, 1, 32, 32)
    params[0, 0, :8, :8] = 1.0  # a region in the top-left corner
    params[1, 0, 12:20, 12:20] = 1.0  # the same region in the middle
    evaluated = banded.evaluated(params, (SIDE, SIDE))
    assert evaluated.shape == (2, 1, 56 + 2 * 5, 56 + 2 * 5)  # 5 points of 4 px per side
    torch.testing.assert_close(
        banded.inside(evaluated, (SIDE, SIDE)), plain.evaluated(params, (SIDE, SIDE))
    )
    torch.testing.assert_close(
        banded.expand(params, (SIDE, SIDE)), plain.expand(params, (SIDE, SIDE))
    )
    band = evaluated.clone()
    band[..., 5:-5, 5:-5] = 0
    assert band[0].max() > 0.5 and band[1].max() < 1e-3  # spilled over the border, or not
    assert banded.inside_fraction(evaluated, (SIDE, SIDE)) == 56**2 / 66**2
    # the same region in the image costs more at the border once its spill is counted
    kept = plain.evaluated(params, (SIDE, SIDE))[:, 0].mean(dim=(1, 2))
    fractions = kept * banded.inside_fraction(evaluated, (SIDE, SIDE))
    banded_cost = area(evaluated, fractions)
    plain_cost = area(plain.evaluated(params, (SIDE, SIDE)), kept)
    assert banded_cost[0] > 2 * plain_cost[0]
    assert banded_cost[0] > 1.5 * banded_cost[1]


def test_the_area_term_is_zero_for_a_binary_mask_of_its_area_and_takes_one_area_per_row():
    mask = torch.zeros(2, 1, 10, 10)
    mask[0, 0, :2] = 1.0  # 20% of the pixels
    mask[1, 0, :5] = 1.0  # 50%
    torch.testing.assert_close(area(mask, torch.tensor([0.2, 0.5])), torch.zeros(2))
    assert (area(mask, torch.tensor([0.5, 0.2])) > 0).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (lambda: {"areas": 0.0}, "areas"),
        (lambda: {"areas": (0.1, 1.2)}, "areas"),
        (lambda: {"game": "both"}, "game"),
        (lambda: {"reward": "soft"}, "reward"),
        (lambda: {"perturbation": "noise"}, "perturbation"),
        (lambda: {"perturbation": "blur", "baselines": 0.0}, "baselines"),
        (lambda: {"perturbation": BlurPyramid(levels=1)}, "levels"),
        (lambda: {"mask": SmoothMaxMask(stride=0)}, "stride"),
        (lambda: {"mask": SmoothMaxMask(margin=-1.0)}, "margin"),
    ],
)
def test_bad_options_are_clear_errors_before_the_model_runs(kwargs, message):
    def model(x):
        raise AssertionError("the model ran before the arguments were checked")

    with pytest.raises(ValueError, match=message):
        ExtremalPerturbation(model).attribute(torch.rand(1, 3, 16, 16), target=0, **kwargs())
