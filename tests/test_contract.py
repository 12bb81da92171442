"""The Captum contract, side effects, determinism and bad input, for every mask-optimisation
method alike, on tiny models and small inputs."""

from collections.abc import Callable
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from captum.attr import NoiseTunnel
from captum.attr import visualization as viz
from captum.metrics import infidelity, sensitivity_max
from conftest import TinyCNN, assert_same_state, model_state
from torch import nn

from captum_masks import (
    GuidedFeatureInversion,
    MeaningfulPerturbation,
    NeuroMaskAttr,
    attribution_to_image,
    image_to_numpy,
)


@dataclass
class Method:
    """How to call one method in these tests."""

    cls: type
    #: builds the explainer for a model (GFI also needs a layer)
    make: Callable = None
    #: the keyword arguments that set the number of iterations to n
    iterations: Callable[[int], dict] = lambda n: {"n_iter": n}
    #: the method explains several input tensors at once
    takes_tuples: bool = True
    #: how close a batch must be to one-by-one calls (float error of batched convolutions)
    batch_atol: float = 1e-5
    #: settings that make the result depend on nothing but the inputs and the seed
    deterministic: dict = field(default_factory=dict)
    #: settings whose first step keeps the whole input (the mask starts at 1); None if the
    #: method has no such setting
    keep_all: dict | None = field(default_factory=dict)
    #: settings under which the seed changes the result
    seeded: dict = field(default_factory=dict)

    def explainer(self, model):
        return (self.make or self.cls)(model)

    def __call__(self, model, inputs, n_iter=8, **kwargs):
        return self.explainer(model).attribute(inputs, **{**self.iterations(n_iter), **kwargs})


def last_relu(model):
    return [module for module in model.modules() if isinstance(module, nn.ReLU)][-1]


