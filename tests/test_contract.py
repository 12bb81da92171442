"""The Captum contract, side effects, determinism and bad input, for every mask-optimisation
method alike, on tiny models and small inputs."""

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from captum.attr import NoiseTunnel
from captum.metrics import sensitivity_max
from conftest import (
    NormCNN,
    TinyCNN,
    TwoInputs,
    assert_captum_metrics_run,
    assert_feeds_captum_visualization,
    assert_same_state,
    assert_valid_mask_or_clear_error,
    explicit_targets,
    fail_on_call,
    model_state,
)
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from torch import nn

from captum_masks import (
    Blur,
    BlurPyramid,
    ExtremalPerturbation,
    GuidedFeatureInversion,
    MeaningfulPerturbation,
    NeuroMaskAttr,
    Noise,
    Optimization,
)
from captum_masks.bench.runners import method_arguments


@dataclass
class Method:
    """How to call one method in these tests."""

    cls: type
    #: builds the explainer for a model (GFI also needs a layer)
    make: Callable = None
    #: the keyword arguments that set the number of iterations to n
    iterations: Callable[[int], dict] = lambda n: {"optimization.n_iter": n}
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
    #: the method draws random numbers (a seed changes its result under ``seeded``)
    draws_random: bool = True
    #: hypothesis strategies for the method's own options, valid and invalid values alike
    fuzzed: dict = field(default_factory=dict)

    def explainer(self, model):
        return (self.make or self.cls)(model)

    def __call__(self, model, inputs, n_iter=8, **settings):
        """``settings`` as the bench's ``--set`` takes them: ``"optimization.n_iter"`` is the
        field ``n_iter`` of the ``optimization`` argument."""
        explainer = self.explainer(model)
        arguments = method_arguments(self.cls, {**self.iterations(n_iter), **settings})
        return explainer.attribute(inputs, **arguments)


def last_relu(model):
    return [module for module in model.modules() if isinstance(module, nn.ReLU)][-1]


def numbers(low: float, high: float) -> st.SearchStrategy:
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


def mostly(valid: st.SearchStrategy, invalid: st.SearchStrategy) -> st.SearchStrategy:
    """About one draw in eight from ``invalid``: a call that sets several options still gets
    through to the optimisation often enough to test it."""
    return st.integers(0, 7).flatmap(lambda k: invalid if k == 0 else valid)


def iterations(most: int) -> st.SearchStrategy:
    return mostly(st.integers(1, most), st.just(0))


PERTURBATION_NAMES = mostly(st.sampled_from(["blur", "constant", "noise"]), st.just("zeros"))
#: a name, or a perturbation object with its own settings
PERTURBATIONS = st.one_of(
    PERTURBATION_NAMES,
    numbers(0, 20).map(lambda sigma: Blur(sigma=sigma)),
    numbers(0, 2).map(lambda std: Noise(std=std)),
)
CHUNKS = mostly(st.none() | st.integers(1, 3), st.integers(-1, 0))
BASELINES = st.none() | numbers(-2, 2)

