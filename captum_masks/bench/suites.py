"""The benchmark's suites: images with pasted ground truth, the model that explains them and
the settings each method runs with on it (see :mod:`captum_masks.bench.benchmark`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor, nn

from captum_masks.masks import UpsampledMask
from captum_masks.meaningful_perturbation import GAMES
from captum_masks.perturbations import Blur

SUITES = (
    "synthetic",
    "photos",
    "synthetic-pairs",
    "photos-pairs",
    "photo-objects",
    "photos-lite2",
    "photos-pairs-lite2",
)
#: the photo suites' classifiers: EfficientNet-Lite0, and Lite2 as a second, held-out model
PHOTO_MODELS = ("efficientnet-lite0", "efficientnet-lite2")


@dataclass
class Suite:
    """Images with ground truth, a model, and the scale-dependent settings of the methods.

    ``masks`` hold the object to find in each row; pair suites also have ``other_masks``, the
    object of the class that is not explained. ``gfi_layers`` are the (layer, mask_layer) of
    :class:`GuidedFeatureInversion`. The pointing game looks for the maximum of the map smoothed
    at ``pointing_sigma`` pixels (0: the raw map). ``descriptions`` name each row's content.
    """

    name: str
    model: nn.Module
    inputs: Tensor
    targets: Tensor
    masks: Tensor
    display: Tensor
    last_conv: nn.Module
    patch: int
    pointing_tolerance: int
    gfi_layers: tuple[nn.Module, nn.Module]
    other_masks: Tensor | None = None
    pointing_sigma: float = 0.0
    descriptions: tuple[str, ...] = ()
    mp_settings: dict = field(default_factory=lambda: {game: {} for game in GAMES})
    neuromask_settings: dict = field(default_factory=dict)
    gfi_settings: dict = field(default_factory=dict)
    ep_settings: dict = field(default_factory=dict)
    blur_sigma: float = 10.0


def _synthetic_settings(model: nn.Module, size: int) -> dict:
    """The methods' settings for the 64 px synthetic images on a reference CNN."""
    scale = size / 224
    features = model.get_submodule("features")
    assert isinstance(features, nn.Sequential)
    last_relu = features[-1]
    return {
        "last_conv": model.last_conv,
        "patch": 8,
        "pointing_tolerance": max(1, round(15 * scale)),
        # the last ReLU: 96 post-activation channels at 1/8 of the image, like VGG's conv5
        "gfi_layers": (last_relu, last_relu),
        # every other method runs at its defaults, which follow the image's size; keeping a
        # shape must keep all of it: a finer mask and a stronger area penalty, against a
        # background blurred enough to erase the shapes
        "mp_settings": {
            "deletion": {},
            "preservation": {
                "mask": UpsampledMask(factor=2, smooth_sigma=0.7, jitter=0),
                "l1_weight": 5.0,
                "perturbation": Blur(sigma=10.0),
            },
        },
        "blur_sigma": 10 * scale,
    }


#: the synthetic images of each split come from disjoint ranges of generator seeds
_SYNTHETIC_SEEDS = {"calibration": 20_000, "held-out": 60_000}


def _synthetic_seed(split: str, seed: int) -> int:
    from captum_masks.bench.layouts import check_split

    check_split(split)
    return _SYNTHETIC_SEEDS[split] + seed


def synthetic_suite(n: int, seed: int = 0, split: str = "held-out") -> Suite:
    """``n`` single-label synthetic images of the ``split`` on the reference CNN (trained on
    first use)."""
    from captum_masks.bench.synthetic import load_reference_cnn, make_synthetic

    model = load_reference_cnn(multilabel=False).model
    return _single_object_suite(
        "synthetic", model, make_synthetic(n, _synthetic_seed(split, seed))
    )


def _single_object_suite(name: str, model: nn.Module, batch) -> Suite:
    """A suite of 64 px images with one object each, explained for its class."""
    return Suite(
        name=name,
        model=model,
        inputs=batch.images,
        targets=batch.labels,
        masks=batch.masks,
        display=batch.images,
        **_synthetic_settings(model, batch.images.shape[-1]),
    )