METHODS = {
    "MeaningfulPerturbation": Method(
        MeaningfulPerturbation,
        deterministic={"jitter": 0},
        keep_all={"mask_init": 1.0, "jitter": 0},
        seeded={"perturbation": "noise"},
    ),
    "NeuroMaskAttr": Method(NeuroMaskAttr, keep_all={"init_range": (60.0, 61.0)}),
    "GuidedFeatureInversion": Method(
        GuidedFeatureInversion,
        make=lambda model: GuidedFeatureInversion(model, layer=last_relu(model)),
        iterations=lambda n: {"inversion_iters": max(1, n // 4), "target_iters": n},
        takes_tuples=False,
        # min-max normalisation by a small range magnifies float error
        batch_atol=1e-4,
        keep_all=None,  # the mask is min-max normalised: never all ones
        seeded={"perturbation": "noise"},
    ),
}


@pytest.fixture(params=list(METHODS), ids=list(METHODS))
def method(request):
    return METHODS[request.param]


# ---------------------------------------------------------------- Captum contract
def test_tensor_in_tensor_out_with_input_shape(method, tiny_model, images):
    attribution = method(tiny_model, images, target=1)
    assert isinstance(attribution, torch.Tensor) and attribution.shape == images.shape
    assert attribution.min() >= 0 and attribution.max() <= 1
    # one mask per example, shared by its channels
    assert torch.equal(attribution[:, 0], attribution[:, 2])


def test_tuple_in_tuple_out(method):
    if not method.takes_tuples:
        pytest.skip("explains one image tensor")

    class TwoInputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = TinyCNN(), TinyCNN(in_channels=1)

        def forward(self, rgb, gray):
            return self.a(rgb) + self.b(gray)

    torch.manual_seed(0)
    rgb, gray = torch.randn(2, 3, 16, 16), torch.randn(2, 1, 24, 24)
    result = method(TwoInputs().eval(), (rgb, gray), target=0)
    assert isinstance(result, tuple) and len(result) == 2
    assert result[0].shape == rgb.shape and result[1].shape == gray.shape


@pytest.mark.parametrize(
    "target", [2, [0, 1, 4], torch.tensor([3, 3, 0]), torch.tensor(2), None], ids=str
)
def test_every_target_form_matches_explicit_per_example_targets(method, tiny_model, images, target):
    _, history = method(
        tiny_model, images, target=target, return_history=True, **method.deterministic
    )
    if target is None:
        expected = tiny_model(images).argmax(1).tolist()
    elif isinstance(target, torch.Tensor) and target.dim() == 0:
        expected = [int(target)] * 3
    elif isinstance(target, int):
        expected = [target] * 3
    else:
        expected = [int(t) for t in target]
    _, reference = method(
        tiny_model, images, target=expected, return_history=True, **method.deterministic
    )
    torch.testing.assert_close(history.probability, reference.probability)


def test_tuple_target_for_multidimensional_output(method, images):
    class Grid(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = TinyCNN(num_classes=6)

        def forward(self, x):
            return self.net(x).view(-1, 2, 3).softmax(dim=1)

    torch.manual_seed(0)
    model = Grid().eval()
    _, history = method(
        model,
        images,
        target=(1, 2),
        return_history=True,
        apply_softmax=False,
        **(method.keep_all or {}),
    )
    if method.keep_all is not None:
        # a mask of ones keeps the image, so the first step scores the clean output
        torch.testing.assert_close(history.probability[0], model(images)[:, 1, 2])
    method(model, images, target=[(0, 1), (1, 0), (1, 2)], apply_softmax=False)
    with pytest.raises(ValueError, match="target"):
        method(model, images, target=None)


def test_additional_forward_args_reach_the_model(method, tiny_model, images):
    _, scaled = method(
        tiny_model, images, target=0, additional_forward_args=(0.0,), return_history=True
    )
    # logits × 0 → uniform softmax over 5 classes, whatever the mask does
    torch.testing.assert_close(scaled.probability, torch.full_like(scaled.probability, 0.2))


def test_noise_tunnel_wraps_it(method, tiny_model, images):
    tunnel = NoiseTunnel(method.explainer(tiny_model))
    attribution = tunnel.attribute(
        images, nt_type="smoothgrad", nt_samples=2, target=1, stdevs=0.1, **method.iterations(8)
    )
    assert attribution.shape == images.shape
    assert torch.isfinite(attribution).all() and attribution.min() >= 0 and attribution.max() <= 1


def test_captum_metrics_run_on_it(method, tiny_model, images):
    explainer = method.explainer(tiny_model)
    attribution = explainer.attribute(images, target=1, **method.iterations(8))

    def perturb(inputs):
        noise = torch.randn_like(inputs) * 0.1
        return noise, inputs - noise

    score = infidelity(tiny_model, perturb, images, attribution, target=1, n_perturb_samples=2)
    assert score.shape == (3,) and torch.isfinite(score).all()
    sensitivity = sensitivity_max(
        explainer.attribute, images, target=1, n_perturb_samples=2, **method.iterations(4)
    )
    assert sensitivity.shape == (3,) and torch.isfinite(sensitivity).all()


def test_output_feeds_captum_visualization(method, tiny_model, images):
    attribution = method(tiny_model, images[:1], target=1)
    figure, _ = viz.visualize_image_attr(
        attribution_to_image(attribution),
        image_to_numpy(images[:1], [0.5] * 3, [0.2] * 3),
        method="blended_heat_map",
        sign="positive",
        use_pyplot=False,
    )
    assert figure is not None


def test_multiplies_by_inputs_and_no_convergence_delta(method, tiny_model):
    explainer = method.explainer(tiny_model)
    assert explainer.multiplies_by_inputs is False and explainer.has_convergence_delta() is False


# ---------------------------------------------------------------- batching and determinism
def test_batch_equals_per_example(method, tiny_model, images):
    targets = [0, 3, 1]
    settings = {"n_iter": 20, **method.deterministic}
    batched = method(tiny_model, images, target=targets, **settings)
    single = torch.cat(
        [method(tiny_model, images[i : i + 1], target=t, **settings) for i, t in enumerate(targets)]
    )
    chunked = method(tiny_model, images, target=targets, internal_batch_size=2, **settings)
    torch.testing.assert_close(batched, single, atol=method.batch_atol, rtol=0)
    torch.testing.assert_close(batched, chunked, atol=method.batch_atol, rtol=0)


def test_same_seed_same_result_other_seed_other_result(method, tiny_model, images):
    first = method(tiny_model, images, target=1, seed=7, **method.seeded)
    again = method(tiny_model, images, target=1, seed=7, **method.seeded)
    other = method(tiny_model, images, target=1, seed=8, **method.seeded)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_float64_in_float64_out(method, images):
    torch.manual_seed(0)
    model = TinyCNN().double().eval()
    attribution, history = method(
        model, images.double(), target=1, return_history=True, **method.seeded
    )
    assert attribution.dtype == torch.float64
    assert history.loss.dtype == history.probability.dtype == torch.float64


# ---------------------------------------------------------------- no side effects
def test_leaves_model_and_rng_untouched(method):
    torch.manual_seed(0)
    model = TinyCNN(dropout=0.5).train()  # training mode: dropout draws from the global RNG
    x = torch.randn(2, 3, 16, 16)
    model(x).sum().backward()  # the user has gradients of their own
    before = model_state(model)
    rng = torch.get_rng_state()
    method(model, x, target=0)
    assert torch.equal(torch.get_rng_state(), rng)
    assert_same_state(before, model_state(model))


def test_leaves_everything_untouched_when_the_model_raises_midway(method):
    torch.manual_seed(0)
    model = TinyCNN().eval()
    for p in model.head.parameters():
        p.requires_grad_(False)
    calls = {"n": 0}

    def fail_on_fifth_call(module, args, output):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("boom")

    handle = model.features.register_forward_hook(fail_on_fifth_call)
    x = torch.randn(2, 3, 16, 16)
    x_before = x.clone()
    before = model_state(model)
    rng = torch.get_rng_state()
    with pytest.raises(RuntimeError, match="boom"):
        method(model, x, target=0, **method.seeded)
    handle.remove()
    before["hooks"] = model_state(model)["hooks"]  # compare without the test's own hook
    assert_same_state(before, model_state(model))
    assert torch.equal(torch.get_rng_state(), rng) and torch.equal(x, x_before)


# ---------------------------------------------------------------- bad input
def test_zero_iterations_is_a_clear_error(method, tiny_model, images):
    with pytest.raises(ValueError, match="iter"):
        method(tiny_model, images, n_iter=0)


@pytest.mark.parametrize(
    "make_inputs, kwargs, error, message",
    [
        (
            lambda x: x.clone().index_fill_(0, torch.tensor([1]), float("nan")),
            {},
            ValueError,
            "NaN",
        ),
        (
            lambda x: x.clone().index_fill_(0, torch.tensor([0]), float("inf")),
            {},
            ValueError,
            "Inf",
        ),
        (lambda x: x[:, 0, 0], {}, ValueError, "inputs must have"),
        (lambda x: x[:0], {}, ValueError, "at least one example"),
        (lambda x: (x * 100).long(), {}, TypeError, "floating-point"),
        (lambda x: x.numpy(), {}, TypeError, "inputs must be a tensor"),
        (lambda x: x, {"target": 5}, ValueError, "out of range"),
        (lambda x: x, {"target": -1}, ValueError, "out of range"),
        (lambda x: x, {"target": [0, 1]}, ValueError, "one entry per example"),
        (lambda x: x, {"target": torch.tensor([0, 1])}, ValueError, "one entry per example"),
        (lambda x: x, {"target": 1.5}, TypeError, "target"),
        (lambda x: x, {"target": (0, 1)}, ValueError, "target"),
        (lambda x: x, {"lr": -0.1}, ValueError, "lr"),
        (lambda x: x, {"optimizer": "lbfgs"}, ValueError, "optimizer"),
        (lambda x: x, {"internal_batch_size": 0}, ValueError, "internal_batch_size"),
        (lambda x: x, {"seed": 1.5}, TypeError, "seed"),
    ],
)
def test_bad_input_is_a_clear_error_and_changes_nothing(
    method, tiny_model, images, make_inputs, kwargs, error, message
):
    inputs = make_inputs(images)
    snapshot = inputs.clone() if isinstance(inputs, torch.Tensor) else inputs.copy()
    before = model_state(tiny_model)
    with pytest.raises(error, match=message):
        method(tiny_model, inputs, **{"n_iter": 2, **kwargs})
    if isinstance(inputs, torch.Tensor):
        assert torch.equal(inputs, snapshot) or torch.isnan(snapshot).any()
    assert_same_state(before, model_state(tiny_model))


def test_forward_func_must_be_callable(method):
    with pytest.raises(TypeError, match="forward_func"):
        method.cls("model", *([nn.ReLU()] if method.make else []))
