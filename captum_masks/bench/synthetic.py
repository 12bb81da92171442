"""A ground-truth benchmark: shapes pasted onto real backgrounds
(:mod:`captum_masks.bench.shapes`),
and a CNN trained on them.

:func:`load_reference_cnn` gives a small CNN trained on it: the weights that ship with the bench
(``captum_masks/bench/weights``, trained by this module's recipe, :data:`TRAIN_SETTINGS`), or, for
other settings or with ``retrain=True``, trained here (about a minute on 2 CPU cores) and cached
on disk. Every load checks its test accuracy and that it really looks at the shapes (accuracy
falls to chance when they are removed).

Needs the ``bench`` extra for the backgrounds.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_masks._engine.files import save_atomically
from captum_masks._engine.model_state import seeded_global_rng
from captum_masks.bench import layouts
from captum_masks.bench.shapes import (
    BACKGROUNDS,
    SHAPES,
    TASK_CLASSES,
    SyntheticBatch,
    make_synthetic,
)


class ReferenceCNN(nn.Module):
    """A small VGG-style CNN for the synthetic suite: (N, 3, 64, 64) in [0, 1] → (N, K) logits.

    ``last_conv`` is its last convolution (for Grad-CAM and feature-based methods).
    """

    def __init__(self, num_classes: int = len(SHAPES), width: int = 24) -> None:
        super().__init__()

        def block(inputs: int, outputs: int) -> list:
            return [nn.Conv2d(inputs, outputs, 3, padding=1), nn.BatchNorm2d(outputs), nn.ReLU()]

        self.features = nn.Sequential(
            *block(3, width),
            nn.MaxPool2d(2),
            *block(width, 2 * width),
            nn.MaxPool2d(2),
            *block(2 * width, 4 * width),
            nn.MaxPool2d(2),
            *block(4 * width, 4 * width),
        )
        self.last_conv = self.features[-3]
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).amax(dim=(2, 3)))


@dataclass
class ReferenceModel:
    """The trained reference CNN and what was measured about it."""

    model: ReferenceCNN
    multilabel: bool
    test_accuracy: float
    accuracy_without_objects: float
    train_seconds: float


#: the trained reference CNNs that ship with the package, named by their training settings
SHIPPED_WEIGHTS = Path(__file__).parent / "weights"


def cache_dir() -> Path:
    """Where trained reference models are kept: ``$CAPTUM_MASKS_CACHE``, else
    ~/.cache/captum_masks."""
    root = os.environ.get("CAPTUM_MASKS_CACHE") or Path.home() / ".cache" / "captum_masks"
    return Path(root)


TRAIN_SETTINGS = {"train_size": 6000, "epochs": 6, "batch_size": 64, "lr": 3e-3, "seed": 0}


def task_images(
    objects: str,
    n: int,
    seed: int,
    multilabel: bool = False,
    split: str = "calibration",
    with_objects: bool = True,
) -> SyntheticBatch:
    """``n`` images of a task: the shapes on their six backgrounds (their splits are ranges of
    seeds), or the photo objects on the photo suites' textures of ``split`` (the reference CNN
    and the explainer train on the calibration textures; the held-out ones are only scored).

    Examples::

        >>> train = task_images("photos", 2000, seed=1)                    # calibration textures
        >>> scored = task_images("photos", 100, seed=60_000, split="held-out")
    """
    layouts.check_split(split)
    backgrounds = BACKGROUNDS if objects == "shapes" else layouts.BACKGROUNDS[split]
    return make_synthetic(
        n,
        seed=seed,
        multilabel=multilabel,
        with_objects=with_objects,
        objects=objects,
        backgrounds=backgrounds,
    )


def _accuracy(model: nn.Module, batch: SyntheticBatch, multilabel: bool) -> float:
    with torch.no_grad():
        logits = torch.cat([model(chunk) for chunk in batch.images.split(256)])
    if multilabel:
        top2 = logits.topk(2, dim=1).indices
        predicted = torch.zeros_like(batch.labels).scatter_(1, top2, 1.0)
        return float((predicted == batch.labels).all(dim=1).float().mean())
    return float((logits.argmax(1) == batch.labels).float().mean())


#: (accuracy, accuracy without the objects) by weights file (path, mtime, size), measured once
_MEASURED: dict[tuple[Path, int, int], tuple[float, float]] = {}


def load_reference_cnn(
    multilabel: bool = False, retrain: bool = False, verbose: bool = True, objects: str = "shapes"
) -> ReferenceModel:
    """The reference CNN for the synthetic suite: the shipped weights for :data:`TRAIN_SETTINGS`,
    else the cached ones, else trained here and cached on disk.

    Training is seeded (data and initialisation) and leaves the global RNG state unchanged; the
    shipped weights are its result on 2 CPU cores (``retrain=True`` writes a fresh copy to
    :func:`cache_dir`, to replace them after a change of recipe).
    The model is returned in eval mode, a fresh module at every call. Accuracy on 1000 held-out
    images and on the same images without their objects (multi-label: both classes right) is
    measured on the first load of a weights file in a process, and again whenever it changes.

    Args:
        multilabel (bool): train on two-object images with a multi-label (BCE) head.
        retrain (bool): ignore the cache.
        verbose (bool): print progress and the measurements.
        objects (str): the task (:func:`task_images`): ``"shapes"`` (shipped weights) or
            ``"photos"`` (trained on first use on the calibration textures; its accuracy is
            measured on the held-out ones).

    Returns:
        :class:`ReferenceModel`.
    """
    settings: dict[str, Any] = dict(TRAIN_SETTINGS, multilabel=multilabel)
    if objects != "shapes":  # the shapes' key names the shipped weights
        settings["objects"] = objects
    label = f"{'multi' if multilabel else 'single'}{'' if objects == 'shapes' else '_' + objects}"
    name = f"reference_cnn_{label}_{_key(settings)}.pt"
    path = cache_dir() / name
    with torch.random.fork_rng(devices=[]):  # construction draws initial weights
        model = ReferenceCNN(len(TASK_CLASSES[objects]))
    train_seconds = 0.0
    stored = [p for p in (SHIPPED_WEIGHTS / name, path) if p.is_file()]
    if stored and not retrain:
        path = stored[0]
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    else:
        start = time.perf_counter()
        _train(model, settings, verbose)
        train_seconds = time.perf_counter() - start
        path.parent.mkdir(parents=True, exist_ok=True)
        save_atomically(model.state_dict(), path)
    model.eval()
    stat = path.stat()
    file_version = (path, stat.st_mtime_ns, stat.st_size)
    if file_version not in _MEASURED:
        split = "calibration" if objects == "shapes" else "held-out"
        test = task_images(objects, 1000, 10_000, multilabel, split)
        empty = task_images(objects, 1000, 10_000, multilabel, split, with_objects=False)
        _MEASURED[file_version] = (
            _accuracy(model, test, multilabel),
            _accuracy(model, empty, multilabel),
        )
    result = ReferenceModel(model, multilabel, *_MEASURED[file_version], train_seconds)
    if verbose:
        print(
            f"reference CNN ({'multi' if multilabel else 'single'}-label, {objects}): test "
            f"accuracy {result.test_accuracy:.3f}, "
            f"without the objects {result.accuracy_without_objects:.3f}"
            + (f", trained in {train_seconds:.0f} s" if train_seconds else f" (from {path})")
        )
    return result


def _key(settings: dict) -> str:
    """A short name for a set of training settings: a cached model is reused only for the
    same ones."""
    return hashlib.sha1(repr(sorted(settings.items())).encode()).hexdigest()[:10]


def _train(model: nn.Module, settings: dict, verbose: bool) -> None:
    multilabel = settings["multilabel"]
    data = task_images(
        settings.get("objects", "shapes"), settings["train_size"], settings["seed"], multilabel
    )
    with seeded_global_rng(settings["seed"]):
        for module in model.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
        optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=1e-4)
        steps = settings["epochs"] * (len(data) // settings["batch_size"])
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, settings["lr"], total_steps=steps
        )
        model.train()
        for epoch in range(settings["epochs"]):
            order = torch.randperm(len(data))
            for start in range(0, len(data) - settings["batch_size"] + 1, settings["batch_size"]):
                index = order[start : start + settings["batch_size"]]
                images = data.images[index]
                if torch.rand(()) < 0.5:
                    images = images.flip(-1)  # the shapes are symmetric, the photos any way round
                logits = model(images)
                labels = data.labels[index]
                loss = (
                    F.binary_cross_entropy_with_logits(logits, labels)
                    if multilabel
                    else F.cross_entropy(logits, labels)
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
            if verbose:
                print(f"  epoch {epoch + 1}/{settings['epochs']}: loss {loss.item():.3f}")
        model.eval()


#: how :func:`load_synthetic_explainer` trains: the input alone, as Stalder et al.'s explainer
#: sees it, for 20 epochs (see the docs' AmortizedExplainer page, which also measures the
#: defaults: ``feature_layer="auto"``, ``lr=4e-3``)
EXPLAINER_SETTINGS = {
    "train_size": 2000,
    "val_size": 200,
    "batch_size": 32,
    "epochs": 20,
    "lr": 2e-3,
    "feature_layer": None,  # AmortizedExplainer's argument; the rest go to fit
    "seed": 0,
}


def explainer_data(
    train_size: int, val_size: int, batch_size: int, multilabel: bool, objects: str = "shapes"
) -> tuple[list, list]:
    """The data an :class:`~captum_masks.AmortizedExplainer` for a reference CNN trains on:
    ``(images, labels)`` batches of the task's generator (:func:`task_images`, calibration
    textures) at seed 1, and one validation batch at seed 2 (the evaluation suites use other
    seeds, and the photo task the held-out textures).

    Returns:
        (train_batches, val_batches), lists that ``fit`` can iterate once per epoch.

    Examples::

        >>> train, val = explainer_data(2000, 200, 32, multilabel=True)
        >>> explainer.fit(train, val)
    """
    train = task_images(objects, train_size, 1, multilabel)
    val = task_images(objects, val_size, 2, multilabel)
    batches = [
        (train.images[i : i + batch_size], train.labels[i : i + batch_size])
        for i in range(0, train_size, batch_size)
    ]
    return batches, [(val.images, val.labels)]


def load_synthetic_explainer(retrain: bool = False, verbose: bool = True, **overrides):
    """An :class:`~captum_masks.AmortizedExplainer` for the multi-label reference CNN, trained on
    the multi-label suite (seeds 1 and 2, apart from the evaluation seeds) at the paper's loss
    weights on first use and cached on disk next to the reference CNNs.

    Args:
        retrain (bool): ignore the cache.
        verbose (bool): print progress and the training time.
        **overrides: other values for :data:`EXPLAINER_SETTINGS` or other arguments of
            :meth:`~captum_masks.AmortizedExplainer.fit` (e.g. ``separate_classes=False``), to
            measure what a setting does; each combination is cached on its own.

    Returns:
        (explainer, history): the trained explainer, and its
        :class:`~captum_masks.FitHistory` (None when it came from the cache).

    Examples::

        >>> explainer, _ = load_synthetic_explainer()
        >>> masks = explainer.explain_all(make_synthetic(4, seed=3, multilabel=True).images)
    """
    from captum_masks.amortized import AmortizedExplainer
    from captum_masks.amortized.persistence import CHECKPOINT_VERSION

    reference = load_reference_cnn(multilabel=True, verbose=verbose)
    fit_parameters = inspect.signature(AmortizedExplainer.fit).parameters
    unknown = [k for k in overrides if k not in EXPLAINER_SETTINGS and k not in fit_parameters]
    if unknown or "train_data" in overrides or "val_data" in overrides:
        raise ValueError(
            f"overrides must be keys of EXPLAINER_SETTINGS or arguments of fit, got {unknown}"
        )
    chosen = {**EXPLAINER_SETTINGS, **overrides}
    # fit's defaults and the file format in the key: a release that changes a default loss
    # weight or the network retrains instead of loading an explainer trained otherwise
    defaults = {
        name: parameter.default
        for name, parameter in fit_parameters.items()
        if parameter.default is not inspect.Parameter.empty and name != "show_progress"
    }
    settings = dict(defaults, **chosen, reference=TRAIN_SETTINGS, format=CHECKPOINT_VERSION)
    path = cache_dir() / f"amortized_explainer_multi_{_key(settings)}.pt"
    if path.is_file() and not retrain:
        explainer = AmortizedExplainer.load(path, reference.model)
        if verbose:
            print(f"amortized explainer (cached: {path})")
        return explainer, None
    train, val = explainer_data(
        chosen.pop("train_size"), chosen.pop("val_size"), chosen.pop("batch_size"), True
    )
    explainer = AmortizedExplainer(
        reference.model,
        len(SHAPES),
        multilabel=True,
        feature_layer=chosen.pop("feature_layer"),
    )
    start = time.perf_counter()
    history = explainer.fit(
        train,
        val,
        **{"patience": None, "show_progress": verbose, **chosen},
    )
    if verbose:
        print(f"amortized explainer trained in {time.perf_counter() - start:.0f} s")
    path.parent.mkdir(parents=True, exist_ok=True)
    explainer.save(path)
    return explainer, history


__all__ = [
    "EXPLAINER_SETTINGS",
    "TASK_CLASSES",
    "ReferenceCNN",
    "ReferenceModel",
    "cache_dir",
    "explainer_data",
    "load_reference_cnn",
    "load_synthetic_explainer",
    "task_images",
]