METHODS = {
    "MeaningfulPerturbation": Method(
        MeaningfulPerturbation,
        deterministic={"mask.jitter": 0},
        keep_all={"mask.init_value": 1.0, "mask.jitter": 0},
        # the noise and the jitter are the random draws; a weak area term lets the mask follow
        # the score on the random tiny model, which it barely moves
        seeded={"perturbation": "noise", "mask.jitter": 4, "l1_weight": 0.01},
        fuzzed={
            "optimization.n_iter": iterations(3),
            "game": mostly(st.sampled_from(["deletion", "preservation"]), st.just("keep")),
            "perturbation": PERTURBATIONS,
            "baselines": BASELINES,
            "mask.factor": mostly(st.integers(1, 12), st.integers(-1, 0)),
            "mask.smooth_sigma": mostly(numbers(0, 8), numbers(-1, -1e-3)),
            "mask.init_value": mostly(numbers(0, 1), numbers(1.001, 1.5)),
            "mask.jitter": mostly(st.integers(0, 6), st.just(-1)),
            "tv_beta": mostly(numbers(1, 4), numbers(-1, 0.99)),
            "optimization.internal_batch_size": CHUNKS,
            "optimization.seed": st.integers(0, 3),
        },
    ),
    "NeuroMaskAttr": Method(
        NeuroMaskAttr,
        keep_all={"mask.init_range": (60.0, 61.0)},
        fuzzed={
            "optimization.n_iter": iterations(3),
            "baselines": BASELINES,
            "mask.temperature": mostly(numbers(1e-6, 3), numbers(-1, 0)),
            "mask.init_range": mostly(
                st.tuples(numbers(-3, 0), numbers(0.01, 3)),
                st.tuples(numbers(0, 3), numbers(-3, 0)),
            ),
            "tau": mostly(numbers(0, 30), numbers(-1, -1e-3)),
            "smoothness.kernel_size": mostly(st.sampled_from([3, 5]), st.just(1)),
            "smoothness.squared": st.booleans(),
            "channels_last": st.booleans(),
            "optimization.internal_batch_size": CHUNKS,
            "optimization.seed": st.integers(0, 3),
        },
    ),
    "GuidedFeatureInversion": Method(
        GuidedFeatureInversion,
        make=lambda model: GuidedFeatureInversion(model, layer=last_relu(model)),
        iterations=lambda n: {"inversion.n_iter": max(1, n // 4), "optimization.n_iter": n},
        takes_tuples=False,
        # min-max normalisation by a small range magnifies float error
        batch_atol=1e-4,
        keep_all=None,  # the mask is min-max normalised: never all ones
        seeded={"perturbation": "noise"},
        fuzzed={
            "inversion.n_iter": iterations(2),
            "optimization.n_iter": iterations(3),
            "stage": mostly(st.sampled_from(["target", "inversion"]), st.just("both")),
            "perturbation": PERTURBATIONS,
            "baselines": BASELINES,
            "activation": mostly(st.sampled_from(["relu", None]), st.just("tanh")),
            "inversion.init_weight": mostly(numbers(0, 1), numbers(-1, -1e-3)),
            "background_weight": mostly(numbers(0, 2), numbers(-1, -1e-3)),
            "area_weight": mostly(numbers(0, 8), numbers(-1, -1e-3)),
            "optimization.internal_batch_size": CHUNKS,
        },
    ),
    "ExtremalPerturbation": Method(
        ExtremalPerturbation,
        takes_tuples=False,
        keep_all=None,  # the smooth maximum of parameters at 1 is just below 1
        draws_random=False,
        fuzzed={
            "optimization.n_iter": iterations(3),
            "game": mostly(st.sampled_from(["preservation", "deletion", "dual"]), st.just("both")),
            "reward": mostly(st.sampled_from(["simple", "contrastive"]), st.just("soft")),
            "areas": mostly(
                numbers(0.01, 0.9) | st.lists(numbers(0.01, 0.9), min_size=1, max_size=3),
                numbers(1.0, 2.0),
            ),
            "perturbation": st.one_of(
                mostly(st.sampled_from(["blur", "constant"]), st.just("noise")),
                st.builds(BlurPyramid, levels=st.integers(2, 9), max_sigma=numbers(0, 20)),
            ),
            "mask.step": mostly(st.integers(1, 9), st.integers(-1, 0)),
            "mask.sigma": mostly(numbers(0.5, 30), numbers(-1, 0)),
            "mask.stride": mostly(st.integers(1, 5), st.just(0)),
            "jitter": st.booleans(),
            "optimization.internal_batch_size": CHUNKS,
        },
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

    torch.manual_seed(0)
    rgb, gray = torch.randn(2, 3, 16, 16), torch.randn(2, 1, 24, 24)
    result = method(TwoInputs().eval(), (rgb, gray), target=0)
    assert isinstance(result, tuple) and len(result) == 2
    assert result[0].shape == rgb.shape and result[1].shape == gray.shape


@pytest.mark.parametrize(
    "target", [2, [0, 1, 4], torch.tensor([3, 3, 0]), torch.tensor(2), None], ids=str
)
def test_every_target_form_matches_explicit_per_example_targets(
    method, tiny_model, images, target
):
    _, history = method(
        tiny_model, images, target=target, return_history=True, **method.deterministic
    )
    expected = explicit_targets(target, tiny_model, images)
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
        images,
        nt_type="smoothgrad",
        nt_samples=2,
        target=1,
        stdevs=0.1,
        **method_arguments(method.cls, method.iterations(8)),
    )
    assert attribution.shape == images.shape
    assert torch.isfinite(attribution).all() and attribution.min() >= 0 and attribution.max() <= 1


def test_captum_metrics_run_on_it(method, tiny_model, images):
    explainer = method.explainer(tiny_model)
    assert_captum_metrics_run(
        tiny_model, explainer, images, method_arguments(method.cls, method.iterations(4))
    )


def test_output_feeds_captum_visualization(method, tiny_model, images):
    assert_feeds_captum_visualization(method(tiny_model, images[:1], target=1), images)


def test_multiplies_by_inputs_and_no_convergence_delta(method, tiny_model):
    explainer = method.explainer(tiny_model)
    assert explainer.multiplies_by_inputs is False and explainer.has_convergence_delta() is False


# ---------------------------------------------------------------- batching and determinism
def test_batch_equals_per_example(method, tiny_model, images):
    targets = [0, 3, 1]
    settings = {"optimization.n_iter": 20, **method.deterministic}
    batched = method(tiny_model, images, target=targets, **settings)
    single = torch.cat(
        [
            method(tiny_model, images[i : i + 1], target=t, **settings)
            for i, t in enumerate(targets)
        ]
    )
    chunked = method(
        tiny_model, images, target=targets, **{"optimization.internal_batch_size": 2, **settings}
    )
    torch.testing.assert_close(batched, single, atol=method.batch_atol, rtol=0)
    torch.testing.assert_close(batched, chunked, atol=method.batch_atol, rtol=0)


def test_early_stopping_is_per_example_and_batch_equals_one_by_one(method, tiny_model, images):
    targets = [0, 3, 1]
    settings = {
        "optimization.tolerance": 1e-3,
        "optimization.patience": 3,
        "return_history": True,
        **method.deterministic,
    }
    batched, history = method(tiny_model, images, n_iter=200, target=targets, **settings)
    for i, t in enumerate(targets):
        single, alone = method(tiny_model, images[i : i + 1], n_iter=200, target=t, **settings)
        torch.testing.assert_close(batched[i : i + 1], single, atol=method.batch_atol, rtol=0)
        assert history.steps[i] == alone.steps[0]
    assert (history.steps < 200).all()  # the tiny model's losses settle well before the budget


def test_same_seed_same_result_other_seed_other_result(method, tiny_model, images):
    if not method.draws_random:
        pytest.skip(f"{method.cls.__name__} draws no random numbers")
    first = method(tiny_model, images, target=1, **{"optimization.seed": 7}, **method.seeded)
    again = method(tiny_model, images, target=1, **{"optimization.seed": 7}, **method.seeded)
    other = method(tiny_model, images, target=1, **{"optimization.seed": 8}, **method.seeded)
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
    handle = model.features.register_forward_hook(fail_on_call(5))
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


@pytest.mark.parametrize(
    "wrap",
    [
        lambda model, x: torch.jit.trace(model, x),
        lambda model, x: torch.jit.script(model),
        lambda model, x: nn.DataParallel(model),
    ],
    ids=["trace", "script", "DataParallel"],
)
def test_wrapped_models_give_the_eager_result_or_a_clear_error(method, images, wrap):
    model = NormCNN().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated
        wrapped = wrap(model, images)
    eager = method(model, images, target=1)
    if method.make is None:
        explainer = method.cls(wrapped)
    elif isinstance(wrapped, torch.jit.ScriptModule):
        with pytest.raises(TypeError, match="TorchScript"):  # the layer needs forward hooks
            method.cls(wrapped, layer=wrapped.relu)
        return
    else:
        explainer = method.cls(wrapped, layer=wrapped.module.relu)
    arguments = method_arguments(method.cls, method.iterations(8))
    result = explainer.attribute(images, target=1, **arguments)
    torch.testing.assert_close(result, eager, atol=method.batch_atol, rtol=0)


@dataclass
class ScoresAndFeatures:
    logits: torch.Tensor
    features: torch.Tensor


class LogitsOutput(nn.Module):
    """A classifier that returns its scores inside an output object, as transformers' do (or,
    for the forms ``"tuple"`` and ``"unnamed"``, where nothing says which they are)."""

    def __init__(self, model: nn.Module, form: str):
        super().__init__()
        self.model, self.form = model, form

    def forward(self, *inputs):
        logits = self.model(*inputs)
        if self.form == "ModelOutput":
            from transformers.modeling_outputs import ImageClassifierOutput

            return ImageClassifierOutput(logits=logits)
        if self.form == "dict":
            return {"features": logits.detach(), "logits": logits}
        if self.form == "tuple":
            return (logits,)
        if self.form == "unnamed":
            return {"scores": logits}
        return ScoresAndFeatures(logits=logits, features=logits.detach())


def test_a_hugging_face_output_is_explained_through_its_logits(method, images):
    torch.manual_seed(0)
    model = TinyCNN().eval()
    model(images).sum().backward()  # the user's own gradients stay
    wrapped = LogitsOutput(model, "ModelOutput")
    before = model_state(model)
    rng = torch.get_rng_state()
    targets = [0, 3, 1]
    settings = {"optimization.n_iter": 4, **method.deterministic}
    through_logits = method(wrapped, images, target=targets, **settings)
    one_by_one = torch.cat(
        [method(wrapped, images[i : i + 1], target=t, **settings) for i, t in enumerate(targets)]
    )
    on_the_tensor = method(model, images, target=targets, **settings)
    torch.testing.assert_close(through_logits, on_the_tensor, atol=0, rtol=0)
    torch.testing.assert_close(through_logits, one_by_one, atol=method.batch_atol, rtol=0)
    assert_same_state(before, model_state(model))
    assert torch.equal(torch.get_rng_state(), rng)
    if method.takes_tuples:
        rgb, gray = torch.randn(2, 3, 16, 16), torch.randn(2, 1, 24, 24)
        pair = method(LogitsOutput(TwoInputs().eval(), "ModelOutput"), (rgb, gray), target=0)
        assert isinstance(pair, tuple) and [p.shape for p in pair] == [rgb.shape, gray.shape]


@pytest.mark.parametrize("form", ["dict", "dataclass"])
def test_a_dict_or_dataclass_with_logits_is_explained_through_them(method, images, form):
    model = TinyCNN().eval()
    settings = {"optimization.n_iter": 4, "target": [0, 3, 1], **method.deterministic}
    through_logits = method(LogitsOutput(model, form), images, **settings)
    torch.testing.assert_close(through_logits, method(model, images, **settings), atol=0, rtol=0)


@pytest.mark.parametrize("form", ["tuple", "unnamed"])
def test_an_output_without_logits_is_a_clear_error(method, tiny_model, images, form):
    with pytest.raises(TypeError, match="forward_func must return a tensor.*'logits'"):
        method(LogitsOutput(tiny_model, form), images, target=0)


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
        (lambda x: x[..., None, None, None], {}, ValueError, "inputs must have|spatial axes"),
        (lambda x: x[:0], {}, ValueError, "at least one example"),
        (lambda x: (x * 100).long(), {}, TypeError, "floating-point"),
        (lambda x: x.numpy(), {}, TypeError, "inputs must be a tensor"),
        (lambda x: x, {"target": 5}, ValueError, "out of range"),
        (lambda x: x, {"target": -1}, ValueError, "out of range"),
        (lambda x: x, {"target": [0, 1]}, ValueError, "one entry per example"),
        (lambda x: x, {"target": torch.tensor([0, 1])}, ValueError, "one entry per example"),
        (lambda x: x, {"target": 1.5}, TypeError, "target"),
        (lambda x: x, {"target": (0, 1)}, ValueError, "target"),
        (lambda x: x, {"optimization.lr": -0.1}, ValueError, "lr"),
        (lambda x: x, {"optimization.optimizer": "lbfgs"}, ValueError, "optimizer"),
        (lambda x: x, {"optimization.internal_batch_size": 0}, ValueError, "internal_batch"),
        (lambda x: x, {"optimization.seed": 1.5}, TypeError, "seed"),
    ],
)
def test_bad_input_is_a_clear_error_and_changes_nothing(
    method, tiny_model, images, make_inputs, kwargs, error, message
):
    inputs = make_inputs(images)
    snapshot = inputs.clone() if isinstance(inputs, torch.Tensor) else inputs.copy()
    before = model_state(tiny_model)
    with pytest.raises(error, match=message):
        method(tiny_model, inputs, **{"optimization.n_iter": 2, **kwargs})
    if isinstance(inputs, torch.Tensor):
        assert torch.equal(inputs, snapshot) or torch.isnan(snapshot).any()
    assert_same_state(before, model_state(tiny_model))


def test_a_target_that_does_not_fit_is_also_the_assertion_error_captum_raises(method, images):
    """Captum's methods assert their targets, and its hook-removal tests expect AssertionError
    for ``target=(9999,) * 20``; ours is a ValueError that is an AssertionError too."""
    model = NormCNN().eval()
    before = model_state(model)
    for target in [(9999,) * 20, 9999, [0, 1]]:
        with pytest.raises(AssertionError, match="target") as error:
            method(model, images, target=target)
        assert isinstance(error.value, ValueError)
    assert_same_state(before, model_state(model))  # no hook left behind


def test_forward_func_must_be_callable(method):
    with pytest.raises(TypeError, match="forward_func"):
        method.cls("model", *([nn.ReLU()] if method.make else []))


# ---------------------------------------------------------------- independence at default settings
POOL = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(3))
POOL_TARGETS = [0, 3, 1, 4]
_one_by_one: dict[str, torch.Tensor] = {}


