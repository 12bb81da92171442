"""Synthetic images with ground truth: filled shapes of ``K = 4`` classes (circle, square,
triangle, cross) pasted at random positions, scales and colours onto crops of real textures and
photos (scikit-image, scikit-learn samples). Only the shape tells the class (colours are drawn
independently of it), and the pasted pixels are returned as the ground truth: per-class masks,
their union and boxes. Needs the ``bench`` extra for the backgrounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from captum_masks.bench import zoo


SHAPES = ("circle", "square", "triangle", "cross")
BACKGROUNDS = ("brick", "grass", "gravel", "camera", "china", "flower")
IMAGE_SIZE = 64


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
    """A boolean (size, size) mask of a filled shape centred at ``centre`` with half-size ``radius``."""
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


def _backgrounds() -> list:
    if not _BACKGROUND_CACHE:
        for name in BACKGROUNDS:
            array = zoo.sample_image(name)
            tensor = torch.from_numpy(np.array(array)).permute(2, 0, 1).float() / 255.0
            # halve the resolution so a 64 px crop shows texture, not a blur of one region
            _BACKGROUND_CACHE[name] = F.avg_pool2d(tensor.unsqueeze(0), 2)[0]
    return list(_BACKGROUND_CACHE.values())


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

    Returns:
        :class:`SyntheticBatch`.

    Examples::

        >>> batch = make_synthetic(8, seed=1, multilabel=True)
        >>> batch.images.shape, batch.class_masks.shape
        (torch.Size([8, 3, 64, 64]), torch.Size([8, 4, 64, 64]))
    """
    rng = np.random.default_rng(seed)
    backgrounds = _backgrounds()
    num_classes = len(SHAPES)
    images = torch.empty(n, 3, size, size)
    class_masks = torch.zeros(n, num_classes, size, size)
    labels = torch.zeros(n, num_classes) if multilabel else torch.zeros(n, dtype=torch.long)
    boxes, box_classes = [], []
    for index in range(n):
        source = backgrounds[rng.integers(len(backgrounds))]
        top = rng.integers(0, source.shape[1] - size + 1)
        left = rng.integers(0, source.shape[2] - size + 1)
        image = source[:, top : top + size, left : left + size].clone()
        if rng.uniform() < 0.5:
            image = image.flip(-1)
        classes = rng.choice(num_classes, size=2 if multilabel else 1, replace=False).tolist()
        placed: list = []
        for kind in classes:
            for _ in range(100):
                radius = rng.uniform(0.11, 0.19) * size
                centre = rng.uniform(radius + 1, size - radius - 1, size=2)
                box = (
                    int(np.floor(centre[0] - radius)),
                    int(np.floor(centre[1] - radius)),
                    int(np.ceil(centre[0] + radius)) + 1,
                    int(np.ceil(centre[1] + radius)) + 1,
                )
                if all(_apart(box, other) for other in placed):
                    break
            mask = shape_mask(SHAPES[kind], size, (float(centre[0]), float(centre[1])), radius)
            colour = _random_colour(rng)
            if with_objects:
                image = torch.where(mask, colour, image)
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


__all__ = ["BACKGROUNDS", "IMAGE_SIZE", "SHAPES", "SyntheticBatch", "make_synthetic", "shape_mask"]
