"""GuidedFeatureInversion: layers and hooks, both stages, class discrimination, architectures,
options and errors (the shared contract is in test_contract.py)."""

import pytest
import torch
import torchvision
from conftest import NormCNN, TinyCNN, assert_same_state, model_state
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from captum_masks import GuidedFeatureInversion, InversionStage, Optimization


class ColourClassifier(nn.Module):
    """Class 0 is "red", class 1 "green": each logit is the spatial mean of one colour detector.

    The detectors are the feature maps the mask is built from, so explaining class 0 must put the
    mask on the red object and explaining class 1 on the green one.
    """

    def __init__(self):
        super().__init__()
        self.detectors = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.detectors.weight.copy_(
                torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0]]).view(2, 3, 1, 1)
            )
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.detectors(x)).mean(dim=(2, 3)) * 20.0


def two_objects():
    image = torch.zeros(1, 3, 32, 32)
    image[:, 0, 4:12, 4:12] = 1.0  # red, top left
    image[:, 1, 20:28, 20:28] = 1.0  # green, bottom right
    red = torch.zeros(32, 32, dtype=torch.bool)
    red[4:12, 4:12] = True
    green = torch.zeros(32, 32, dtype=torch.bool)
    green[20:28, 20:28] = True
    return image, red, green


@pytest.mark.parametrize("explained, other", [(0, 1), (1, 0)])
def test_explaining_each_class_highlights_its_own_object(explained, other):
    model = ColourClassifier()
    image, red, green = two_objects()
    regions = {0: red, 1: green}
    gfi = GuidedFeatureInversion(model, layer=model.relu)
    mask = gfi.attribute(image, target=explained, perturbation="constant", baselines=0.0)[0, 0]
    assert mask[regions[explained]].mean() > 0.8
    assert mask[regions[other]].mean() < 0.2


#: one stage-2 step at a negligible rate, so the mask is where stage 2 starts (and stage 1's ω
#: stays at its uniform start, which keeps both objects)
FROZEN_STAGES = {
    "perturbation": "constant",
    "baselines": 0.0,
    "optimization": Optimization(n_iter=1, lr=1e-9),
}


@pytest.mark.parametrize("explained, other", [(0, 1), (1, 0)])
def test_stage_two_starts_from_the_explained_class_channels_and_inversion_keeps_both(
    explained, other
):
    model = ColourClassifier()
    image, red, green = two_objects()
    regions = {0: red, 1: green}
    gfi = GuidedFeatureInversion(model, layer=model.relu)
    start = gfi.attribute(image, target=explained, **FROZEN_STAGES)[0, 0]
    assert start[regions[explained]].min() > 0.99 and start[regions[other]].max() < 0.01
    paper = gfi.attribute(image, target=explained, target_start="inversion", **FROZEN_STAGES)
    assert paper[0, 0][regions[other]].mean() > 0.5


def test_gradient_start_works_on_a_frozen_model_and_leaves_it_as_found():
    model = ColourClassifier().requires_grad_(False)
    image, red, green = two_objects()
    before = model_state(model)
    mask = GuidedFeatureInversion(model, layer=model.relu).attribute(
        image, target=1, **FROZEN_STAGES
    )[0, 0]
    assert mask[green].min() > 0.99 and mask[red].max() < 0.01
    assert_same_state(before, model_state(model))


def test_inversion_stage_is_class_agnostic_and_shorter():
    model = ColourClassifier()
    image, red, green = two_objects()
    gfi = GuidedFeatureInversion(model, layer=model.relu)
    # γ = 0: stage 1 is pure feature inversion, which needs both objects
    settings = {
        "perturbation": "constant",
        "baselines": 0.0,
        "return_history": True,
        "inversion": InversionStage(l1_weight=0.0),
    }
    salient, inversion = gfi.attribute(image, stage="inversion", **settings)
    for target in (0, 1):
        other, _ = gfi.attribute(image, target=target, stage="inversion", **settings)
        torch.testing.assert_close(other, salient)  # stage 1 never looks at the class
    assert salient[0, 0][red].mean() > 0.5 and salient[0, 0][green].mean() > 0.5
    _, both = gfi.attribute(image, target=0, **settings)
    both_stages = InversionStage().n_iter + GuidedFeatureInversion.default_optimization.n_iter
    assert inversion.loss.shape[0] == InversionStage().n_iter
    assert both.loss.shape[0] == both_stages and (both.steps == both_stages).all()


def test_layer_outside_the_model_is_a_clear_error():
    model = TinyCNN()
    with pytest.raises(ValueError, match="layer .* is not a submodule"):
        GuidedFeatureInversion(model, layer=nn.ReLU())
    with pytest.raises(ValueError, match="mask_layer .* is not a submodule"):
        GuidedFeatureInversion(model, layer=model.features[1], mask_layer=nn.Conv2d(1, 1, 1))
    with pytest.raises(TypeError, match="layer must be an nn.Module"):
        GuidedFeatureInversion(model, layer="features.1")


def test_layer_that_never_runs_is_a_clear_error_and_leaves_no_hook():
    model = TinyCNN().eval()
    model.unused = nn.ReLU()
    before = model_state(model)
    gfi = GuidedFeatureInversion(model, layer=model.unused)
    with pytest.raises(ValueError, match="did not run during the forward pass"):
        gfi.attribute(torch.randn(2, 3, 16, 16), target=0)
    assert_same_state(before, model_state(model))


def test_layer_the_model_calls_twice_is_a_clear_error_and_leaves_no_hook():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=4).eval()
    shared = model.layer4[1].relu  # a BasicBlock applies its one ReLU module twice
    before = model_state(model)
    gfi = GuidedFeatureInversion(model, layer=model.layer4, mask_layer=shared)
    with pytest.raises(ValueError, match="ReLU runs more than once in one forward pass"):
        gfi.attribute(torch.randn(1, 3, 32, 32), target=0)
    assert_same_state(before, model_state(model))