def synthetic_pairs_suite(n: int, seed: int = 0, split: str = "held-out") -> Suite:
    """``n`` two-object synthetic images of the ``split`` on the multi-label reference CNN, each
    explained for both of its classes (2n rows: every image for its first object, then for its
    second)."""
    from captum_masks.bench.synthetic import load_reference_cnn, make_synthetic

    model = load_reference_cnn(multilabel=True).model
    batch = make_synthetic(n, seed=10_000 + _synthetic_seed(split, seed), multilabel=True)
    rows = torch.arange(n)
    classes = torch.stack([classes[:2] for classes in batch.box_classes])
    first, second = (batch.class_masks[rows, classes[:, k]].unsqueeze(1) for k in (0, 1))
    return Suite(
        name="synthetic-pairs",
        model=model,
        inputs=batch.images.repeat(2, 1, 1, 1),
        targets=torch.cat([classes[:, 0], classes[:, 1]]),
        masks=torch.cat([first, second]),
        other_masks=torch.cat([second, first]),
        display=batch.images.repeat(2, 1, 1, 1),
        **_synthetic_settings(model, batch.images.shape[-1]),
    )


def photo_objects_suite(n: int, seed: int = 0, split: str = "held-out") -> Suite:
    """``n`` images of the small real-photo task: one of the photo suites' six objects pasted
    as a 19 to 29 px square on a 64 px crop of the ``split``'s textures, on a reference CNN
    trained on the calibration textures (on first use, about 90 s on 2 CPU cores); each row
    explains its object's class."""
    from captum_masks.bench.synthetic import load_reference_cnn, task_images

    model = load_reference_cnn(objects="photos").model
    batch = task_images("photos", n, _synthetic_seed(split, seed), split=split)
    return _single_object_suite("photo-objects", model, batch)


def _photos_settings(model: nn.Module, size: int) -> dict:
    """The scores' settings for photos of ``size`` px on an EfficientNet-Lite: the pointing
    game's 15 px and Occlusion's 16 px patch at 224 px, scaled to the image; the methods run at
    their defaults."""
    scale = size / 224
    return {
        "last_conv": model._conv_head,
        "patch": round(16 * scale),
        "pointing_tolerance": round(15 * scale),
        "pointing_sigma": 4.0 * scale,
        "blur_sigma": 10.0 * scale,
        # the head's batch norm (1280 channels at 7 x 7) with the ReLU applied by the method:
        # the activation module itself (`_swish`) is shared by every block and cannot be hooked
        "gfi_layers": (model._bn1, model._bn1),
    }


def photos_suite(
    n: int, seed: int = 0, split: str = "held-out", model_name: str = "efficientnet-lite0"
) -> Suite:
    """``n`` real objects pasted one per image on the ``split``'s textures, on a pretrained
    EfficientNet-Lite (``model_name``, one of :data:`PHOTO_MODELS`, at its own input size),
    each explained for its predicted class (see :mod:`captum_masks.bench.layouts`)."""
    from captum_masks.bench import zoo
    from captum_masks.bench.layouts import recognised_layouts

    model, size = zoo.EFFICIENTNETS[model_name](), zoo.EFFICIENTNET_SIZES[model_name]
    layouts = recognised_layouts(model, n, 1, split, seed, image_size=size)
    display = torch.cat([layout.image for layout in layouts])
    return Suite(
        name=_photo_suite_name("photos", model_name),
        model=model,
        inputs=zoo.normalize(display),
        targets=torch.tensor([layout.targets[0] for layout in layouts]),
        masks=torch.cat([layout.masks for layout in layouts]),
        display=display,
        descriptions=tuple(layout.describe() for layout in layouts),
        **_photos_settings(model, size),
    )


def photos_pairs_suite(
    n: int,
    seed: int = 0,
    split: str = "held-out",
    objects: tuple[str, str] | None = None,
    model_name: str = "efficientnet-lite0",
) -> Suite:
    """``n`` photos holding two different real objects on the ``split``'s textures, on a
    pretrained EfficientNet-Lite (``model_name``), each explained for both objects (2n rows:
    every image for its first object, then for its second). An object's class is what the
    model predicts for that object pasted alone at the same place on the same background;
    ``objects`` fixes the two objects (e.g. ``("cat", "coffee")``), drawn per image by
    default."""
    from captum_masks.bench import zoo
    from captum_masks.bench.layouts import recognised_layouts

    model, size = zoo.EFFICIENTNETS[model_name](), zoo.EFFICIENTNET_SIZES[model_name]
    layouts = recognised_layouts(model, n, 2, split, seed, objects, image_size=size)
    display = torch.cat([layout.image for layout in layouts]).repeat(2, 1, 1, 1)
    first, second = torch.cat([layout.masks for layout in layouts]).split(1, dim=1)
    return Suite(
        name=_photo_suite_name("photos-pairs", model_name),
        model=model,
        inputs=zoo.normalize(display),
        targets=torch.tensor([layout.targets[k] for k in (0, 1) for layout in layouts]),
        masks=torch.cat([first, second]),
        other_masks=torch.cat([second, first]),
        display=display,
        descriptions=tuple(layout.describe(k) for k in (0, 1) for layout in layouts),
        **_photos_settings(model, size),
    )


