"""The shared engine: perturbations, mask parametrisations, regularisers, optimisation loop."""

import dataclasses
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from captum_masks import masks, perturbations, regularizers
from captum_masks._engine.loop import ExampleRows, MaskProblem, optimize_masks
from captum_masks.masks.interpolation import upsample_linearly
from captum_masks.optimization import SHARED_DEFAULTS, Optimization


def loop_settings(n_iter: int, lr: float, **fields) -> Optimization:
    """The loop's settings: these fields over the ones every method shares."""
    return Optimization(n_iter=n_iter, lr=lr, **fields).over(SHARED_DEFAULTS)


def optimize(build, count, settings):
    """:func:`optimize_masks` on a stand-in objective, whose 'probability' is no probability."""
    return optimize_masks(build, count, settings, "test", warn_without_signal=False)


# ---------------------------------------------------------------- perturbations
@given(sigma=st.floats(0.5, 12.0), side=st.integers(3, 40), value=st.floats(-3, 3))
def test_blur_keeps_a_constant_image_constant(sigma, side, value):
    image = torch.full((2, 3, side, side + 1), value, dtype=torch.float64)
    torch.testing.assert_close(perturbations.gaussian_blur(image, sigma), image)


def test_blur_spreads_an_impulse_like_a_gaussian():
    image = torch.zeros(1, 1, 41, 41, dtype=torch.float64)
    image[0, 0, 20, 20] = 1.0
    blurred = perturbations.gaussian_blur(image, 2.0)[0, 0]
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-6)
    # separable Gaussian: value at distance d on an axis ∝ exp(-d²/(2σ²))
    assert (blurred[20, 22] / blurred[20, 20]).item() == pytest.approx(math.exp(-4 / 8), rel=1e-3)
    assert blurred.argmax().item() == 20 * 41 + 20


def test_blur_along_one_two_and_three_axes_and_bad_rank():
    for spatial in (1, 2, 3):
        impulse = torch.zeros(1, 2, *[15] * spatial, dtype=torch.float64)
        impulse[(0, 0, *[7] * spatial)] = 1.0
        blurred = perturbations.gaussian_blur(impulse, 1.5)
        # a separable Gaussian: the product of the 1-D kernel (radius 5) along every axis
        kernel = torch.nn.functional.pad(perturbations.gaussian_kernel1d(1.5, impulse), (2, 2))
        expected = kernel
        for _ in range(spatial - 1):
            expected = expected.unsqueeze(-1) * kernel
        torch.testing.assert_close(blurred[0, 0], expected)
        assert blurred[0, 1].abs().max() == 0
    with pytest.raises(ValueError, match="gaussian_blur needs inputs with spatial axes"):
        perturbations.gaussian_blur(torch.zeros(4, 3), 1.0)


def test_constant_reference_forms():
    x = torch.randn(2, 3, 4, 5)
    assert torch.equal(perturbations.constant_reference(x, 0.5), torch.full_like(x, 0.5))
    per_channel = perturbations.constant_reference(x, [1.0, 2.0, 3.0])
    assert torch.equal(per_channel[:, 2], torch.full((2, 4, 5), 3.0))
    assert torch.equal(
        perturbations.constant_reference(x, torch.tensor([1.0, 2.0, 3.0])), per_channel
    )
    full = torch.randn(2, 3, 4, 5)
    assert torch.equal(perturbations.constant_reference(x, full), full)
    mean = perturbations.constant_reference(x, None)
    torch.testing.assert_close(mean[1, 0, 3, 4], x[1, 0].mean())
    with pytest.raises(ValueError, match="baselines"):
        perturbations.constant_reference(x, torch.zeros(7))


def test_noise_reference_is_seeded_and_follows_the_image_statistics():
    x = 5.0 + 2.0 * torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    first = perturbations.noise_reference(x, torch.Generator().manual_seed(3))
    second = perturbations.noise_reference(x, torch.Generator().manual_seed(3))
    other = perturbations.noise_reference(x, torch.Generator().manual_seed(4))
    assert torch.equal(first, second) and not torch.equal(first, other)
    assert first.mean().item() == pytest.approx(5.0, abs=0.1)
    assert first.std().item() == pytest.approx(2.0, rel=0.1)  # the image's own contrast


