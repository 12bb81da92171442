"""Warm starts (``Optimization.start``): a map put into each method's own mask, Grad-CAM as
Captum computes it, the one-by-one result for a batch with every start, and clear errors."""

import warnings

import pytest
import torch
from captum.attr import LayerGradCam, Saliency
from conftest import TinyCNN, assert_same_state, model_state
from hypothesis import given, settings
from hypothesis import strategies as st

from captum_masks import (
    ExtremalPerturbation,
    GuidedFeatureInversion,
    MeaningfulPerturbation,
    NeuroMaskAttr,
    Optimization,
    UpsampledMask,
)
from captum_masks._engine.layout import MaskLayout
from captum_masks._engine.warm_start import evidence_map, warm_started
from captum_masks.masks.interpolation import upsample_linearly

METHODS = [MeaningfulPerturbation, NeuroMaskAttr, ExtremalPerturbation]


def prepared(model, images, target):
    return MeaningfulPerturbation(model)._prepare(images, (images,), target, None)


def test_the_gradcam_start_is_captums_layer_grad_cam_at_the_last_feature_map():
    torch.manual_seed(0)
    model = TinyCNN().eval()
    images = torch.rand(3, 3, 12, 12)
    targets = torch.tensor([0, 2, 4])
    before = model_state(model)
    evidence = evidence_map("gradcam", prepared(model, images, targets), MaskLayout(False))
    assert_same_state(before, model_state(model))  # no .grad, no hook left behind
    # the last module whose output has the image's axes: the feature extractor as a whole
    captum = LayerGradCam(model, model.features).attribute(images, target=targets)
    cam = upsample_linearly(captum.clamp_min(0), (12, 12))
    expected = cam / cam.flatten(1).amax(dim=1).view(3, 1, 1, 1)
    torch.testing.assert_close(evidence, expected)


@pytest.mark.parametrize("keeps", [True, False])
def test_a_map_start_is_scaled_by_its_maximum_and_averaged_over_each_cell(keeps):
    images = torch.rand(2, 3, 8, 8)
    importance = torch.arange(2 * 64, dtype=torch.float).view(2, 8, 8) - 10.0
    call = prepared(TinyCNN().eval(), images, 1)
    started = warm_started(UpsampledMask(factor=4), importance, call, MaskLayout(False), keeps)
    positive = importance.clamp_min(0)
    scaled = positive / positive.flatten(1).amax(dim=1).view(2, 1, 1)
    cells = scaled.view(2, 1, 2, 4, 2, 4).mean(dim=(3, 5))
    assert started.start is not None
    torch.testing.assert_close(started.start, cells if keeps else 1.0 - cells)
    # an input-shaped map (another method's attribution) counts its channels together
    spread = (importance / 3).unsqueeze(1).expand(2, 3, 8, 8)
    again = warm_started(UpsampledMask(factor=4), spread, call, MaskLayout(False), keeps)
    torch.testing.assert_close(again.start, started.start)


def test_a_map_with_nothing_positive_says_nothing():
    call = prepared(TinyCNN().eval(), torch.rand(2, 3, 8, 8), 1)
    evidence = evidence_map(-torch.rand(2, 8, 8), call, MaskLayout(False))
    assert torch.equal(evidence, torch.full((2, 1, 8, 8), 0.5))


