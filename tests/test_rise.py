"""RISE: the estimator against its definition, the ground truth of a spot detector, and the Captum
contract (the mask-optimisation methods' contract suite relies on their optimisation history,
which RISE, a sampling method, has none of)."""

import warnings

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from captum.attr import NoiseTunnel
from conftest import (
    NormCNN,
    SpotDetector,
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

from captum_masks import RISE

FEW = {"n_samples": 64}


def test_it_is_the_score_weighted_mean_of_its_masks():
    """With one feature per group the masks are the keep/drop draws themselves, so the estimate
    (Eq. 6) can be recomputed from the model's scores on every masked row."""
    model = nn.Linear(5, 3)
    rows = torch.randn(2, 5, generator=torch.Generator().manual_seed(0))
    saliency = RISE(model).attribute(rows, target=1, n_samples=40, keep_probability=0.3)
    # the same masks, drawn as RISE draws them from seed 0
    generator = torch.Generator().manual_seed(0)
    kept = (torch.rand((40, 5), generator=generator) < 0.3).float()
    with torch.no_grad():
        scores = model(rows[:, None] * kept[None]).softmax(dim=-1)[..., 1]  # (2, 40)
    expected = (scores[..., None] * kept[None]).sum(dim=1) / (40 * 0.3)
    torch.testing.assert_close(saliency, expected)


def test_the_spot_detectors_square_gets_the_highest_values():
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    saliency = RISE(SpotDetector(top=8, left=16, side=8).eval()).attribute(
        images, target=1, n_samples=500
    )
    peaks = saliency[:, 0].flatten(1).argmax(dim=1)
    rows, cols = peaks // 32, peaks % 32
    assert ((rows >= 8) & (rows < 16) & (cols >= 16) & (cols < 24)).all()
    inside = saliency[:, 0, 8:16, 16:24].mean(dim=(1, 2))
    assert (inside > saliency[:, 0].mean(dim=(1, 2))).all()


def test_masks_are_smooth_shifted_grids():
    """A constant model weighs every mask alike: the estimate is the mean mask / p, about 1
    everywhere, and with few masks its spatial pattern shows cells larger than a pixel."""
    constant = RISE(lambda x: torch.ones(x.shape[0], 2, dtype=x.dtype))
    image = torch.zeros(1, 1, 28, 28)
    mean = constant.attribute(image, target=0, n_samples=2000, apply_softmax=False)
    torch.testing.assert_close(mean.mean(), torch.tensor(1.0), atol=0.03, rtol=0)
    one = constant.attribute(image, target=0, n_samples=1, apply_softmax=False) * 0.5
    assert one.min() >= 0 and one.max() <= 1
    # neighbouring pixels of one upsampled mask differ little: the grid's cells are 4 px wide
    assert (one[..., 1:] - one[..., :-1]).abs().max() < 0.5


# ---------------------------------------------------------------- Captum contract
def test_tensor_and_tuple_in_and_out(tiny_model, images):
    attribution = RISE(tiny_model).attribute(images, target=1, **FEW)
    assert isinstance(attribution, torch.Tensor) and attribution.shape == images.shape
    assert torch.equal(attribution[:, 0], attribution[:, 2])

    torch.manual_seed(0)
    rgb, gray = torch.randn(2, 3, 16, 16), torch.randn(2, 1, 24, 24)
    result = RISE(TwoInputs().eval()).attribute((rgb, gray), target=0, **FEW)
    assert isinstance(result, tuple) and [r.shape for r in result] == [rgb.shape, gray.shape]


@pytest.mark.parametrize(
    "target", [2, [0, 1, 4], torch.tensor([3, 3, 0]), torch.tensor(2), None], ids=str
)
def test_every_target_form_matches_explicit_per_example_targets(tiny_model, images, target):
    result = RISE(tiny_model).attribute(images, target=target, **FEW)
    expected = explicit_targets(target, tiny_model, images)
    torch.testing.assert_close(RISE(tiny_model).attribute(images, target=expected, **FEW), result)


def test_additional_forward_args_reach_the_model(tiny_model, images):
    # logits × 0: a uniform softmax over 5 classes for every mask, so the estimate is 0.2 / p
    # times the mean mask, the same for every example
    result = RISE(tiny_model).attribute(images, target=0, additional_forward_args=(0.0,), **FEW)
    torch.testing.assert_close(result[0], result[1])
    torch.testing.assert_close(result.mean(), torch.tensor(0.2), atol=0.03, rtol=0)


def test_noise_tunnel_metrics_and_visualization(tiny_model, images):
    rise = RISE(tiny_model)
    tunnel = NoiseTunnel(rise).attribute(images, nt_samples=2, stdevs=0.0, target=1, **FEW)
    torch.testing.assert_close(tunnel, rise.attribute(images, target=1, **FEW))
    assert_captum_metrics_run(tiny_model, rise, images, FEW)
    assert_feeds_captum_visualization(rise.attribute(images[:1], target=1, **FEW), images)
    assert rise.multiplies_by_inputs is False and rise.has_convergence_delta() is False


@hypothesis_settings(max_examples=8, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.integers(0, 2), min_size=1, max_size=4),
    internal_batch_size=st.none() | st.integers(1, 9),
)
def test_an_example_depends_only_on_itself_and_not_on_the_chunking(
    tiny_model, images, rows, internal_batch_size
):
    targets = [r + 1 for r in rows]
    batch = RISE(tiny_model).attribute(
        images[rows], **FEW, target=targets, internal_batch_size=internal_batch_size
    )
    alone = torch.cat(
        [RISE(tiny_model).attribute(images[r : r + 1], target=r + 1, **FEW) for r in rows]
    )
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=0)


