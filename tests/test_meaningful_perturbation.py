"""MeaningfulPerturbation: what it finds, its options and its errors (the shared contract is in
test_contract.py)."""

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from conftest import SpotDetector, TinyCNN, assert_same_state, model_state
from hypothesis import given
from hypothesis import strategies as st

from captum_masks import MeaningfulPerturbation, Optimization, UpsampledMask

FAST = {"optimization": Optimization(n_iter=8)}


# ---------------------------------------------------------------- what it finds
@pytest.mark.parametrize("game", ["deletion", "preservation"])
def test_points_at_the_evidence(game):
    model = SpotDetector(top=20, left=4, side=8)
    image = torch.full((1, 3, 32, 32), 0.1)
    image[..., 20:28, 4:12] = 1.0
    attribution = MeaningfulPerturbation(model).attribute(
        image,
        target=1,
        game=game,
        perturbation="constant",
        baselines=0.0,
    )[0, 0]
    inside = attribution[20:28, 4:12].mean()
    outside = torch.cat([attribution[:16].flatten(), attribution[:, 16:].flatten()]).mean()
    assert inside > outside + 0.3
    row, col = divmod(attribution.argmax().item(), 32)
    assert 18 <= row < 30 and 2 <= col < 14


def test_history_records_the_decreasing_target_probability(tiny_model, images):
    _, history = MeaningfulPerturbation(tiny_model).attribute(
        images, target=0, return_history=True, optimization=Optimization(n_iter=40, lr=0.2)
    )
    assert history.loss.shape == history.probability.shape == (40, 3)
    # early stopping is on by default: each example's record ends where it stopped
    for k, steps in enumerate(history.steps.tolist()):
        assert 1 < steps <= 40 and torch.isnan(history.probability[steps:, k]).all()
        assert history.probability[steps - 1, k] < history.probability[0, k]
    _, full = MeaningfulPerturbation(tiny_model).attribute(
        images,
        target=0,
        return_history=True,
        optimization=Optimization(n_iter=40, lr=0.2, tolerance=None),
    )
    assert (full.steps == 40).all() and not torch.isnan(full.probability).any()


@given(
    batch=st.integers(1, 3),
    height=st.integers(8, 24),
    width=st.integers(8, 24),
    game=st.sampled_from(["deletion", "preservation"]),
    perturbation=st.sampled_from(["blur", "constant", "noise"]),
    factor=st.integers(1, 8),
    jitter=st.integers(0, 4),
    optimizer=st.sampled_from(["adam", "rmsprop", "sgd"]),
)
def test_any_shape_and_setting_gives_finite_values_in_unit_range(
    batch, height, width, game, perturbation, factor, jitter, optimizer
):
    torch.manual_seed(0)
    model = TinyCNN().eval()
    x = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(batch))
    attribution = MeaningfulPerturbation(model).attribute(
        x,
        game=game,
        perturbation=perturbation,
        mask=UpsampledMask(factor=factor, jitter=jitter),
        optimization=Optimization(optimizer=optimizer, n_iter=3),
    )
    assert attribution.shape == x.shape
    assert torch.isfinite(attribution).all() and attribution.min() >= 0 and attribution.max() <= 1


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"game": "hide"}, "game"),
        ({"perturbation": "pixelate"}, "perturbation"),
        ({"perturbation": "blur", "baselines": 0.0}, "baselines"),
        ({"perturbation": "constant", "baselines": torch.zeros(2, 2)}, "baselines"),
        ({"mask": lambda: UpsampledMask(init_value=2.0)}, "init_value"),
        ({"mask": lambda: UpsampledMask(factor=0)}, "factor"),
        ({"tv_weight": -1.0}, "tv_weight"),
    ],
)
def test_bad_option_is_a_clear_error_and_changes_nothing(tiny_model, images, kwargs, message):
    snapshot = images.clone()
    before = model_state(tiny_model)
    with pytest.raises(ValueError, match=message):
        built = {k: v() if callable(v) else v for k, v in kwargs.items()}
        optimization = Optimization(n_iter=2)
        MeaningfulPerturbation(tiny_model).attribute(images, optimization=optimization, **built)
    assert torch.equal(images, snapshot)
    assert_same_state(before, model_state(tiny_model))


@pytest.mark.parametrize(
    "make_inputs, kwargs, message",
    [
        (lambda x: x[:, 0, 0], {"perturbation": "blur"}, r"perturbation='blur' needs inputs with"),
        (lambda x: (x, x[:, 0, 0]), {}, r"mixing \(N, F\) rows .* pass a feature_mask"),
        (lambda x: x[..., None, None], {}, r"at most 3 spatial axes .* feature_mask"),
        (lambda x: x, {"feature_mask": torch.zeros(3, 3)}, r"feature_mask must hold integer"),
        (lambda x: x, {"feature_mask": torch.zeros(1, 1, 5, 5, dtype=torch.long)}, r"broadcast"),
        (lambda x: x, {"feature_mask": (torch.zeros(1, dtype=torch.long),) * 2}, r"one integer"),
    ],
)
def test_input_kinds_it_cannot_mask_are_a_clear_error_before_the_model_runs(
    images, make_inputs, kwargs, message
):
    def model(*args):
        raise AssertionError("the model ran before the arguments were checked")

    with pytest.raises((ValueError, TypeError), match=message):
        MeaningfulPerturbation(model).attribute(
            make_inputs(images), **kwargs, optimization=Optimization(n_iter=2)
        )


class LinearRows(torch.nn.Module):
    """Two classes over 10 features: features 2 and 7 decide, every other feature nudges the
    logit by a tenth as much."""

    def forward(self, rows):
        weights = torch.full((10,), 0.3, dtype=rows.dtype)
        weights[[2, 7]] = 4.0
        logit = rows @ weights
        return torch.stack([-logit, logit], dim=1)


def test_the_deletion_stops_at_the_references_score_instead_of_crossing_the_boundary():
    # the other features' nudges cancel: with 2 and 7 deleted the row sits on the boundary,
    # where the constant reference (0) sits; pushing past it would delete the positive ones
    row = torch.tensor([[1.0, -1.0, 2.0, 1.0, -1.0, 1.0, -1.0, 2.0, 1.0, -1.0]])
    attribution = MeaningfulPerturbation(LinearRows()).attribute(row, target=1)
    assert attribution[0, [2, 7]].min() > 0.9
    assert attribution[0, [2, 7]].sum() / attribution.sum() > 0.9
