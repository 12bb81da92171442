"""Synthetic images with ground truth: filled shapes of ``K = 4`` classes (circle, square,
triangle, cross) pasted at random positions, scales and colours onto crops of real textures and
photos (scikit-image, scikit-learn samples). Only the shape tells the class (colours are drawn
independently of it), and the pasted pixels are returned as the ground truth: per-class masks,
their union and boxes. With ``objects="photos"``, the small real-photo task: the photo suites'
six real objects (:data:`PHOTO_OBJECTS`) pasted as small squares on crops of real textures
instead. Needs the ``bench`` extra for the backgrounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from captum_masks.bench import zoo
from captum_masks.bench.objects import OBJECTS

SHAPES = ("circle", "square", "triangle", "cross")
BACKGROUNDS = ("brick", "grass", "gravel", "camera", "china", "flower")
IMAGE_SIZE = 64
#: the classes of the real-photo task: the photo suites' objects (cat, coffee, tripod, ...)
PHOTO_OBJECTS = tuple(OBJECTS)
#: the classes of each kind of object ``make_synthetic`` pastes
TASK_CLASSES = {"shapes": SHAPES, "photos": PHOTO_OBJECTS}
#: an object's half-side as a share of the image side: shapes, and photo squares (19 to 29 px
#: at 64 px, where the photo suites' objects are 80 to 144 px of 224)
RADII = {"shapes": (0.11, 0.19), "photos": (0.15, 0.22)}


@dataclass
class SyntheticBatch:
    """Images and their ground truth.

    Attributes:
        images (Tensor): (N, 3, S, S) in [0, 1].
        labels (Tensor): (N,) class indices (single-label) or (N, K) multi-hot (multi-label).
        class_masks (Tensor): (N, K, S, S) with 1 where an object of that class was pasted.
        masks (Tensor): (N, 1, S, S), the union of all objects.
        boxes (list of Tensor): per image, (num_objects, 4) boxes (top, left, bottom, right).
        box_classes (list of Tensor): per image, the class of each box.
    """

    images: Tensor
    labels: Tensor
    class_masks: Tensor
    masks: Tensor
    boxes: list
    box_classes: list

    def __len__(self) -> int:
        return self.images.shape[0]


def shape_mask(kind: str, size: int, centre: tuple[float, float], radius: float) -> Tensor:
    """A boolean (size, size) mask of a filled shape at ``centre``, of half-size ``radius``."""
    rows = torch.arange(size, dtype=torch.float32).view(-1, 1) - centre[0]
    cols = torch.arange(size, dtype=torch.float32).view(1, -1) - centre[1]
    if kind == "circle":
        return rows**2 + cols**2 <= radius**2
    if kind == "square":
        half = 0.85 * radius
        return (rows.abs() <= half) & (cols.abs() <= half)
    if kind == "triangle":
        depth = rows + radius  # 0 at the apex, 2·radius at the base
        return (depth >= 0) & (depth <= 2 * radius) & (cols.abs() <= depth / 2)
    if kind == "cross":
        arm = radius / 3
        return ((rows.abs() <= arm) & (cols.abs() <= radius)) | (
            (cols.abs() <= arm) & (rows.abs() <= radius)
        )
    raise ValueError(f"kind must be one of {SHAPES}, got {kind!r}")


_BACKGROUND_CACHE: dict = {}
_OBJECT_CACHE: dict = {}


def _sample(name: str) -> Tensor:
    return torch.from_numpy(np.array(zoo.sample_image(name))).permute(2, 0, 1).float() / 255.0


def _backgrounds(names: tuple[str, ...]) -> list:
    for name in names:
        if name not in _BACKGROUND_CACHE:
            # halve the resolution so a 64 px crop shows texture, not a blur of one region
            _BACKGROUND_CACHE[name] = F.avg_pool2d(_sample(name).unsqueeze(0), 2)[0]
    return [_BACKGROUND_CACHE[name] for name in names]


def _object_crop(name: str) -> Tensor:
    """The photo object's crop, (3, h, w) in [0, 1], at most 96 px on a side."""
    if name not in _OBJECT_CACHE:
        photo = OBJECTS[name]
        crop = _sample(photo.image)[:, photo.rows, photo.columns]
        scale = 96 / max(crop.shape[1:])
        side = [max(1, round(length * scale)) for length in crop.shape[1:]]
        _OBJECT_CACHE[name] = F.interpolate(
            crop.unsqueeze(0), size=side, mode="bilinear", antialias=True, align_corners=False
        )[0].clamp(0.0, 1.0)
    return _OBJECT_CACHE[name]


def _paint_shape(kind: int, size: int, centre, radius: float, rng) -> tuple[Tensor, Tensor]:
    """A filled shape of class ``kind`` in one random colour: (mask, pixels)."""
    mask = shape_mask(SHAPES[kind], size, (float(centre[0]), float(centre[1])), radius)
    return mask, _random_colour(rng)


def _paint_photo(kind: int, size: int, centre, radius: float, rng) -> tuple[Tensor, Tensor]:
    """The photo object of class ``kind`` resized into the square of half-side ``radius``,
    mirrored at random: (mask, pixels)."""
    mask = shape_mask("square", size, (float(centre[0]), float(centre[1])), radius / 0.85)
    inside = torch.nonzero(mask)
    top, left = inside.min(dim=0).values.tolist()
    bottom, right = (inside.max(dim=0).values + 1).tolist()
    crop = _object_crop(PHOTO_OBJECTS[kind])
    if rng.uniform() < 0.5:
        crop = crop.flip(-1)
    resized = F.interpolate(
        crop.unsqueeze(0),
        size=(bottom - top, right - left),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )[0]
    pixels = torch.zeros(3, size, size)
    pixels[:, top:bottom, left:right] = resized.clamp(0.0, 1.0)
    return mask, pixels


