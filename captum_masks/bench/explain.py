"""``python -m captum_masks explain``: :func:`captum_masks.explain_dataset` from the command line,
on one process or under ``torchrun``, with a method by name, a model and a dataset."""

from __future__ import annotations

import contextlib
import importlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from captum_masks import (
    RISE,
    ExtremalPerturbation,
    GuidedFeatureInversion,
    LayerMeaningfulPerturbation,
    LayerNeuroMask,
    MeaningfulPerturbation,
    NeuroMaskAttr,
    explain_dataset,
)
from captum_masks._engine.distributed import rank_and_world_size
from captum_masks.bench.runners import method_arguments

#: this package's methods that ``explain`` builds from a model (and a layer for the Layer ones)
OUR_EXPLAIN_METHODS = {
    cls.__name__: cls
    for cls in (
        MeaningfulPerturbation,
        NeuroMaskAttr,
        ExtremalPerturbation,
        RISE,
        GuidedFeatureInversion,
        LayerMeaningfulPerturbation,
        LayerNeuroMask,
    )
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
ZOO_MODEL = "efficientnet_lite0"


class ImageFolder(torch.utils.data.Dataset):
    """The images of a folder (and its subfolders), in path order, each read and preprocessed
    for the zoo's ImageNet models only when it is asked for.

    Args:
        root (str or path): the folder.
        size (int): the side of the centre crop (:func:`captum_masks.bench.zoo.preprocess`).
    """

    def __init__(self, root: str | os.PathLike, size: int = 224) -> None:
        self.paths = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise ValueError(
                f"data folder {str(root)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})"
            )
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tensor:
        from captum_masks.bench.zoo import preprocess, sample_image

        return preprocess(sample_image(self.paths[index]), self.size)[0]


def load_object(reference: str, what: str) -> Any:
    """``module:function`` imported and called with no arguments (a model or a dataset)."""
    module_name, separator, function_name = reference.partition(":")
    if not separator or not module_name or not function_name:
        raise ValueError(f"{what} must be 'module:function', got {reference!r}")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"{what} {reference!r} cannot be imported: {error}") from error
    return function()


def build_model(reference: str) -> nn.Module:
    """The zoo's EfficientNet-Lite0 (``efficientnet_lite0``) or a user's ``module:function``."""
    if reference == ZOO_MODEL:
        from captum_masks.bench.zoo import load_efficientnet_lite0

        return load_efficientnet_lite0()
    model = load_object(reference, "model")
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"model {reference!r} returned a {type(model).__name__}, not an nn.Module"
        )
    return model.eval()


def build_data(reference: str) -> Any:
    """A folder of images, or a dataset from ``module:function``."""
    if Path(reference).is_dir():
        return ImageFolder(reference)
    return load_object(reference, "data")


def build_method(name: str, model: nn.Module, layer: str | None) -> Any:
    """One of :data:`OUR_EXPLAIN_METHODS` or any of ``captum.attr``'s attributions by name, on
    ``model`` (and its submodule ``layer`` for layer methods)."""
    import captum.attr

    cls = OUR_EXPLAIN_METHODS.get(name) or getattr(captum.attr, name, None)
    if not (isinstance(cls, type) and issubclass(cls, captum.attr.Attribution)):
        raise ValueError(
            f"method must be one of {', '.join(OUR_EXPLAIN_METHODS)} or a captum.attr "
            f"attribution such as Occlusion, got {name!r}"
        )
    if layer is None:
        return cls(model)
    try:
        return cls(model, model.get_submodule(layer))
    except AttributeError as error:
        raise ValueError(f"layer {layer!r} is not a submodule of the model: {error}") from error


def run_explain(
    method: str,
    data: str,
    out: str,
    model: str = ZOO_MODEL,
    layer: str | None = None,
    settings: dict | None = None,
    first: int | None = None,
    **options: Any,
) -> str:
    """Explain the dataset under the current process group (if any) and return rank 0's
    report (empty on the other ranks).

    Args:
        method (str): a name for :func:`build_method`.
        data (str): a folder or ``module:function`` (:func:`build_data`).
        out (str): the results' folder.
        model (str): ``efficientnet_lite0`` or ``module:function``.
        layer (str, optional): the layer of a layer method, by its name in the model.
        settings (dict, optional): the method's ``attribute`` arguments, dotted names included
            (``{"optimization.n_iter": 150}``, see
            :func:`~captum_masks.bench.runners.method_arguments`).
        first (int, optional): explain only the dataset's first ``first`` examples.
        **options: the other arguments of :func:`captum_masks.explain_dataset`.

    Returns:
        str: what was explained, how fast, and the scores table where there are masks.
    """
    network = build_model(model)
    rank, world_size = rank_and_world_size()
    # under torchrun on GPUs, the rank's own GPU; else explain_dataset's default, the model's
    device = _rank_gpu()
    if device is not None:
        network.to(device)
    attribution = build_method(method, network, layer)
    dataset = build_data(data)
    if first is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(first, len(dataset))))
    start = time.perf_counter()
    results = explain_dataset(
        attribution,
        dataset,
        out,
        attribute_kwargs=method_arguments(type(attribution), settings or {}),
        device=device,
        **options,
    )
    seconds = time.perf_counter() - start
    if rank != 0:
        return ""
    explained = len(results)
    stored = results.bytes_per_example()
    lines = [
        f"{explained} of {len(dataset)} examples in {out} ({method}, {world_size} "
        f"process{'es' if world_size > 1 else ''}; this run {seconds:.1f} s)",
        f"stored per example: attributions {stored['attributions'] / 1024:.1f} KiB, "
        f"files {stored['files'] / 1024:.1f} KiB",
    ]
    if results.scores():
        lines += ["", results.table()]
    return "\n".join(lines)


def _rank_gpu() -> torch.device | None:
    """Under ``torchrun`` on GPUs, the rank's own GPU (``LOCAL_RANK``); else None."""
    if torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return None


@contextlib.contextmanager
def process_group_from_environment() -> Iterator[int]:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1), join the process group (NCCL on GPUs, else gloo)
    for the ``with`` block and leave it after; yields this process's rank (0 outside)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or torch.distributed.is_initialized():
        yield rank_and_world_size()[0]
        return
    torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        yield torch.distributed.get_rank()
    finally:
        torch.distributed.destroy_process_group()


__all__ = [
    "IMAGE_SUFFIXES",
    "ImageFolder",
    "OUR_EXPLAIN_METHODS",
    "build_data",
    "build_method",
    "build_model",
    "load_object",
    "process_group_from_environment",
    "run_explain",
]
