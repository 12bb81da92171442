"""MeaningfulPerturbation against the Captum contract, on tiny models and small inputs."""

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from captum.attr import NoiseTunnel
from captum.attr import visualization as viz
from captum.metrics import infidelity, sensitivity_max
from conftest import SpotDetector, TinyCNN, assert_same_state, model_state
from hypothesis import given
from hypothesis import strategies as st

from captum_masks import MeaningfulPerturbation, attribution_to_image, image_to_numpy

FAST = {"n_iter": 8}


# ---------------------------------------------------------------- Captum contract
def test_tensor_in_tensor_out_with_input_shape(tiny_model, images):
    attribution = MeaningfulPerturbation(tiny_model).attribute(images, target=1, **FAST)
    assert isinstance(attribution, torch.Tensor) and attribution.shape == images.shape
    assert attribution.min() >= 0 and attribution.max() <= 1
    # one mask per example, shared by its channels
    assert torch.equal(attribution[:, 0], attribution[:, 2])


def test_tuple_in_tuple_out():
    class TwoInputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = TinyCNN(), TinyCNN(in_channels=1)

        def forward(self, rgb, gray):
            return self.a(rgb) + self.b(gray)

    torch.manual_seed(0)
    rgb, gray = torch.randn(2, 3, 16, 16), torch.randn(2, 1, 24, 24)
    result = MeaningfulPerturbation(TwoInputs().eval()).attribute((rgb, gray), target=0, **FAST)
    assert isinstance(result, tuple) and len(result) == 2
    assert result[0].shape == rgb.shape and result[1].shape == gray.shape


@pytest.mark.parametrize(
    "target", [2, [0, 1, 4], torch.tensor([3, 3, 0]), torch.tensor(2), None], ids=str
)
def test_every_target_form_matches_explicit_per_example_targets(tiny_model, images, target):
    mp = MeaningfulPerturbation(tiny_model)
    _, history = mp.attribute(images, target=target, return_history=True, jitter=0, **FAST)
    if target is None:
        expected = tiny_model(images).argmax(1).tolist()
    elif isinstance(target, torch.Tensor) and target.dim() == 0:
        expected = [int(target)] * 3
    elif isinstance(target, int):
        expected = [target] * 3
    else:
        expected = [int(t) for t in target]
    _, reference = mp.attribute(images, target=expected, return_history=True, jitter=0, **FAST)
    torch.testing.assert_close(history.probability, reference.probability)


def test_tuple_target_for_multidimensional_output(images):
    class Grid(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = TinyCNN(num_classes=6)

        def forward(self, x):
            return self.net(x).view(-1, 2, 3)

    torch.manual_seed(0)
    model = Grid().eval()
    mp = MeaningfulPerturbation(model)
    _, history = mp.attribute(
        images, target=(1, 2), return_history=True, apply_softmax=False, mask_init=1.0, **FAST
    )
    # a mask of ones keeps the image, so the first step scores the clean output
    torch.testing.assert_close(history.probability[0], model(images)[:, 1, 2])
    mp.attribute(images, target=[(0, 1), (1, 0), (1, 2)], **FAST)
    with pytest.raises(ValueError, match="target"):
        mp.attribute(images, target=None, **FAST)


def test_additional_forward_args_reach_the_model(tiny_model, images):
    mp = MeaningfulPerturbation(tiny_model)
    _, scaled = mp.attribute(
        images, target=0, additional_forward_args=(0.0,), return_history=True, **FAST
    )
    # logits × 0 → uniform softmax over 5 classes, whatever the mask does
    torch.testing.assert_close(scaled.probability, torch.full_like(scaled.probability, 0.2))


def test_noise_tunnel_wraps_it(tiny_model, images):
    tunnel = NoiseTunnel(MeaningfulPerturbation(tiny_model))
    attribution = tunnel.attribute(
        images, nt_type="smoothgrad", nt_samples=2, target=1, stdevs=0.1, **FAST
    )
    assert attribution.shape == images.shape
    assert torch.isfinite(attribution).all() and attribution.min() >= 0 and attribution.max() <= 1


def test_captum_metrics_run_on_it(tiny_model, images):
    mp = MeaningfulPerturbation(tiny_model)
    attribution = mp.attribute(images, target=1, **FAST)

    def perturb(inputs):
        noise = torch.randn_like(inputs) * 0.1
        return noise, inputs - noise

    score = infidelity(tiny_model, perturb, images, attribution, target=1, n_perturb_samples=2)
    assert score.shape == (3,) and torch.isfinite(score).all()
    sensitivity = sensitivity_max(mp.attribute, images, target=1, n_perturb_samples=2, n_iter=4)
    assert sensitivity.shape == (3,) and torch.isfinite(sensitivity).all()


def test_output_feeds_captum_visualization(tiny_model, images):
    attribution = MeaningfulPerturbation(tiny_model).attribute(images[:1], target=1, **FAST)
    figure, _ = viz.visualize_image_attr(
        attribution_to_image(attribution),
        image_to_numpy(images[:1], [0.5] * 3, [0.2] * 3),
        method="blended_heat_map",
        sign="positive",
        use_pyplot=False,
    )
    assert figure is not None


def test_multiplies_by_inputs_and_no_convergence_delta(tiny_model):
    mp = MeaningfulPerturbation(tiny_model)
    assert mp.multiplies_by_inputs is False and mp.has_convergence_delta() is False


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
        mask_factor=4,
        mask_sigma=1.0,
        l1_weight=1e-2,
        n_iter=150,
        jitter=0,
    )[0, 0]
    inside = attribution[20:28, 4:12].mean()
    outside = torch.cat([attribution[:16].flatten(), attribution[:, 16:].flatten()]).mean()
    assert inside > outside + 0.3
    row, col = divmod(attribution.argmax().item(), 32)
    assert 18 <= row < 30 and 2 <= col < 14


