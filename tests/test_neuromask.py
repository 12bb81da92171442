"""NeuroMaskAttr: what it finds, sequences, baselines, its options and its errors (the shared
contract is in test_contract.py)."""

import pytest
import torch
from conftest import SpotDetector, TinyCNN, assert_same_state, model_state
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from captum_masks import Laplacian, NeuroMaskAttr, Optimization, SigmoidMask

# the toy detectors' logits move by at most ±2, far less than a real classifier's, spread over
# the 64 pixels of their spot: weigh the prediction more, and sparseness less (the authors' 0.35
# on the mean of 32 × 32 pixels, per pixel), so that sparseness does not win outright
TOY = {"pred_weight": 4.0, "sparse_weight": 0.35 / 1024, "optimization": Optimization(n_iter=150)}


def spot_image():
    image = torch.full((1, 3, 32, 32), 0.1)
    image[..., 20:28, 4:12] = 1.0
    return image


def inside_and_outside(attribution):
    inside = attribution[20:28, 4:12].mean()
    outside = torch.cat([attribution[:16].flatten(), attribution[:, 16:].flatten()]).mean()
    return inside, outside


def test_keeps_the_evidence_and_drops_the_rest():
    model = SpotDetector(top=20, left=4, side=8)
    attribution = NeuroMaskAttr(model).attribute(spot_image(), target=1, **TOY)[0, 0]
    inside, outside = inside_and_outside(attribution)
    assert inside > 0.8 and outside < 0.2
    row, col = divmod(attribution.argmax().item(), 32)
    assert 20 <= row < 28 and 4 <= col < 12


def test_class_zero_is_explained_like_any_other():
    # class 0's logit falls with the spot's brightness: keeping it hurts class 0, and masking
    # it out entirely gives class 0 its best probability, 0.5
    model = SpotDetector(top=20, left=4, side=8)
    image = spot_image()
    assert model(image).argmax().item() == 1
    neuromask = NeuroMaskAttr(model)
    class_zero, history = neuromask.attribute(image, target=0, return_history=True, **TOY)
    class_one = neuromask.attribute(image, target=1, **TOY)
    assert history.probability[-1, 0] > 0.45 and history.probability[0, 0] < 0.2
    inside_zero, _ = inside_and_outside(class_zero[0, 0])
    inside_one, _ = inside_and_outside(class_one[0, 0])
    assert inside_zero < 0.2 and inside_one > 0.8


class SequenceSpot(nn.Module):
    """Class 1's logit is the mean of positions 10–13 of a sequence, class 0's its negation."""

    def __init__(self, channels_last: bool):
        super().__init__()
        self.channels_last = channels_last

    def forward(self, x):
        evidence = x[:, 10:14, :] if self.channels_last else x[:, :, 10:14]
        spot = evidence.mean(dim=(1, 2))
        return torch.stack([-spot, spot], dim=1) * 2.0


@pytest.mark.parametrize("channels_last", [False, True], ids=["NCL", "NLD"])
def test_sequences_mask_the_length_axis(channels_last):
    x = torch.full((2, 4, 32), 0.1)
    x[:, :, 10:14] = 1.0
    if channels_last:
        x = x.transpose(1, 2).contiguous()  # (N, L, D)
    attribution = NeuroMaskAttr(SequenceSpot(channels_last)).attribute(
        x, target=1, channels_last=channels_last, **TOY
    )
    assert attribution.shape == x.shape
    per_position = attribution[:, :, 0] if channels_last else attribution[:, 0, :]
    feature_axis = 2 if channels_last else 1
    # one mask value per position, shared by its features
    assert torch.equal(attribution, per_position.unsqueeze(feature_axis).expand_as(attribution))
    assert (per_position[:, 10:14] > 0.6).all()
    assert per_position[:, :8].max() < 0.2 and per_position[:, 16:].max() < 0.2


def first_masked_input(model, x, seed=0, **kwargs):
    seen = []

    def record(*inputs):
        seen.append(inputs[0].detach().clone())
        return model(*inputs)

    NeuroMaskAttr(record).attribute(x, **kwargs, optimization=Optimization(n_iter=1, seed=seed))
    return seen[1]  # seen[0] is the clean forward pass