def one_by_one(method: Method, model: nn.Module) -> torch.Tensor:
    """Each pool image explained alone, at the method's default settings (computed once)."""
    name = method.cls.__name__
    if name not in _one_by_one:
        explainer = method.explainer(model)
        _one_by_one[name] = torch.cat(
            [explainer.attribute(POOL[i : i + 1], target=t) for i, t in enumerate(POOL_TARGETS)]
        )
    return _one_by_one[name]


def pool_model() -> nn.Module:
    torch.manual_seed(0)
    return TinyCNN().eval()


@hypothesis_settings(max_examples=6, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.integers(0, 3), min_size=1, max_size=5),
    internal_batch_size=st.none() | st.integers(1, 4),
)
def test_an_example_depends_only_on_itself_at_default_settings(method, rows, internal_batch_size):
    """Default jitter and noise included: batch size, position, repeats and chunking change
    nothing."""
    model = pool_model()
    expected = one_by_one(method, model)[rows]
    batch = method.explainer(model).attribute(
        POOL[rows],
        target=[POOL_TARGETS[i] for i in rows],
        optimization=Optimization(internal_batch_size=internal_batch_size),
    )
    torch.testing.assert_close(batch, expected, atol=method.batch_atol, rtol=0)


def test_noise_tunnel_and_sensitivity_see_the_one_by_one_result(method):
    model = pool_model()
    explainer = method.explainer(model)
    alone = one_by_one(method, model)[:2]
    targets = POOL_TARGETS[:2]
    # NoiseTunnel without noise explains every image nt_samples times in one batch
    tunnel = NoiseTunnel(explainer).attribute(POOL[:2], nt_samples=3, stdevs=0.0, target=targets)
    torch.testing.assert_close(tunnel, alone, atol=method.batch_atol, rtol=0)

    def shift(inputs):  # a perturbation without randomness: the same for every batching
        return inputs + 0.05 * torch.cos(torch.arange(inputs[0].numel())).view_as(inputs[0])

    sensitivities = [
        sensitivity_max(
            explainer.attribute,
            POOL[:2],
            perturb_func=shift,
            target=targets,
            n_perturb_samples=3,
            max_examples_per_batch=batch,
        )
        for batch in (2, 6)
    ]
    torch.testing.assert_close(*sensitivities, atol=10 * method.batch_atol, rtol=0)