def test_history_records_the_decreasing_target_probability(tiny_model, images):
    _, history = MeaningfulPerturbation(tiny_model).attribute(
        images, target=0, return_history=True, n_iter=40, lr=0.2
    )
    assert history.loss.shape == history.probability.shape == (40, 3)
    assert (history.steps == 40).all()
    assert (history.probability[-1] < history.probability[0]).all()


def test_batch_equals_per_example(tiny_model, images):
    mp = MeaningfulPerturbation(tiny_model)
    targets = [0, 3, 1]
    batched = mp.attribute(images, target=targets, jitter=0, n_iter=20)
    single = torch.cat(
        [
            mp.attribute(images[i : i + 1], target=t, jitter=0, n_iter=20)
            for i, t in enumerate(targets)
        ]
    )
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
    chunked = mp.attribute(images, target=targets, jitter=0, n_iter=20, internal_batch_size=2)
    torch.testing.assert_close(batched, chunked, atol=1e-5, rtol=0)


def test_same_seed_same_result_other_seed_other_result(tiny_model, images):
    mp = MeaningfulPerturbation(tiny_model)
    first = mp.attribute(images, target=1, perturbation="noise", seed=7, **FAST)
    again = mp.attribute(images, target=1, perturbation="noise", seed=7, **FAST)
    other = mp.attribute(images, target=1, perturbation="noise", seed=8, **FAST)
    assert torch.equal(first, again) and not torch.equal(first, other)


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
        mask_factor=factor,
        jitter=jitter,
        optimizer=optimizer,
        n_iter=3,
    )
    assert attribution.shape == x.shape
    assert torch.isfinite(attribution).all() and attribution.min() >= 0 and attribution.max() <= 1


def test_float64_in_float64_out(images):
    torch.manual_seed(0)
    model = TinyCNN().double().eval()
    attribution, history = MeaningfulPerturbation(model).attribute(
        images.double(), target=1, return_history=True, perturbation="noise", **FAST
    )
    assert attribution.dtype == torch.float64
    assert history.loss.dtype == history.probability.dtype == torch.float64


# ---------------------------------------------------------------- no side effects
def test_leaves_model_and_rng_untouched():
    torch.manual_seed(0)
    model = TinyCNN(dropout=0.5).train()  # training mode: dropout draws from the global RNG
    x = torch.randn(2, 3, 16, 16)
    model(x).sum().backward()  # the user has gradients of their own
    before = model_state(model)
    rng = torch.get_rng_state()
    MeaningfulPerturbation(model).attribute(x, target=0, **FAST)
    assert torch.equal(torch.get_rng_state(), rng)
    assert_same_state(before, model_state(model))


def test_leaves_everything_untouched_when_the_model_raises_midway():
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
        MeaningfulPerturbation(model).attribute(x, target=0, perturbation="noise", **FAST)
    handle.remove()
    before["hooks"] = model_state(model)["hooks"]  # compare without the test's own hook
    assert_same_state(before, model_state(model))
    assert torch.equal(torch.get_rng_state(), rng) and torch.equal(x, x_before)


# ---------------------------------------------------------------- bad input
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
        (lambda x: x[:, 0], {}, ValueError, "inputs must have 4 dimensions"),
        (lambda x: x[:0], {}, ValueError, "at least one example"),
        (lambda x: (x * 100).long(), {}, TypeError, "floating-point"),
        (lambda x: x.numpy(), {}, TypeError, "inputs must be a tensor"),
        (lambda x: x, {"target": 5}, ValueError, "out of range"),
        (lambda x: x, {"target": -1}, ValueError, "out of range"),
        (lambda x: x, {"target": [0, 1]}, ValueError, "one entry per example"),
        (lambda x: x, {"target": torch.tensor([0, 1])}, ValueError, "one entry per example"),
        (lambda x: x, {"target": 1.5}, TypeError, "target"),
        (lambda x: x, {"target": (0, 1)}, ValueError, "target"),
        (lambda x: x, {"game": "hide"}, ValueError, "game"),
        (lambda x: x, {"perturbation": "pixelate"}, ValueError, "perturbation"),
        (lambda x: x, {"baselines": 0.0}, ValueError, "baselines"),
        (
            lambda x: x,
            {"perturbation": "constant", "baselines": torch.zeros(2, 2)},
            ValueError,
            "baselines",
        ),
        (lambda x: x, {"n_iter": 0}, ValueError, "n_iter"),
        (lambda x: x, {"mask_init": 2.0}, ValueError, "mask_init"),
        (lambda x: x, {"mask_factor": 0}, ValueError, "mask_factor"),
        (lambda x: x, {"tv_weight": -1.0}, ValueError, "tv_weight"),
        (lambda x: x, {"internal_batch_size": 0}, ValueError, "internal_batch_size"),
    ],
)
def test_bad_input_is_a_clear_error_and_changes_nothing(
    tiny_model, images, make_inputs, kwargs, error, message
):
    inputs = make_inputs(images)
    snapshot = inputs.clone() if isinstance(inputs, torch.Tensor) else inputs.copy()
    before = model_state(tiny_model)
    with pytest.raises(error, match=message):
        MeaningfulPerturbation(tiny_model).attribute(inputs, **{"n_iter": 2, **kwargs})
    if isinstance(inputs, torch.Tensor):
        assert torch.equal(inputs, snapshot) or torch.isnan(snapshot).any()
    assert_same_state(before, model_state(tiny_model))


def test_forward_func_must_be_callable():
    with pytest.raises(TypeError, match="forward_func"):
        MeaningfulPerturbation("model")
