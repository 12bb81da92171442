"""The ground-truth benchmark: images, their masks and boxes, and the reference CNN."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("captum_masks.bench.zoo")

from captum_masks.bench import synthetic
from captum_masks.bench.shapes import SHAPES, make_synthetic, shape_mask
from captum_masks.bench.synthetic import load_reference_cnn

seeds = st.integers(min_value=0, max_value=10_000)


@given(seed=seeds, multilabel=st.booleans())
def test_same_seed_same_batch_other_seed_other_batch(seed, multilabel):
    first = make_synthetic(3, seed=seed, multilabel=multilabel)
    again = make_synthetic(3, seed=seed, multilabel=multilabel)
    other = make_synthetic(3, seed=seed + 1, multilabel=multilabel)
    assert torch.equal(first.images, again.images)
    assert torch.equal(first.class_masks, again.class_masks)
    assert torch.equal(first.labels, again.labels)
    assert not torch.equal(first.images, other.images)


@given(seed=seeds, multilabel=st.booleans(), size=st.sampled_from([48, 64]))
def test_shapes_ranges_and_labels_agree_with_the_masks(seed, multilabel, size):
    batch = make_synthetic(4, seed=seed, multilabel=multilabel, size=size)
    assert batch.images.shape == (4, 3, size, size)
    assert batch.class_masks.shape == (4, len(SHAPES), size, size)
    assert batch.masks.shape == (4, 1, size, size)
    assert 0 <= batch.images.min() and batch.images.max() <= 1
    present = batch.class_masks.flatten(2).amax(dim=2)  # (N, K): which classes were pasted
    if multilabel:
        assert torch.equal(present, batch.labels)
        assert (present.sum(dim=1) == 2).all()
        # the two objects never overlap
        assert batch.class_masks.sum(dim=1).max() == 1
    else:
        assert torch.equal(present.argmax(dim=1), batch.labels)
        assert (present.sum(dim=1) == 1).all()
    assert torch.equal(batch.masks[:, 0], batch.class_masks.amax(dim=1))


@given(seed=seeds, multilabel=st.booleans())
def test_boxes_are_tight_around_each_object(seed, multilabel):
    batch = make_synthetic(3, seed=seed, multilabel=multilabel)
    for index in range(len(batch)):
        for box, kind in zip(batch.boxes[index].tolist(), batch.box_classes[index].tolist()):
            top, left, bottom, right = box
            rows, cols = torch.nonzero(batch.class_masks[index, kind], as_tuple=True)
            assert (top, left, bottom, right) == (
                rows.min(),
                cols.min(),
                rows.max() + 1,
                cols.max() + 1,
            )


@given(seed=seeds)
def test_objects_change_exactly_the_masked_pixels(seed):
    pasted = make_synthetic(3, seed=seed)
    empty = make_synthetic(3, seed=seed, with_objects=False)
    changed = (pasted.images != empty.images).any(dim=1, keepdim=True)
    assert torch.equal(pasted.class_masks, empty.class_masks)
    assert not (changed & (pasted.masks == 0)).any()
    # each object is one flat colour
    for index in range(3):
        inside = pasted.images[index][:, pasted.masks[index, 0] > 0]
        assert torch.allclose(inside, inside[:, :1].expand_as(inside))


@pytest.mark.parametrize("kind", SHAPES)
def test_each_shape_is_centred_with_the_expected_area(kind):
    radius = 10.0
    mask = shape_mask(kind, 64, (30.0, 33.0), radius)
    rows, cols = torch.nonzero(mask, as_tuple=True)
    expected_area = {
        "circle": torch.pi * radius**2,
        "square": (2 * 0.85 * radius) ** 2,
        "triangle": 2 * radius**2,
        "cross": 2 * (2 * radius) * (2 * radius / 3) - (2 * radius / 3) ** 2,
    }[kind]
    assert mask.sum() == pytest.approx(expected_area, rel=0.15)
    assert cols.float().mean() == pytest.approx(33.0, abs=0.6)
    assert rows.min() >= 30 - radius - 1 and rows.max() <= 30 + radius + 1


def test_unknown_shape_is_a_clear_error():
    with pytest.raises(ValueError, match="kind must be one of"):
        shape_mask("hexagon", 32, (16.0, 16.0), 5.0)


@pytest.mark.real_model
@pytest.mark.parametrize("multilabel", [False, True], ids=["single", "multi"])
def test_shipped_reference_cnn_is_accurate_and_uses_the_objects(multilabel):
    rng_before = torch.get_rng_state()
    reference = load_reference_cnn(multilabel=multilabel, verbose=False)
    assert torch.equal(torch.get_rng_state(), rng_before)
    chance = 2 / (len(SHAPES) * (len(SHAPES) - 1)) if multilabel else 1 / len(SHAPES)
    assert reference.test_accuracy >= 0.95
    assert reference.accuracy_without_objects <= chance + 0.1
    assert not reference.model.training
    assert reference.train_seconds == 0.0  # the shipped weights: nothing to train


@pytest.mark.real_model
def test_other_training_settings_train_once_then_load_from_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("CAPTUM_MASKS_CACHE", str(tmp_path))
    # a shorter recipe than the shipped one: no shipped weights match it
    monkeypatch.setattr(
        synthetic, "TRAIN_SETTINGS", dict(synthetic.TRAIN_SETTINGS, train_size=640)
    )
    rng_before = torch.get_rng_state()
    first = load_reference_cnn(verbose=False)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert first.train_seconds > 0
    assert first.test_accuracy >= 0.5  # chance is 0.25
    assert not first.model.training
    assert [p.name.startswith("reference_cnn_single_") for p in tmp_path.iterdir()] == [True]
    again = load_reference_cnn(verbose=False)
    assert again.train_seconds == 0.0
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key]), key


@given(seed=seeds, multilabel=st.booleans())
def test_the_photo_task_pastes_each_labelled_object_as_a_square_of_its_photo(seed, multilabel):
    from captum_masks.bench.shapes import PHOTO_OBJECTS
    from captum_masks.bench.synthetic import task_images

    batch = task_images("photos", 3, seed, multilabel=multilabel, split="held-out")
    again = task_images("photos", 3, seed, multilabel=multilabel, split="held-out")
    empty = task_images("photos", 3, seed, multilabel, "held-out", with_objects=False)
    assert torch.equal(batch.images, again.images)
    assert batch.class_masks.shape[1] == len(PHOTO_OBJECTS)
    present = batch.class_masks.flatten(2).amax(dim=2)
    expected = batch.labels if multilabel else torch.nn.functional.one_hot(batch.labels, 6)
    assert torch.equal(present, expected.float())
    for index, boxes in enumerate(batch.boxes):
        for top, left, bottom, right in boxes.tolist():
            square = batch.masks[index, 0, top:bottom, left:right]
            assert bool((square == 1).all())  # the object fills its box: a square
    outside = batch.masks == 0
    assert torch.equal(
        batch.images.masked_select(outside.expand_as(batch.images)),
        empty.images.masked_select(outside.expand_as(empty.images)),
    )
    assert not torch.equal(batch.images, empty.images)


def test_the_photo_task_refuses_an_unknown_kind_of_object():
    with pytest.raises(ValueError, match="objects must be one of"):
        make_synthetic(1, objects="letters")