# ---------------------------------------------------------------- any size, half precision
@pytest.mark.parametrize(
    "shape", [(1, 1, 1, 1), (1, 1, 4, 1), (2, 3, 1, 7), (1, 3, 2, 2), (2, 1, 9, 5)], ids=str
)
def test_every_size_from_one_pixel_up_at_default_settings(method, shape):
    model = NormCNN().eval()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    attribution = method.explainer(model).attribute(x, target=1)
    assert attribution.shape == x.shape and torch.isfinite(attribution).all()
    assert attribution.min() >= 0 and attribution.max() <= 1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_as_mixed_precision_does_it(method, dtype):
    """The model runs in the input's dtype; masks, optimiser and losses in float32; the result
    is finite, in the input's dtype, and close to the float32 result."""
    model = pool_model()
    reference = method.explainer(model).attribute(POOL[:2], target=1)
    seen = []
    model.features.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    attribution, history = method.explainer(model.to(dtype)).attribute(
        POOL[:2].to(dtype), target=1, return_history=True
    )
    assert set(seen) == {dtype}
    assert attribution.dtype == dtype and attribution.shape == POOL[:2].shape
    assert torch.isfinite(attribution).all()
    assert attribution.min() >= 0 and attribution.max() <= 1
    assert history.loss.dtype == history.probability.dtype == torch.float32
    for k, steps in enumerate(history.steps.tolist()):  # NaN only after an early stop
        assert torch.isfinite(history.loss[:steps, k]).all()
    torch.testing.assert_close(attribution.float(), reference, atol=0.05, rtol=0)