def test_same_seed_same_result_other_seed_other_result(tiny_model, images):
    first = RISE(tiny_model).attribute(images, **FEW, target=1, seed=3)
    assert torch.equal(first, RISE(tiny_model).attribute(images, **FEW, target=1, seed=3))
    assert not torch.equal(first, RISE(tiny_model).attribute(images, **FEW, target=1, seed=4))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_the_model_runs_in_the_inputs_dtype(images, dtype):
    torch.manual_seed(0)
    model = TinyCNN().eval()
    reference = RISE(model).attribute(images, target=1, **FEW)
    seen = []
    model.features.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    attribution = RISE(model.to(dtype)).attribute(images.to(dtype), target=1, **FEW)
    assert set(seen) == {dtype} and attribution.dtype == dtype
    assert torch.isfinite(attribution).all()
    torch.testing.assert_close(attribution.float(), reference, atol=0.05, rtol=0)


# ---------------------------------------------------------------- no side effects
def test_a_training_mode_model_is_left_bit_identical_with_one_warning():
    torch.manual_seed(0)
    model = NormCNN().train()
    x = torch.randn(3, 3, 10, 10)
    model(x).sum().backward()
    before = model_state(model)
    rng = torch.get_rng_state()
    with pytest.warns(UserWarning, match="training mode"):
        RISE(model).attribute(x, target=0, **FEW)
    assert torch.equal(torch.get_rng_state(), rng)
    assert_same_state(before, model_state(model))


def test_leaves_everything_untouched_when_the_model_raises_midway():
    torch.manual_seed(0)
    model = NormCNN().train()
    handle = model.norm.register_forward_hook(fail_on_call(3))
    before = model_state(model)
    x = torch.randn(2, 3, 10, 10)
    with pytest.raises(RuntimeError, match="boom"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        RISE(model).attribute(x, **FEW, target=0, internal_batch_size=4)
    handle.remove()
    before["hooks"] = model_state(model)["hooks"]
    assert_same_state(before, model_state(model))


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_samples": 0}, "n_samples"),
        ({"grid_size": 0}, "grid_size"),
        ({"keep_probability": 0.0}, "keep_probability"),
        ({"keep_probability": 1.5}, "keep_probability"),
        ({"internal_batch_size": 0}, "internal_batch_size"),
        ({"target": 7}, "out of range"),
        ({"baselines": torch.zeros(5, 5)}, "baselines"),
        ({"feature_mask": torch.zeros(1, 1, 5, 5, dtype=torch.long)}, "feature_mask"),
    ],
)
def test_bad_input_is_a_clear_error_and_changes_nothing(tiny_model, images, kwargs, message):
    snapshot = images.clone()
    before = model_state(tiny_model)
    with pytest.raises(ValueError, match=message):
        RISE(tiny_model).attribute(images, **{"target": 0, **FEW, **kwargs})
    assert torch.equal(images, snapshot)
    assert_same_state(before, model_state(tiny_model))


@hypothesis_settings(max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_returns_a_valid_map_or_a_clear_error(data):
    shape = data.draw(
        st.sampled_from([(2, 3, 9, 9), (1, 1, 1, 1), (3, 2, 7), (2, 5), (1, 1, 3, 4, 5)])
    )
    options = data.draw(
        st.fixed_dictionaries(
            {},
            optional={
                "n_samples": st.integers(-1, 20),
                "grid_size": st.integers(0, 9),
                "keep_probability": st.floats(-0.5, 1.5, allow_nan=False),
                "internal_batch_size": st.none() | st.integers(-1, 10),
                "seed": st.integers(0, 3),
                "baselines": st.none() | st.floats(-2, 2, allow_nan=False),
            },
        )
    )
    model = lambda x: x.reshape(x.shape[0], -1)[:, :1].expand(-1, 3) * torch.arange(3.0)  # noqa: E731
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))

    def clipped_call():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            attribution = RISE(model).attribute(x, target=1, channels_last=False, **options)
        # RISE estimates an expectation: it is in [0, 1] up to sampling noise; clipped here
        # only for the shared checker, which wants a mask in [0, 1]
        return attribution.clamp(0, 1) if isinstance(attribution, torch.Tensor) else attribution

    assert_valid_mask_or_clear_error(clipped_call, x)
