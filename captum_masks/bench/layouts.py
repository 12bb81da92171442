"""Photo composites for the benchmark's photo suites: real objects pasted on real textures at
varied scales and positions, split into a calibration and a held-out set of backgrounds.

Settings are chosen on the ``"calibration"`` split; the docs report the ``"held-out"`` split,
whose backgrounds are never seen while choosing them. A layout is kept only when
EfficientNet-Lite0 recognises each of its objects pasted alone at the same place (its top class
is one of the object's :attr:`~captum_masks.bench.zoo.PhotoObject.classes`), so that every
explanation is of a class the object really carries; a pair is kept only when, in the composite
itself, each object's class is also among the model's :data:`COMPOSITE_TOP_K` classes, so that no
row asks for the evidence of a class the model does not see in the image it explains.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from captum_masks.bench import zoo

SPLITS = ("calibration", "held-out")
#: the textures behind the objects in each split; no held-out texture is used to choose settings
BACKGROUNDS = {
    "calibration": ("brick", "grass", "gravel", "moon", "coins"),
    "held-out": ("hubble", "tissue", "text", "page", "retina"),
}
#: sides of the pasted squares on the 224 px image (pairs: at most half of it)
SINGLE_SIZES = (80, 96, 112, 128, 144)
PAIR_SIZES = (80, 96, 112)
#: draws allowed per kept layout before the split is declared unable to give ``n`` of them
MAX_DRAWS_PER_LAYOUT = 50
#: a pair's classes must rank this high in the composite: next to a dominant object, the other
#: one's class can fall to p ~ 0.01, where neither keeping nor deleting it moves the model
COMPOSITE_TOP_K = 5


@dataclass
class Layout:
    """One composite: ``image`` (1, 3, S, S) in [0, 1], ``masks`` (1, k, S, S) with channel j on
    object j, the ``objects`` pasted, the ``targets`` (predicted class of each object pasted
    alone), the ``background`` and the objects' side ``size``."""

    image: Tensor
    masks: Tensor
    objects: tuple[str, ...]
    targets: tuple[int, ...]
    background: str
    size: int

    def describe(self, explained: int = 0) -> str:
        """Such as ``"cat next to coffee on moon, 96 px"`` for the object ``explained``."""
        others = [obj for k, obj in enumerate(self.objects) if k != explained]
        beside = "".join(f" next to {obj}" for obj in others)
        return f"{self.objects[explained]}{beside} on {self.background}, {self.size} px"


def check_split(split: str) -> None:
    """Raise a ValueError naming ``split`` unless it is one of :data:`SPLITS`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def recognised_layouts(
    model: nn.Module,
    n: int,
    objects_per_image: int,
    split: str = "held-out",
    seed: int = 0,
    objects: tuple[str, ...] | None = None,
    image_size: int = zoo.INPUT_SIZE,
) -> list[Layout]:
    """``n`` composites of the ``split`` whose objects ``model`` recognises, fixed by ``seed``.

    Each draw picks a background of the split, distinct objects (``objects`` if given), a size
    and positions; it is kept when every object, pasted alone at its place on the same
    background, is recognised, and its class is among the model's :data:`COMPOSITE_TOP_K`
    classes for the composite. The first ``m`` layouts of ``n > m`` are those of ``m``.

    Args:
        model (nn.Module): EfficientNet-Lite0
            (:func:`~captum_masks.bench.zoo.load_efficientnet_lite0`).
        n (int): number of composites.
        objects_per_image (int): 1 (:func:`~captum_masks.bench.zoo.paste_composite`) or 2
            (:func:`~captum_masks.bench.zoo.paste_pair`).
        split (str): ``"calibration"`` or ``"held-out"``.
        seed (int): the same seed gives the same composites.
        objects (tuple of str, optional): always paste these keys of
            :data:`~captum_masks.bench.zoo.NAMED_OBJECTS`; drawn per composite from
            :data:`~captum_masks.bench.zoo.OBJECTS` by default.
        image_size (int): the composites' side (the model's input side); the objects' sides
            are :data:`SINGLE_SIZES` or :data:`PAIR_SIZES` scaled from 224 px to it.

    Returns:
        list of :class:`Layout`.

    Examples::

        >>> pairs = recognised_layouts(zoo.load_efficientnet_lite0(), 4, 2, "calibration")
    """
    check_split(split)
    if objects is not None and len(objects) != objects_per_image:
        raise ValueError(f"objects must name {objects_per_image} objects, got {objects!r}")
    rng = np.random.default_rng([SPLITS.index(split), objects_per_image, seed])
    names, categories = list(zoo.OBJECTS), zoo.imagenet_categories()
    layouts: list[Layout] = []
    for _draw in range(MAX_DRAWS_PER_LAYOUT * n):
        chosen = objects or tuple(map(str, rng.choice(names, objects_per_image, replace=False)))
        layout = _draw_layout(model, rng, chosen, BACKGROUNDS[split], categories, image_size)
        if layout is not None:
            layouts.append(layout)
            if len(layouts) == n:
                return layouts
    raise RuntimeError(
        f"only {len(layouts)} of {n} composites of the {split!r} split had every object "
        f"recognised in {MAX_DRAWS_PER_LAYOUT * n} draws"
    )


def _draw_layout(
    model: nn.Module,
    rng: np.random.Generator,
    objects: tuple[str, ...],
    backgrounds: tuple,
    categories: list,
    image_size: int,
) -> Layout | None:
    """One drawn composite, or None when the model misses one of its objects."""
    background = str(rng.choice(backgrounds))
    paste_seed = int(rng.integers(2**31))
    scale = image_size / zoo.INPUT_SIZE
    if len(objects) == 1:
        size = round(int(rng.choice(SINGLE_SIZES)) * scale)
        single = zoo.paste_composite(objects[0], background, size, image_size, seed=paste_seed)
        image, masks, alone = single.image, single.mask, single.image
    else:
        size = round(int(rng.choice(PAIR_SIZES)) * scale)
        first, second = objects
        pair = zoo.paste_pair(
            first, second, background, object_size=size, size=image_size, seed=paste_seed
        )
        image, masks = pair.image, pair.masks
        alone = torch.cat(
            [
                zoo.paste_composite(obj, background, size, image_size, position=box[:2]).image
                for obj, box in zip(objects, pair.boxes)
            ]
        )
    with torch.no_grad():
        logits = model(zoo.normalize(torch.cat([alone, image])))
    targets = logits[:-1].argmax(dim=1).tolist()
    if not all(categories[t] in zoo.NAMED_OBJECTS[o].classes for o, t in zip(objects, targets)):
        return None
    seen = set(logits[-1].topk(COMPOSITE_TOP_K).indices.tolist())
    if not seen.issuperset(targets):
        return None
    return Layout(image, masks, tuple(objects), tuple(targets), background, size)


__all__ = [
    "BACKGROUNDS",
    "COMPOSITE_TOP_K",
    "PAIR_SIZES",
    "SINGLE_SIZES",
    "SPLITS",
    "Layout",
    "check_split",
    "recognised_layouts",
]