# ---------------------------------------------------------------- a model in training mode
def training_warnings(records) -> list:
    return [r for r in records if "training mode" in str(r.message)]


def test_a_training_mode_model_is_left_bit_identical_with_one_warning(method):
    torch.manual_seed(0)
    model = NormCNN().train()
    x = torch.randn(3, 3, 10, 10)
    model(x).sum().backward()  # the user has gradients of their own
    before = model_state(model)
    rng = torch.get_rng_state()
    with pytest.warns(UserWarning) as records:
        method(model, x, target=0)
    assert len(training_warnings(records)) == 1
    assert torch.equal(torch.get_rng_state(), rng)
    assert_same_state(before, model_state(model))  # batch norm statistics included


def test_a_training_mode_model_is_left_bit_identical_when_the_call_raises(method):
    torch.manual_seed(0)
    model = NormCNN().train()
    handle = model.norm.register_forward_hook(fail_on_call(4))
    before = model_state(model)
    with pytest.raises(RuntimeError, match="boom"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        method(model, torch.randn(2, 3, 10, 10), target=0)
    handle.remove()
    before["hooks"] = model_state(model)["hooks"]
    assert_same_state(before, model_state(model))


def test_an_eval_mode_model_gives_no_warning(method, tiny_model, images):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        method(tiny_model, images, target=1)


def test_a_target_that_never_moves_is_warned_about(method):
    class Stubborn(nn.Module):
        """Class 3 has probability ~0.002 whatever the input."""

        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())

        def forward(self, x):
            logits = torch.tensor([6.0, 6.0, 6.0, 0.0], dtype=x.dtype, device=x.device)
            evidence = self.features(x).mean(dim=(1, 2, 3)).unsqueeze(1)
            return logits.expand(x.shape[0], -1) + 1e-9 * evidence

    x = torch.randn(2, 3, 8, 8)
    with pytest.warns(UserWarning, match=r"never moved.*example\(s\) \[0, 1\].*target"):
        method(Stubborn().eval(), x, target=3)


# ---------------------------------------------------------------- fuzzing
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@hypothesis_settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_returns_a_valid_mask_or_a_clear_error_and_never_changes_the_model(method, data):
    batch = data.draw(st.integers(1, 3), label="batch")
    rank = data.draw(mostly(st.just(4), st.just(3)), label="rank")
    sides = data.draw(st.lists(st.integers(1, 9), min_size=rank - 2, max_size=rank - 2))
    shape = (batch, data.draw(st.integers(1, 3), label="channels"), *sides)
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    target = data.draw(
        st.none()
        | st.integers(-1, 4)
        | st.lists(st.integers(0, 4), min_size=1, max_size=4)
        | st.just(torch.tensor(2)),
        label="target",
    )
    options = data.draw(st.fixed_dictionaries({}, optional=method.fuzzed), label="options")
    model = NormCNN().to(dtype).train(data.draw(st.booleans(), label="training"))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    x_before = x.clone()
    before = model_state(model)
    assert_valid_mask_or_clear_error(
        lambda: method.explainer(model).attribute(
            x, target=target, **method_arguments(method.cls, options)
        ),
        x,
    )
    assert_same_state(before, model_state(model))
    assert torch.equal(x, x_before)
