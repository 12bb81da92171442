"""The real objects the photo suites paste: a crop of an offline sample photo each, and the
ImageNet classes that name it; and objects no suite draws, kept for choosing two-object
settings on objects nobody has tuned on."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PhotoObject:
    """An object to paste: a crop (``rows``, ``columns``) of the sample photo ``image``, and the
    ImageNet ``classes`` that name it (EfficientNet-Lite0 recognises it when its top class is
    one of them)."""

    image: str
    rows: slice
    columns: slice
    classes: frozenset


#: the objects EfficientNet-Lite0 recognises when pasted at a quarter to a half of the image side
#: (the astronaut, the rocket and the flower are not recognised at that size)
OBJECTS: dict[str, PhotoObject] = {
    "cat": PhotoObject(
        "cat", slice(0, 300), slice(60, 400), frozenset({"tabby", "tiger cat", "Egyptian cat"})
    ),
    "coffee": PhotoObject(
        "coffee", slice(20, 380), slice(180, 560), frozenset({"espresso", "coffee mug", "cup"})
    ),
    "tripod": PhotoObject("camera", slice(40, 512), slice(160, 440), frozenset({"tripod"})),
    "motorcycle": PhotoObject(
        "motorcycle",
        slice(150, 500),
        slice(100, 741),
        frozenset({"moped", "motor scooter", "crash helmet", "disk brake"}),
    ),
    "officer": PhotoObject(
        "grace_hopper",
        slice(40, 600),
        slice(0, 512),
        frozenset({"mortarboard", "military uniform", "academic gown"}),
    ),
    "palace": PhotoObject(
        "china",
        slice(0, 427),
        slice(0, 400),
        frozenset({"palace", "bell cote", "castle", "stupa", "monastery"}),
    ),
}

#: objects the suites never draw, named with ``objects=`` (``--objects``) to calibrate two-object
#: settings: EfficientNet-Lite0 gives them weak, unrelated classes (the rocket is a matchstick or
#: a candle, the colour wheel a croquet ball), the hard case for a map of one of two objects
PAIR_CALIBRATION_OBJECTS: dict[str, PhotoObject] = {
    "rocket": PhotoObject(
        "rocket",
        slice(0, 427),
        slice(220, 420),
        frozenset(
            {"matchstick", "solar dish", "beacon", "missile", "space shuttle", "projectile"}
        ),
    ),
    "colorwheel": PhotoObject(
        "colorwheel",
        slice(0, 370),
        slice(0, 371),
        frozenset({"croquet ball", "ping-pong ball", "tennis ball", "Granny Smith"}),
    ),
}
#: every object a layout can name
NAMED_OBJECTS: dict[str, PhotoObject] = OBJECTS | PAIR_CALIBRATION_OBJECTS


__all__ = ["NAMED_OBJECTS", "OBJECTS", "PAIR_CALIBRATION_OBJECTS", "PhotoObject"]