def _photo_suite_name(suite: str, model_name: str) -> str:
    """``"photos"`` on Lite0, ``"photos-lite2"`` on Lite2."""
    if model_name not in PHOTO_MODELS:
        raise ValueError(f"model_name must be one of {PHOTO_MODELS}, got {model_name!r}")
    return suite if model_name == PHOTO_MODELS[0] else f"{suite}-{model_name.rsplit('-', 1)[1]}"


def image_suite(image: str) -> Suite:
    """One photo (a name of :data:`~captum_masks.bench.zoo.SAMPLE_IMAGES` or an image file) on
    EfficientNet-Lite0, explained for its top class; it has no ground truth (empty masks)."""
    from captum_masks.bench import zoo

    model = zoo.load_efficientnet_lite0()
    inputs = zoo.preprocess(zoo.sample_image(image))
    with torch.no_grad():
        targets = model(inputs).argmax(dim=1)
    mean = inputs.new_tensor(zoo.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = inputs.new_tensor(zoo.IMAGENET_STD).view(1, 3, 1, 1)
    return Suite(
        name=f"image {image}",
        model=model,
        inputs=inputs,
        targets=targets,
        masks=torch.zeros_like(inputs[:, :1]),
        display=(inputs * std + mean).clamp(0, 1),
        **_photos_settings(model, zoo.INPUT_SIZE),
    )


#: each suite's builder, called as ``(n, seed, split)`` (the photo pair suites also take
#: ``objects=``)
SUITE_BUILDERS: dict[str, Callable[..., Suite]] = {
    "synthetic": synthetic_suite,
    "photos": photos_suite,
    "synthetic-pairs": synthetic_pairs_suite,
    "photos-pairs": photos_pairs_suite,
    "photo-objects": photo_objects_suite,
    "photos-lite2": partial(photos_suite, model_name="efficientnet-lite2"),
    "photos-pairs-lite2": partial(photos_pairs_suite, model_name="efficientnet-lite2"),
}
#: the suites whose two objects can be fixed with ``objects``
PHOTO_PAIR_SUITES = ("photos-pairs", "photos-pairs-lite2")


class SuiteDataset(torch.utils.data.Dataset):
    """A suite's rows as a dataset for :func:`captum_masks.explain_dataset`: each item is a dict
    with the row's ``inputs`` and ``label`` (the class the suite explains) and, with
    ``ground_truth``, its ``mask`` (and ``other_mask`` on the pair suites), which
    ``explain_dataset`` scores.

    Args:
        suite (Suite): the rows.
        ground_truth (bool): include the masks.
    """

    def __init__(self, suite: Suite, ground_truth: bool = True) -> None:
        self.suite, self.ground_truth = suite, ground_truth

    def __len__(self) -> int:
        return self.suite.inputs.shape[0]

    def __getitem__(self, index: int) -> dict:
        suite = self.suite
        item = {"inputs": suite.inputs[index], "label": suite.targets[index]}
        if self.ground_truth:
            item["mask"] = suite.masks[index]
            if suite.other_masks is not None:
                item["other_mask"] = suite.other_masks[index]
        return item


def held_out_photos() -> SuiteDataset:
    """The docs' 12 held-out single-object photos with their masks, for
    ``python -m captum_masks explain --data captum_masks.bench.suites:held_out_photos``
    (EfficientNet-Lite0, ``--target label``)."""
    return SuiteDataset(photos_suite(12))


def held_out_photo_pairs() -> SuiteDataset:
    """The docs' 8 held-out two-object photos (16 rows) with both objects' masks."""
    return SuiteDataset(photos_pairs_suite(8))


__all__ = [
    "PHOTO_PAIR_SUITES",
    "SUITES",
    "SUITE_BUILDERS",
    "Suite",
    "SuiteDataset",
    "held_out_photo_pairs",
    "held_out_photos",
    "image_suite",
    "photos_pairs_suite",
    "photos_suite",
    "synthetic_pairs_suite",
    "synthetic_suite",
]