@settings(max_examples=8, deadline=None)
@given(
    method=st.sampled_from(METHODS),
    start=st.sampled_from(["auto", "gradcam", "map", "attribution method"]),
    seed=st.integers(0, 100),
)
def test_every_start_gives_a_batch_its_one_by_one_masks(method, start, seed):
    torch.manual_seed(seed)
    model = TinyCNN().eval()
    images = torch.rand(3, 3, 16, 16)
    targets = torch.tensor([1, 3, 0])
    maps = torch.rand(3, 16, 16)
    starts = {"auto": "auto", "gradcam": "gradcam", "attribution method": Saliency(model)}
    explainer = method(model)

    def explain(rows):
        begin = maps[rows] if start == "map" else starts[start]
        quick = Optimization(start=begin, n_iter=4)
        return explainer.attribute(images[rows], target=targets[rows], optimization=quick)

    together = explain(slice(0, 3))
    one_by_one = torch.cat([explain(slice(row, row + 1)) for row in range(3)])
    # a batched convolution may round differently from one-by-one calls: a float32 tolerance
    torch.testing.assert_close(together, one_by_one, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_a_start_moves_the_first_mask_to_the_evidence(method):
    """One step from a start that marks the top-left quarter: the mask differs from the
    method's own start there and nowhere near as much elsewhere."""
    model = TinyCNN().eval()
    images = torch.rand(1, 3, 32, 32)
    quarter = torch.zeros(1, 32, 32)
    quarter[:, :16, :16] = 1.0
    one_step = Optimization(n_iter=1, lr=1e-6)
    own = method(model).attribute(images, target=1, optimization=one_step)[0, 0]
    warm = method(model).attribute(
        images, target=1, optimization=Optimization(start=quarter, n_iter=1, lr=1e-6)
    )[0, 0]
    # importance is what the mask keeps or must delete: high on the marked quarter
    assert warm[4:12, 4:12].mean() > warm[20:28, 20:28].mean() + 0.3
    assert not torch.allclose(own, warm)


def test_starts_that_cannot_apply_are_clear_errors():
    model = TinyCNN().eval()
    images = torch.rand(2, 3, 8, 8)
    before = model_state(model)
    with pytest.raises(ValueError, match="shape"):
        MeaningfulPerturbation(model).attribute(
            images, target=1, optimization=Optimization(start=torch.rand(2, 7, 7))
        )
    with pytest.raises(ValueError, match="feature_mask"):
        NeuroMaskAttr(model).attribute(
            images,
            target=1,
            feature_mask=torch.zeros(1, 1, 8, 8, dtype=torch.long),
            optimization=Optimization(start="gradcam"),
        )
    with pytest.raises(ValueError, match="start"):
        Optimization(start="saliency")
    with pytest.raises(TypeError, match="start"):
        Optimization(start=0.5)
    # "auto" is each method's best start: GuidedFeatureInversion's is its own
    gfi = GuidedFeatureInversion(model, model.features)
    auto = Optimization(start="auto", n_iter=2)
    torch.testing.assert_close(
        gfi.attribute(images, target=1, optimization=auto),
        gfi.attribute(images, target=1, optimization=Optimization(n_iter=2)),
    )
    with pytest.raises(ValueError, match="GuidedFeatureInversion takes no optimization.start"):
        GuidedFeatureInversion(model, model.features).attribute(
            images, target=1, optimization=Optimization(start="gradcam")
        )
    rows = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="rows"):
            MeaningfulPerturbation(rows).attribute(
                torch.rand(2, 4), target=1, optimization=Optimization(start="gradcam")
            )
    flat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 10, 3)).eval()
    with pytest.raises(ValueError, match="feature map"):  # no output keeps the positions
        MeaningfulPerturbation(flat).attribute(
            torch.rand(2, 2, 10),
            target=1,
            channels_last=False,
            optimization=Optimization(start="gradcam"),
        )
    assert_same_state(before, model_state(model))


@pytest.mark.parametrize("method", METHODS)
def test_the_auto_start_is_gradcam_with_the_warm_budget_where_the_model_has_a_feature_map(
    method,
):
    model = TinyCNN().eval()
    images = torch.rand(2, 3, 16, 16)
    explainer = method(model)
    auto, auto_history = explainer.attribute(
        images, target=1, optimization=Optimization(start="auto"), return_history=True
    )
    gradcam = explainer.attribute(images, target=1, optimization=Optimization(start="gradcam"))
    torch.testing.assert_close(auto, gradcam)
    assert auto_history.loss.shape[0] == method.warm_optimization.n_iter
    assert method.warm_optimization.n_iter < method.default_optimization.n_iter
    _, cold_history = explainer.attribute(images, target=1, return_history=True)
    assert cold_history.loss.shape[0] == method.default_optimization.n_iter
    # a field the caller sets is used as given, also from a warm start
    _, given_history = explainer.attribute(
        images, target=1, optimization=Optimization(start="auto", n_iter=3), return_history=True
    )
    assert given_history.loss.shape[0] == 3