@pytest.mark.parametrize(
    "build, layer, mask_layer",
    [
        (torchvision.models.vgg11, lambda m: m.features[19], lambda m: m.features[18]),
        (torchvision.models.resnet18, lambda m: m.layer4, lambda m: m.layer4[1].conv2),
    ],
    ids=["vgg11", "resnet18"],
)
def test_runs_on_torchvision_architectures_and_leaves_them_untouched(build, layer, mask_layer):
    torch.manual_seed(0)
    model = build(weights=None, num_classes=4).eval()
    x = torch.randn(2, 3, 64, 64)
    before = model_state(model)
    gfi = GuidedFeatureInversion(model, layer=layer(model), mask_layer=mask_layer(model))
    attribution = gfi.attribute(
        x, target=[0, 3], inversion=InversionStage(n_iter=2), optimization=Optimization(n_iter=3)
    )
    assert attribution.shape == x.shape
    assert torch.isfinite(attribution).all() and 0 <= attribution.min() <= attribution.max() <= 1
    assert_same_state(before, model_state(model))


@given(area_weight=st.floats(0.0, 8.0), apply_softmax=st.booleans())
@settings(max_examples=6, deadline=None)
def test_area_weight_adds_the_mask_mean_times_the_clean_score_to_the_stage_two_loss(
    area_weight, apply_softmax
):
    torch.manual_seed(0)
    model = TinyCNN().eval()
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        scores = model(images)
    clean = (scores.softmax(dim=1) if apply_softmax else scores)[:, 1].abs()
    gfi = GuidedFeatureInversion(model, layer=model.features[3])
    salient = gfi.attribute(images, stage="inversion", inversion=InversionStage(n_iter=4))
    losses = [
        gfi.attribute(
            images,
            target=1,
            area_weight=beta,
            apply_softmax=apply_softmax,
            target_start="inversion",
            return_history=True,
            inversion=InversionStage(n_iter=4),
            optimization=Optimization(n_iter=2),
        )[1].loss[4]  # stage 2's first row, taken at stage 1's ω
        for beta in (0.0, area_weight)
    ]
    added = area_weight * clean * salient[:, 0].mean(dim=(1, 2))
    torch.testing.assert_close(losses[1] - losses[0], added)


def test_lr_is_halved_every_10_iterations_of_stage_2_by_default():
    model = ColourClassifier()
    image, _, _ = two_objects()
    seen = []

    def recording_adam(params, lr):
        optimizer = torch.optim.Adam(params, lr=lr)
        seen.append(optimizer)
        return optimizer

    GuidedFeatureInversion(model, layer=model.relu).attribute(
        image, target=0, optimization=Optimization(optimizer=recording_adam, lr=0.08, n_iter=25)
    )
    stage_one, stage_two = seen
    assert stage_one.param_groups[0]["lr"] == pytest.approx(0.08)  # no schedule in stage 1
    assert stage_two.param_groups[0]["lr"] == pytest.approx(0.08 / 4)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"stage": "both"}, ValueError, "stage"),
        ({"activation": "gelu"}, ValueError, "activation"),
        ({"inversion": lambda: InversionStage(l1_weight=-1.0)}, ValueError, "l1_weight"),
        ({"area_weight": -0.1}, ValueError, "area_weight"),
        ({"perturbation": "pixelate"}, ValueError, "perturbation"),
        ({"optimization": lambda: Optimization(n_iter=0)}, ValueError, "n_iter"),
        ({"inversion": lambda: InversionStage(n_iter=0)}, ValueError, "n_iter"),
        ({"target_start": "zeros"}, ValueError, "target_start"),
    ],
)
def test_bad_option_is_a_clear_error_and_changes_nothing(
    tiny_model, images, kwargs, error, message
):
    before = model_state(tiny_model)
    gfi = GuidedFeatureInversion(tiny_model, layer=tiny_model.features[3])
    with pytest.raises(error, match=message):
        built = {k: v() if callable(v) else v for k, v in kwargs.items()}
        gfi.attribute(images, target=0, **built)
    assert_same_state(before, model_state(tiny_model))


def test_one_image_tensor_only(tiny_model, images):
    gfi = GuidedFeatureInversion(tiny_model, layer=tiny_model.features[3])
    with pytest.raises(ValueError, match="one image tensor"):
        gfi.attribute((images, images), target=0)


@pytest.mark.parametrize("name", ["layer", "mask_layer"])
def test_a_layer_without_feature_maps_is_a_clear_error(tiny_model, images, name):
    """A linear layer gives (N, classes): no feature maps to build a mask from."""
    layers = {"layer": tiny_model.features[-1], name: tiny_model.head}
    before = model_state(tiny_model)
    message = rf"{name} must output \(N, C, h, w\) feature maps.*\(3, 5\)"
    with pytest.raises(ValueError, match=message):
        GuidedFeatureInversion(tiny_model, **layers).attribute(images, target=0)
    assert_same_state(before, model_state(tiny_model))


@pytest.mark.parametrize(
    "compile_model",
    [torch.jit.script, lambda m: torch.jit.trace(m, torch.rand(1, 3, 8, 8))],
    ids=["script", "trace"],
)
def test_a_torchscript_model_is_a_clear_error(compile_model):
    scripted = compile_model(NormCNN().eval())
    with pytest.raises(TypeError, match="layer must be a module of an eager .*TorchScript"):
        GuidedFeatureInversion(scripted, layer=scripted.relu)