@given(baseline=st.one_of(st.none(), st.floats(-2, 2)), seed=st.integers(0, 100))
def test_masked_input_is_the_mask_times_the_input_plus_the_baseline(baseline, seed):
    torch.manual_seed(0)
    model = TinyCNN().eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    masked = first_masked_input(model, x, target=1, baselines=baseline, seed=seed)
    b = 0.0 if baseline is None else baseline
    # x̄ − b = m·(x − b) with one m per pixel, shared by the channels, in (0, 1)
    ratio = (masked - b) / (x - b)
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio), atol=1e-4, rtol=1e-4)
    assert 0 < ratio.min() and ratio.max() < 1


def test_per_position_baseline_tensor_in_the_callers_layout():
    x = torch.rand(1, 6, 3)  # (N, L, D)
    baseline = torch.arange(18.0).view(1, 6, 3)
    masked = first_masked_input(
        SequenceSpot(channels_last=True), x, target=1, baselines=baseline, channels_last=True
    )
    ratio = (masked - baseline) / (x - baseline)
    torch.testing.assert_close(ratio, ratio[..., :1].expand_as(ratio), atol=1e-5, rtol=1e-5)


def test_smoothness_options_change_the_mask(tiny_model, images):
    neuromask = NeuroMaskAttr(tiny_model)
    settings = {"target": 1, "smooth_weight": 3e-3, "optimization": Optimization(n_iter=30)}
    l1 = neuromask.attribute(images, **settings)
    squared = neuromask.attribute(images, smoothness=Laplacian(squared=True), **settings)
    five = neuromask.attribute(images, smoothness=Laplacian(kernel_size=5), **settings)
    assert not torch.allclose(l1, squared) and not torch.allclose(l1, five)


def test_smoothness_alone_smooths_the_initial_noise(tiny_model, images):
    neuromask = NeuroMaskAttr(tiny_model)

    def roughness(mask):
        return (mask[..., 1:, :] - mask[..., :-1, :]).abs().mean()

    only_smoothness = {
        "target": 1,
        "pred_weight": 0.0,
        "sparse_weight": 0.0,
        "optimization": Optimization(n_iter=60),
    }
    untouched = neuromask.attribute(images, smooth_weight=0.0, **only_smoothness)
    smoothed = neuromask.attribute(images, smooth_weight=1e-3, **only_smoothness)
    initial = neuromask.attribute(images, target=1, optimization=Optimization(n_iter=1, lr=1e-12))
    torch.testing.assert_close(untouched, initial)  # nothing else moves the weights
    assert roughness(smoothed) < 0.5 * roughness(untouched)


#: (C, L) sequences and (C, H, W) images
SEQUENCES_AND_IMAGES = st.one_of(
    st.tuples(st.integers(1, 4), st.integers(5, 20)),
    st.tuples(st.integers(1, 3), st.integers(5, 16), st.integers(5, 16)),
)


def first_four_features(inputs):
    """Scores that read the first four values of each example."""
    return inputs.flatten(1)[:, :4] * 3.0


@given(
    batch=st.integers(1, 3),
    shape=SEQUENCES_AND_IMAGES,
    temperature=st.floats(0.05, 2.0),
    optimizer=st.sampled_from(["rmsprop", "adam", "sgd"]),
    squared=st.booleans(),
)
def test_any_shape_and_setting_gives_finite_values_in_unit_range(
    batch, shape, temperature, optimizer, squared
):
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(batch))
    attribution = NeuroMaskAttr(first_four_features).attribute(
        x,
        smoothness=Laplacian(squared=squared),
        mask=SigmoidMask(temperature=temperature),
        optimization=Optimization(optimizer=optimizer, n_iter=3),
    )
    assert attribution.shape == x.shape
    assert torch.isfinite(attribution).all() and attribution.min() >= 0 and attribution.max() <= 1


@given(factor=st.integers(1, 6), shape=SEQUENCES_AND_IMAGES, batch=st.integers(1, 3))
def test_mask_factor_gives_one_value_per_block_and_batch_equals_one_by_one(factor, shape, batch):
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(factor))
    neuromask = NeuroMaskAttr(first_four_features)
    settings = {
        "target": 1,
        "mask": SigmoidMask(block=factor),
        "channels_last": False,
        "optimization": Optimization(n_iter=4),
    }
    attribution = neuromask.attribute(x, **settings)
    assert attribution.shape == x.shape
    spatial = attribution[:, :1]
    for axis in range(2, x.dim()):  # equal within each block, block by block along each axis
        blocks = torch.split(spatial, factor, dim=axis)
        for block in blocks:
            assert torch.equal(block, block.narrow(axis, 0, 1).expand_as(block))
    alone = torch.cat([neuromask.attribute(x[i : i + 1], **settings) for i in range(batch)])
    torch.testing.assert_close(attribution, alone)