class ChannelsLast(torch.nn.Module):
    """A CNN over (N, H, W, C) inputs: positions along the middle axes (e.g. token layers)."""

    def __init__(self, cnn):
        super().__init__()
        self.cnn = cnn

    def forward(self, x):
        return self.cnn(x.permute(0, 3, 1, 2))


def _no_feature_map(images):
    """A plain function (no module to find a feature map in) over (N, C, H, W) images."""
    return torch.stack([images.mean(dim=(1, 2, 3)), images[:, :, :2, :2].mean(dim=(1, 2, 3))], 1)


@pytest.mark.parametrize(
    "method", [MeaningfulPerturbation, NeuroMaskAttr]
)  # ExtremalPerturbation takes images only: its fallback is the plain function's
def test_the_auto_start_falls_back_to_the_methods_own_where_grad_cam_cannot_apply(method):
    rows = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    flat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 10, 3)).eval()
    cases = [
        (rows, torch.rand(2, 4), {}),  # rows (N, F)
        (flat, torch.rand(2, 2, 10), {"channels_last": False}),  # no output keeps positions
        (_no_feature_map, torch.rand(2, 3, 8, 8), {}),  # not a module
        (ChannelsLast(TinyCNN()).eval(), torch.rand(2, 8, 8, 3), {"channels_last": True}),
        (TinyCNN(dropout=0.5).train(), torch.rand(2, 3, 8, 8), {}),  # a batch-dependent map
    ]
    for model, inputs, options in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a random model's flat score
            auto = Optimization(start="auto")
            _, history = method(model).attribute(
                inputs, target=1, optimization=auto, return_history=True, **options
            )
        assert history.loss.shape[0] == method.default_optimization.n_iter


def test_extremal_perturbations_auto_start_falls_back_to_its_own_without_a_module():
    _, history = ExtremalPerturbation(_no_feature_map).attribute(
        torch.rand(1, 3, 16, 16),
        target=1,
        optimization=Optimization(start="auto"),
        return_history=True,
    )
    assert history.loss.shape[0] == ExtremalPerturbation.default_optimization.n_iter


class RegionScore(torch.nn.Module):
    """Class 1's logit is 4 × the mean of the top-left 4 × 4 pixels, minus 2; class 0's is 0."""

    def forward(self, x):
        evidence = 4 * x[:, :, :4, :4].mean(dim=(1, 2, 3)) - 2
        return torch.stack([torch.zeros_like(evidence), evidence], dim=1)


#: MeaningfulPerturbation's preservation game on the pixels: keeping exactly the top-left
#: quarter is optimal (its score's gradient outweighs the L1 term there, nothing else matters)
EXACT_GAME = {
    "game": "preservation",
    "perturbation": "constant",
    "baselines": 0.0,
    "mask": UpsampledMask(factor=1, smooth_sigma=0, jitter=0),
    "tv_weight": 0.0,
}


def test_a_warm_start_at_the_optimum_settles_within_a_few_steps():
    images = torch.zeros(1, 1, 8, 8)
    images[..., :4, :4] = 1.0
    optimum = torch.zeros(1, 8, 8)
    optimum[:, :4, :4] = 1.0
    explainer = MeaningfulPerturbation(RegionScore())

    def explain(start):
        settle = Optimization(start=start, settled=1e-4, patience=3, tolerance=None)
        return explainer.attribute(
            images, target=1, optimization=settle, return_history=True, **EXACT_GAME
        )

    warm, warm_history = explain(optimum)
    assert int(warm_history.steps) <= 4  # the first step anchors, then three still ones
    assert torch.equal(warm[0, 0], optimum[0])
    # the method's own start reaches the same optimum, in more steps
    cold, cold_history = explain(None)
    assert torch.equal(cold[0, 0], optimum[0])
    assert int(cold_history.steps) > int(warm_history.steps) + 3