def _random_colour(rng: np.random.Generator) -> Tensor:
    hue, saturation, value = rng.uniform(0, 1), rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0)
    sector = int(hue * 6) % 6
    fraction = hue * 6 - int(hue * 6)
    p, q, t = (
        value * (1 - saturation),
        value * (1 - fraction * saturation),
        value * (1 - (1 - fraction) * saturation),
    )
    rgb = [
        (value, t, p),
        (q, value, p),
        (p, value, t),
        (p, q, value),
        (t, p, value),
        (value, p, q),
    ][sector]
    return torch.tensor(rgb).view(3, 1, 1)


def make_synthetic(
    n: int,
    seed: int = 0,
    multilabel: bool = False,
    with_objects: bool = True,
    size: int = IMAGE_SIZE,
    objects: str = "shapes",
    backgrounds: tuple[str, ...] = BACKGROUNDS,
) -> SyntheticBatch:
    """Generate ``n`` images deterministically from ``seed``.

    Args:
        n (int): number of images.
        seed (int): the same seed gives the same backgrounds, objects and labels.
        multilabel (bool): two objects of two different classes per image (labels multi-hot)
            instead of one object.
        with_objects (bool): False returns the same backgrounds with nothing pasted (the labels
            and ground truth still describe the objects that would have been there), to check
            that a model relies on the objects.
        size (int): image side in pixels.
        objects (str): ``"shapes"`` (the :data:`SHAPES`, in random colours) or ``"photos"``
            (the real :data:`PHOTO_OBJECTS`, pasted as squares).
        backgrounds (tuple of str): the sample images the backgrounds are cropped from
            (:func:`~captum_masks.bench.zoo.sample_image` names).

    Returns:
        :class:`SyntheticBatch`.

    Examples::

        >>> batch = make_synthetic(8, seed=1, multilabel=True)
        >>> batch.images.shape, batch.class_masks.shape
        (torch.Size([8, 3, 64, 64]), torch.Size([8, 4, 64, 64]))
        >>> photos = make_synthetic(8, objects="photos", backgrounds=("hubble", "tissue"))
    """
    if objects not in TASK_CLASSES:
        raise ValueError(f"objects must be one of {sorted(TASK_CLASSES)}, got {objects!r}")
    rng = np.random.default_rng(seed)
    sources = _backgrounds(tuple(backgrounds))
    paint = _paint_shape if objects == "shapes" else _paint_photo
    smallest, largest = RADII[objects]
    num_classes = len(TASK_CLASSES[objects])
    images = torch.empty(n, 3, size, size)
    class_masks = torch.zeros(n, num_classes, size, size)
    labels = torch.zeros(n, num_classes) if multilabel else torch.zeros(n, dtype=torch.long)
    boxes, box_classes = [], []
    for index in range(n):
        source = sources[rng.integers(len(sources))]
        top = rng.integers(0, source.shape[1] - size + 1)
        left = rng.integers(0, source.shape[2] - size + 1)
        image = source[:, top : top + size, left : left + size].clone()
        if rng.uniform() < 0.5:
            image = image.flip(-1)
        if objects == "photos":
            # five textures per split: vary their colour, contrast and brightness, so that a
            # small CNN learns the objects rather than the textures it was shown
            tint = torch.from_numpy(rng.uniform(0.5, 1.5, size=(3, 1, 1))).float()
            contrast, brightness = rng.uniform(0.5, 1.5), rng.uniform(-0.25, 0.25)
            mean = image.mean()
            image = ((image * tint - mean) * contrast + mean + brightness).clamp(0.0, 1.0)
        classes = rng.choice(num_classes, size=2 if multilabel else 1, replace=False).tolist()
        placed: list = []
        for kind in classes:
            for _ in range(100):
                radius = rng.uniform(smallest, largest) * size
                centre = rng.uniform(radius + 1, size - radius - 1, size=2)
                box = (
                    int(np.floor(centre[0] - radius)),
                    int(np.floor(centre[1] - radius)),
                    int(np.ceil(centre[0] + radius)) + 1,
                    int(np.ceil(centre[1] + radius)) + 1,
                )
                if all(_apart(box, other) for other in placed):
                    break
            mask, pixels = paint(kind, size, centre, radius, rng)
            if with_objects:
                image = torch.where(mask, pixels, image)
            class_masks[index, kind] = mask.float()
            tight = torch.nonzero(mask)
            placed.append(
                (
                    int(tight[:, 0].min()),
                    int(tight[:, 1].min()),
                    int(tight[:, 0].max()) + 1,
                    int(tight[:, 1].max()) + 1,
                )
            )
        images[index] = image
        if multilabel:
            labels[index, classes] = 1.0
        else:
            labels[index] = classes[0]
        boxes.append(torch.tensor(placed))
        box_classes.append(torch.tensor(classes))
    masks = class_masks.amax(dim=1, keepdim=True)
    return SyntheticBatch(images, labels, class_masks, masks, boxes, box_classes)


def _apart(box: tuple, other: tuple, margin: int = 2) -> bool:
    return (
        box[2] + margin <= other[0]
        or other[2] + margin <= box[0]
        or box[3] + margin <= other[1]
        or other[3] + margin <= box[1]
    )


__all__ = [
    "BACKGROUNDS",
    "IMAGE_SIZE",
    "PHOTO_OBJECTS",
    "SHAPES",
    "TASK_CLASSES",
    "SyntheticBatch",
    "make_synthetic",
    "shape_mask",
]