def test_blend_endpoints():
    x, reference = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    ones, zeros = torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    assert torch.equal(perturbations.blend(x, ones, reference), x)
    assert torch.equal(perturbations.blend(x, zeros, reference), reference)
    half = perturbations.blend(x, 0.5 * ones, reference)
    torch.testing.assert_close(half, (x + reference) / 2)


def test_blur_rejects_baselines():
    with pytest.raises(ValueError, match="baselines"):
        perturbations.Blur().reference(torch.zeros(1, 1, 4, 4), 0.0, torch.Generator())


# ---------------------------------------------------------------- masks
@given(
    height=st.integers(5, 40),
    width=st.integers(5, 40),
    factor=st.integers(1, 8),
    sigma=st.sampled_from([0.0, 1.0, 3.0]),
    jitter=st.integers(0, 4),
)
def test_upsampled_mask_shape_and_range(height, width, factor, sigma, jitter):
    images = torch.zeros(2, 3, height, width, dtype=torch.float64)
    parametrisation = masks.UpsampledMask(factor, sigma, jitter)
    (params,) = parametrisation.init([images], torch.Generator())
    assert params.shape == (2, 1, math.ceil(height / factor), math.ceil(width / factor))
    params = torch.rand(
        params.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    mask = parametrisation.expand(params, (height, width), torch.Generator().manual_seed(1))
    assert mask.shape == (2, 1, height, width) and mask.dtype == torch.float64
    assert mask.min() >= -1e-12 and mask.max() <= 1 + 1e-12  # a convex combination of params


def test_upsampled_mask_equals_upsample_then_blur():
    params = torch.rand(
        2, 1, 5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    mask = masks.UpsampledMask(factor=4, smooth_sigma=2.0).expand(params, (18, 26))
    direct = torch.nn.functional.interpolate(
        params, scale_factor=4, mode="bilinear", align_corners=False
    )
    direct = perturbations.gaussian_blur(direct[..., :18, :26], 2.0)
    torch.testing.assert_close(mask, direct)


@given(
    low=st.lists(st.integers(1, 9), min_size=1, max_size=3),
    scale=st.integers(1, 5),
    extra=st.integers(0, 3),
    batch=st.integers(1, 3),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
)
def test_upsample_linearly_is_interpolate_in_one_two_and_three_dimensions(
    low, scale, extra, batch, dtype
):
    values = torch.rand(batch, 1, *low, generator=torch.Generator().manual_seed(0)).to(dtype)
    size = [side * scale + extra for side in low]
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(low)]
    expected = torch.nn.functional.interpolate(values, size=size, mode=mode, align_corners=False)
    upsampled = upsample_linearly(values, size)
    assert upsampled.shape == expected.shape and upsampled.dtype == dtype
    tolerance = 2e-2 if dtype == torch.bfloat16 else 1e-6
    torch.testing.assert_close(upsampled, expected, atol=tolerance, rtol=0)
    # each example is upsampled alike alone and in the batch, to rounding
    alone = upsample_linearly(values[-1:], size)
    torch.testing.assert_close(alone, upsampled[-1:], atol=tolerance, rtol=0)


def test_upsampled_mask_jitter_shifts_within_range():
    parametrisation = masks.UpsampledMask(factor=1, smooth_sigma=0.0, jitter=4)
    params = torch.zeros(16, 1, 12, 12)
    params[..., 6, 6] = 1.0
    generator = torch.Generator().manual_seed(0)
    positions = set()
    for _ in range(16):  # one optimisation step each
        shifted = parametrisation.expand(params, (12, 12), generator)
        at_step = {divmod(m.flatten().argmax().item(), 12) for m in shifted}
        assert len(at_step) == 1  # the batch shares the step's shift, so no example depends on
        positions |= at_step  # the others
    assert len(positions) > 1  # steps draw new shifts
    assert all(6 <= r < 10 and 6 <= c < 10 for r, c in positions)
    assert torch.equal(parametrisation.expand(params, (12, 12)), params)  # no generator: no jitter


def test_sigmoid_mask_init_range_and_seed():
    parametrisation = masks.SigmoidMask(temperature=0.5, init_range=(-2.0, 3.0))
    images = torch.zeros(4, 3, 10, 10)
    (weights,) = parametrisation.init([images], torch.Generator().manual_seed(0))
    (again,) = parametrisation.init([images], torch.Generator().manual_seed(0))
    assert weights.shape == (4, 1, 10, 10) and torch.equal(weights, again)
    assert weights.min() >= -2.0 and weights.max() < 3.0
    torch.testing.assert_close(
        parametrisation.values(torch.tensor([1.0])), torch.sigmoid(torch.tensor([2.0]))
    )
    with pytest.raises(ValueError, match="temperature"):
        masks.SigmoidMask(temperature=0.0)


# ---------------------------------------------------------------- regularisers
def test_regularizers_hand_computed():
    mask = torch.tensor([[[[0.0, 1.0], [0.5, 0.5]]], [[[1.0, 1.0], [1.0, 1.0]]]])
    assert regularizers.l1(mask - 0.5).tolist() == [1.0, 2.0]
    # example 0: |∂rows| = [0.5, 0.5], |∂cols| = [1.0, 0.0]; β = 1 sums to 2, β = 2 to 1.5
    assert regularizers.total_variation(mask, 1.0).tolist() == [2.0, 0.0]
    assert regularizers.total_variation(mask, 2.0).tolist() == [1.5, 0.0]
    sequence = torch.tensor([[[0.0, 1.0, 0.0, 0.0]]])
    # 1-D Laplacian [1, -2, 1] at the two valid positions: -2, 1
    assert regularizers.laplacian(sequence).tolist() == [3.0]
    assert regularizers.laplacian(sequence, squared=True).tolist() == [5.0]
    image = torch.zeros(1, 1, 3, 3)
    image[0, 0, 1, 1] = 1.0
    assert regularizers.laplacian(image).tolist() == [8.0]
    assert regularizers.laplacian(torch.ones(1, 1, 5, 5), kernel_size=5).tolist() == [0.0]
    volume = torch.zeros(1, 1, 3, 3, 3)
    volume[0, 0, 1, 1, 1] = 1.0
    assert regularizers.laplacian(volume).tolist() == [26.0]
    with pytest.raises(ValueError, match="kernel_size"):
        regularizers.laplacian(sequence, kernel_size=4)


@given(
    layout=st.sampled_from([(1, 3), (2, 3), (2, 5)]),
    side=st.integers(5, 12),
    squared=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_laplacian_equals_the_convolution_with_its_kernel(layout, side, squared, seed):
    spatial_dims, size = layout
    shape = (2, 1) + (side,) * spatial_dims
    mask = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    if spatial_dims == 1:
        kernel = torch.tensor([1.0, -2.0, 1.0], dtype=torch.float64).view(1, 1, 3)
        response = torch.nn.functional.conv1d(mask, kernel)
    else:
        kernel = torch.ones(size, size, dtype=torch.float64)
        kernel[size // 2, size // 2] = 1.0 - size**2
        response = torch.nn.functional.conv2d(mask, kernel.view(1, 1, size, size))
    expected = (response.square() if squared else response.abs()).flatten(1).sum(1)
    torch.testing.assert_close(regularizers.laplacian(mask, size, squared), expected)


def test_area_is_zero_only_for_a_binary_mask_of_the_right_size():
    binary = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    assert regularizers.area(binary, 0.25).item() == 0.0
    assert regularizers.area(binary, 0.5).item() == pytest.approx(0.25)  # one value off by 1
    assert regularizers.area(torch.full((1, 1, 2, 2), 0.5), 0.5).item() == pytest.approx(0.25)


# ---------------------------------------------------------------- optimisation loop
def quadratic_problem(targets, rows_seen=None, scale=1.0):
    """Each example minimises 1 + ‖θ − target‖² from θ = 0: like a mask objective, whose
    regularisers keep it above 0, its minimum is not 0, so the relative tolerance of early
    stopping applies. The 'probability' is a stand-in that records θ. ``rows_seen`` collects how
    many examples each objective call scored; ``scale`` multiplies the loss."""

    def build(batch):
        def objective(params, rows, step):
            (theta,) = params
            if rows_seen is not None:
                rows_seen.append(theta.shape[0])
            loss = 1.0 + (theta - rows.targets).square().flatten(1).sum(1)
            return scale * loss, theta.flatten(1)[:, 0]

        indices = torch.arange(len(targets))[batch]
        examples = ExampleRows([], [], targets[batch], None, indices)
        return MaskProblem([torch.zeros_like(targets[batch])], objective, examples)

    return build


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop", "sgd"])
def test_loop_converges_with_each_optimizer(optimizer):
    targets = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    (theta,), history = optimize(
        quadratic_problem(targets),
        2,
        loop_settings(n_iter=400, lr=0.05, optimizer=optimizer),
    )
    torch.testing.assert_close(theta, targets, atol=0.05, rtol=0)
    assert history.loss.shape == (400, 2)
    assert (history.loss[-1] < history.loss[0]).all()


@given(
    lr=st.floats(0.05, 1.5),
    targets=st.lists(st.floats(-3, 3), min_size=1, max_size=4),
    chunk=st.none() | st.integers(1, 3),
)
def test_keep_best_returns_each_examples_lowest_loss_parameters(lr, targets, chunk):
    # plain gradient descent with a step above 1 overshoots 1 + (θ − t)² and diverges: the
    # last parameters are then the worst, the first ones (θ = 0) the best
    targets = torch.tensor(targets).unsqueeze(1)
    settings = loop_settings(n_iter=12, lr=lr, optimizer="sgd")
    settings = dataclasses.replace(settings, keep_best=True, internal_batch_size=chunk)
    (theta,), history = optimize(quadratic_problem(targets), len(targets), settings)
    lowest = history.loss.min(dim=0).values
    torch.testing.assert_close(1.0 + (theta - targets).square().squeeze(1), lowest)


def test_chunking_and_batching_do_not_change_results():
    targets = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    settings = loop_settings(n_iter=30, lr=0.1)
    (whole,), history = optimize(quadratic_problem(targets), 5, settings)
    settings = dataclasses.replace(settings, internal_batch_size=2)
    (chunked,), chunked_history = optimize(quadratic_problem(targets), 5, settings)
    torch.testing.assert_close(whole, chunked)
    torch.testing.assert_close(history.loss, chunked_history.loss)
    (single,), _ = optimize(quadratic_problem(targets[3:4]), 1, loop_settings(30, 0.1))
    torch.testing.assert_close(whole[3:4], single)


def test_early_stopping_stops_and_marks_the_rest_nan():
    targets = torch.ones(2, 1)
    settings = loop_settings(n_iter=500, lr=0.5, optimizer="sgd", tolerance=1e-6, patience=3)
    _, history = optimize(quadratic_problem(targets), 2, settings)
    steps = int(history.steps[0])
    assert steps < 100
    assert torch.isnan(history.loss[steps:]).all() and not torch.isnan(history.loss[:steps]).any()


#: plain gradient descent on 1 + ‖θ − t‖² shrinks the error by 0.8 a step: the loss improves by
#: less than the tolerance (relative to a loss near 1) after a number of steps that grows with |t|
SETTLING = loop_settings(n_iter=200, lr=0.1, optimizer="sgd", tolerance=1e-4, patience=3)


def test_each_example_stops_on_its_own_and_leaves_the_batch():
    targets = torch.tensor([[0.0], [0.1], [3.0]])  # already optimal, close, far
    rows_seen = []
    (theta,), history = optimize(quadratic_problem(targets, rows_seen), 3, SETTLING)
    steps = history.steps.tolist()
    # the optimal one never improves: it stops once patience steps have passed without a gain
    assert steps[0] == 1 + SETTLING.patience
    assert steps[0] < steps[1] < steps[2] < SETTLING.n_iter
    torch.testing.assert_close(theta, targets, atol=0.02, rtol=0)
    # a stopped example is no longer scored: the objective sees 3, then 2, then 1 rows
    assert rows_seen == [3] * steps[0] + [2] * (steps[1] - steps[0]) + [1] * (steps[2] - steps[1])
    for k, ran in enumerate(steps):
        assert not torch.isnan(history.loss[:ran, k]).any()
        assert torch.isnan(history.loss[ran:, k]).all()


@given(
    targets=st.lists(st.floats(-4, 4), min_size=1, max_size=5),
    chunk=st.integers(1, 5),
    data=st.data(),
)
def test_early_stopping_keeps_batch_equal_to_one_by_one(targets, chunk, data):
    targets = torch.tensor(targets, dtype=torch.float64).unsqueeze(1)
    settings = dataclasses.replace(SETTLING, internal_batch_size=chunk)
    (theta,), history = optimize(quadratic_problem(targets), len(targets), settings)
    k = data.draw(st.integers(0, len(targets) - 1))
    (alone,), alone_history = optimize(quadratic_problem(targets[k : k + 1]), 1, SETTLING)
    torch.testing.assert_close(theta[k : k + 1], alone)
    assert history.steps[k] == alone_history.steps[0]
    torch.testing.assert_close(history.loss[:, k : k + 1], alone_history.loss, equal_nan=True)


def test_the_tolerance_is_relative_to_the_loss():
    """A loss a thousand times larger (with SGD's step scaled back) stops at the same steps."""
    targets = torch.tensor([[0.1], [3.0]], dtype=torch.float64)
    _, history = optimize(quadratic_problem(targets), 2, SETTLING)
    larger = dataclasses.replace(SETTLING, lr=SETTLING.lr / 1000)
    _, scaled = optimize(quadratic_problem(targets, scale=1000.0), 2, larger)
    assert history.steps.tolist() == scaled.steps.tolist()
    assert (history.steps < SETTLING.n_iter).all()


def test_without_a_tolerance_every_example_runs_every_step():
    targets = torch.tensor([[0.0], [3.0]])
    settings = dataclasses.replace(SETTLING, tolerance=None)
    _, history = optimize(quadratic_problem(targets), 2, settings)
    assert history.steps.tolist() == [settings.n_iter] * 2
    assert not torch.isnan(history.loss).any()


def test_scheduler_and_projection_are_applied():
    targets = torch.full((1, 1), 5.0)
    seen_lrs = []

    def build(batch):
        problem = quadratic_problem(targets)(batch)
        problem.project = lambda params: params[0].clamp_(max=1.0)
        return problem

    def scheduler(optimizer):
        seen_lrs.append(optimizer.param_groups[0]["lr"])
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)

    (theta,), _ = optimize(build, 1, loop_settings(n_iter=50, lr=0.1, scheduler=scheduler))
    assert seen_lrs == [0.1]
    assert theta.item() <= 1.0  # projected each step; the unprojected optimum is 5
    assert theta.item() < 0.25  # lr halves each step: total travel stays below 2 × 0.1


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("n_iter", 0, "n_iter"),
        ("lr", -1.0, "lr"),
        ("optimizer", "lbfgs", "optimizer"),
        ("internal_batch_size", 0, "internal_batch_size"),
        ("patience", 0, "patience"),
    ],
)
def test_settings_validation_names_the_argument(field, value, message):
    with pytest.raises(ValueError, match=message):  # validated on construction
        loop_settings(**{"n_iter": 10, "lr": 0.1, field: value})
