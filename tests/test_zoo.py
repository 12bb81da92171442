"""Pasted photo composites: where the objects go and what the ground truth says."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

zoo = pytest.importorskip("captum_masks.bench.zoo")


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    object_size=st.integers(8, 112),
    order=st.sampled_from([("cat", "coffee"), ("coffee", "cat")]),
)
def test_pair_objects_are_apart_and_their_masks_are_exact(seed, object_size, order):
    pair = zoo.paste_pair(*order, "grass", object_size=object_size, seed=seed)
    assert pair.image.shape == (1, 3, 224, 224) and pair.masks.shape == (1, 2, 224, 224)
    assert 0.0 <= pair.image.min() and pair.image.max() <= 1.0
    first, second = pair.masks[0].bool()
    assert not (first & second).any()
    alone = []
    for k, (obj, box) in enumerate(zip(order, pair.boxes)):
        top, left, bottom, right = box
        assert bottom - top == right - left == object_size
        assert pair.masks[0, k].sum() == object_size**2
        assert pair.masks[0, k, top:bottom, left:right].all()
        alone.append(zoo.paste_composite(obj, "grass", object_size, position=(top, left)).image)
        inside = pair.masks[0, k].bool().expand(3, -1, -1)
        torch.testing.assert_close(pair.image[0][inside], alone[k][0][inside])
    # everywhere else the pair is the same background as a single composite
    outside = ~(first | second).expand(3, -1, -1)
    torch.testing.assert_close(pair.image[0][outside], alone[0][0][outside])


def test_pair_layout_depends_on_the_seed_only():
    boxes = {zoo.paste_pair(seed=seed).boxes for seed in range(8)}
    assert len(boxes) > 4
    assert zoo.paste_pair(seed=3).boxes == zoo.paste_pair(seed=3).boxes


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"first": "dog"}, "first must be one of"),
        ({"second": "dog"}, "second must be one of"),
        ({"object_size": 113}, r"object_size must be in \(0, 112\]"),
        ({"object_size": 0}, "object_size must be in"),
    ],
)
def test_pair_bad_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        zoo.paste_pair(**kwargs)
