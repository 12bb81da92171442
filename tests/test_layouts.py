"""The photo suites' composites: a held-out split fixed by seed, with backgrounds never used for
calibration, and only objects the model recognises."""

import pytest
import torch

zoo = pytest.importorskip("captum_masks.bench.zoo")
layouts = pytest.importorskip("captum_masks.bench.layouts")
pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def model():
    return zoo.load_efficientnet_lite0()


def test_the_splits_share_no_background_and_use_only_offline_images():
    calibration, held_out = (set(layouts.BACKGROUNDS[split]) for split in layouts.SPLITS)
    assert calibration and held_out and not calibration & held_out
    assert calibration | held_out <= set(zoo.SAMPLE_IMAGES)
    assert {obj.image for obj in zoo.NAMED_OBJECTS.values()} <= set(zoo.SAMPLE_IMAGES)


def test_the_pair_calibration_objects_are_never_drawn_only_named(model):
    calibration_only = set(zoo.NAMED_OBJECTS) - set(zoo.OBJECTS)
    assert calibration_only
    drawn = layouts.recognised_layouts(model, 3, 2, "calibration", seed=3)
    assert all(not set(layout.objects) & calibration_only for layout in drawn)
    named = layouts.recognised_layouts(
        model, 1, 2, "calibration", objects=("rocket", "colorwheel")
    )
    assert named[0].objects == ("rocket", "colorwheel")


@pytest.mark.parametrize("objects_per_image", [1, 2])
def test_the_held_out_split_is_fixed_by_the_seed(model, objects_per_image):
    first = layouts.recognised_layouts(model, 3, objects_per_image, "held-out", seed=7)
    again = layouts.recognised_layouts(model, 3, objects_per_image, "held-out", seed=7)
    longer = layouts.recognised_layouts(model, 4, objects_per_image, "held-out", seed=7)
    other = layouts.recognised_layouts(model, 3, objects_per_image, "held-out", seed=8)
    for a, b, c in zip(first, again, longer):
        assert torch.equal(a.image, b.image) and torch.equal(a.masks, b.masks)
        assert a.targets == b.targets and a.describe() == b.describe()
        assert torch.equal(a.image, c.image)  # more images extend the suite, never reshuffle it
    assert not all(torch.equal(a.image, d.image) for a, d in zip(first, other))


@pytest.mark.parametrize("split", ["calibration", "held-out"])
def test_every_object_is_recognised_where_it_is_pasted(model, split):
    categories = zoo.imagenet_categories()
    pairs = layouts.recognised_layouts(model, 4, 2, split, seed=1)
    for layout in pairs:
        assert layout.background in layouts.BACKGROUNDS[split]
        assert len(set(layout.objects)) == 2 and layout.size in layouts.PAIR_SIZES
        first, second = layout.masks[0].bool()
        assert not (first & second).any()
        for k, (obj, target) in enumerate(zip(layout.objects, layout.targets)):
            assert categories[target] in zoo.OBJECTS[obj].classes
            assert int(layout.masks[0, k].sum()) == layout.size**2
        assert layout.describe(1).startswith(f"{layout.objects[1]} next to {layout.objects[0]}")
        with torch.no_grad():
            composite = model(zoo.normalize(layout.image))[0]
        seen = composite.topk(layouts.COMPOSITE_TOP_K).indices.tolist()
        assert set(layout.targets) <= set(seen)


def test_fixed_objects_and_bad_arguments(model):
    (layout,) = layouts.recognised_layouts(model, 1, 2, "calibration", objects=("cat", "coffee"))
    assert layout.objects == ("cat", "coffee")
    with pytest.raises(ValueError, match="split must be one of"):
        layouts.recognised_layouts(model, 1, 1, "test")
    with pytest.raises(ValueError, match="objects must name 2 objects"):
        layouts.recognised_layouts(model, 1, 2, objects=("cat",))


def test_the_second_model_gets_composites_at_its_own_size_that_it_recognises():
    lite2 = zoo.load_efficientnet_lite2()
    side = zoo.EFFICIENTNET_SIZES["efficientnet-lite2"]
    categories = zoo.imagenet_categories()
    (layout,) = layouts.recognised_layouts(lite2, 1, 1, "calibration", seed=2, image_size=side)
    assert layout.image.shape == (1, 3, side, side) and layout.masks.shape[-2:] == (side, side)
    scaled = {round(size * side / zoo.INPUT_SIZE) for size in layouts.SINGLE_SIZES}
    assert layout.size in scaled and int(layout.masks.sum()) == layout.size**2
    with torch.no_grad():
        alone = lite2(zoo.normalize(layout.image)).argmax(dim=1).item()
    assert categories[alone] in zoo.OBJECTS[layout.objects[0]].classes