@pytest.mark.parametrize(
    "shape, factor",
    [
        ((3, 224, 224), 4),
        ((3, 224, 300), 4),  # the shorter side sets it
        ((1, 448, 448), 8),
        ((3, 32, 32), 1),
        ((2, 224), 1),  # a sequence's positions are tokens
        ((1, 112, 112, 112), 2),  # a volume's shortest side too
        ((1, 32, 32, 32), 1),
    ],
)
def test_default_mask_factor_is_one_56th_of_the_shortest_side_and_1_on_sequences(shape, factor):
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))
    neuromask = NeuroMaskAttr(first_four_features)
    settings = {"target": 1, "channels_last": False, "optimization": Optimization(n_iter=2)}
    default = neuromask.attribute(x, **settings)
    assert torch.equal(default, neuromask.attribute(x, **settings, mask=SigmoidMask(block=factor)))
    assert not torch.equal(
        default, neuromask.attribute(x, **settings, mask=SigmoidMask(block=factor + 1))
    )


def test_mask_factor_keeps_the_evidence_at_block_resolution():
    model = SpotDetector(top=20, left=4, side=8)
    attribution = NeuroMaskAttr(model).attribute(
        spot_image(), **TOY, target=1, mask=SigmoidMask(block=4)
    )
    inside, outside = inside_and_outside(attribution[0, 0])
    assert inside > 0.8 and outside < 0.2
    default = NeuroMaskAttr(model).attribute(spot_image(), target=1, **TOY)
    assert not torch.equal(attribution, default)  # the blocks are a different mask


@pytest.mark.parametrize(
    "make_inputs, kwargs, error, message",
    [
        (lambda x: x, {"mask": lambda: SigmoidMask(temperature=0.0)}, ValueError, "temperature"),
        (
            lambda x: x,
            {"mask": lambda: SigmoidMask(init_range=(1.0, -1.0))},
            ValueError,
            "init_range",
        ),
        (lambda x: x, {"smoothness": lambda: Laplacian(kernel_size=4)}, ValueError, "kernel_size"),
        (lambda x: x, {"tau": -1.0}, ValueError, "tau"),
        (lambda x: x, {"sparse_weight": -0.1}, ValueError, "sparse_weight"),
        (lambda x: x, {"mask": lambda: SigmoidMask(block=0)}, ValueError, "block"),
        (
            lambda x: x,
            {
                "mask": lambda: SigmoidMask(block=2),
                "feature_mask": torch.zeros(1, 1, 16, 16, dtype=torch.long),
            },
            ValueError,
            "block",
        ),
        (lambda x: x, {"channels_last": "yes"}, TypeError, "channels_last"),
        (lambda x: x, {"baselines": torch.zeros(5, 5)}, ValueError, "baselines"),
        (lambda x: x[..., None, None], {}, ValueError, r"at most 3 spatial axes"),
        (lambda x: (x, x[:, 0, 0]), {}, ValueError, r"mixing \(N, F\) rows"),
    ],
)
def test_bad_option_is_a_clear_error_and_changes_nothing(
    tiny_model, images, make_inputs, kwargs, error, message
):
    inputs = make_inputs(images)
    snapshot = [x.clone() for x in inputs] if isinstance(inputs, tuple) else inputs.clone()
    before = model_state(tiny_model)
    with pytest.raises(error, match=message):
        built = {k: v() if callable(v) else v for k, v in kwargs.items()}
        optimization = Optimization(n_iter=2)
        NeuroMaskAttr(tiny_model).attribute(inputs, optimization=optimization, **built)
    if isinstance(inputs, tuple):
        assert all(torch.equal(x, y) for x, y in zip(inputs, snapshot))
    else:
        assert torch.equal(inputs, snapshot)
    assert_same_state(before, model_state(tiny_model))
