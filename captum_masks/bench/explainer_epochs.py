"""How fast the AmortizedExplainer learns at its defaults: train it epoch by epoch and score each
epoch's masks on a suite's rows next to IntegratedGradients
(``python -m captum_masks explainer-epochs``)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import Tensor

from captum_masks import metrics
from captum_masks.bench.benchmark import localisation_scores
from captum_masks.bench.suites import (
    Suite,
    photo_objects_suite,
    synthetic_pairs_suite,
    synthetic_suite,
)

#: the suites with a training set for the explainer (the reference CNNs' own data), and what
#: their images show (:func:`~captum_masks.bench.synthetic.task_images`)
EPOCH_SUITES = {
    "synthetic": (synthetic_suite, "shapes"),
    "synthetic-pairs": (synthetic_pairs_suite, "shapes"),
    "photo-objects": (photo_objects_suite, "photos"),
}
#: constructor arguments among the overrides; the others go to ``fit``
_CONSTRUCTOR = ("feature_layer", "width", "depth")
#: the table's columns, in order; the class-masking ones are for the explainer on pairs only
_COLUMNS = (
    "pointing",
    "relevance_mass",
    "discrimination",
    "own_mask_keeps",
    "other_mask_leaves",
    "map_mean",
)


def _row(
    suite: Suite, attributions: Tensor, method: str, epoch: int | None, seconds: float
) -> dict:
    """One row of the table: the benchmark's localisation scores, averaged over the rows."""
    scores = localisation_scores(suite, attributions)
    averaged = {name: statistics.fmean(scores[name]) for name in _COLUMNS if name in scores}
    return {"method": method, "epoch": epoch, **averaged, "seconds": seconds}


def explainer_epochs_report(
    suite: str = "synthetic-pairs",
    epochs: int = 5,
    n: int = 100,
    split: str = "held-out",
    train_size: int = 2000,
    batch_size: int = 32,
    val_size: int = 200,
    overrides: dict | None = None,
) -> list[dict]:
    """Train an :class:`~captum_masks.AmortizedExplainer` for a suite's reference CNN at its
    defaults (``patience=None``, so every epoch runs) and score the masks after each epoch.

    The explainer trains on ``train_size`` images of the reference CNN's training distribution
    (generator seed 1; validation seed 2), never on the scored images; on ``"photo-objects"``
    it trains on the calibration textures, and the held-out split scores it on textures that
    neither it nor the CNN has seen.

    Args:
        suite (str): ``"synthetic"`` (single shapes), ``"synthetic-pairs"`` (two shapes per
            image, each explained; adds the discrimination column) or ``"photo-objects"``
            (the small real-photo task: one of six photo objects per image).
        epochs (int): epochs to train and score.
        n (int): images of the suite to score (pairs give 2n rows).
        split (str): the suite's split, ``"held-out"`` or ``"calibration"``.
        train_size (int): training images.
        batch_size (int): images per training batch.
        val_size (int): validation images (seed 2), scored after every epoch as ``fit`` does.
        overrides (dict, optional): other values for the explainer's arguments
            (``feature_layer``, ``width``, ``depth``) or ``fit``'s (e.g. ``{"lr": 1e-3}``).

    Returns:
        list of dicts, one per row of the table: IntegratedGradients (``epoch`` None), then the
        explainer after each epoch (``seconds``: that epoch's training time).

    Examples::

        >>> print(format_explainer_epochs(explainer_epochs_report("synthetic", epochs=3)))
    """
    from captum.attr import IntegratedGradients

    from captum_masks.amortized import AmortizedExplainer
    from captum_masks.bench.synthetic import TASK_CLASSES, explainer_data

    if suite not in EPOCH_SUITES:
        raise ValueError(f"suite must be one of {sorted(EPOCH_SUITES)}, got {suite!r}")
    overrides = dict(overrides or {})
    reserved = sorted({"epochs", "checkpoint", "resume"} & set(overrides))
    if reserved:
        raise ValueError(f"overrides cannot set {reserved}: this report runs the epochs itself")
    constructor = {k: overrides.pop(k) for k in _CONSTRUCTOR if k in overrides}
    build, objects = EPOCH_SUITES[suite]
    data = build(n, split=split)
    multilabel = suite == "synthetic-pairs"
    start = time.perf_counter()
    integrated = IntegratedGradients(data.model).attribute(
        data.inputs, target=data.targets, internal_batch_size=256
    )
    rows = [_row(data, integrated, "IntegratedGradients", None, time.perf_counter() - start)]
    batches, val = explainer_data(train_size, val_size, batch_size, multilabel, objects)
    explainer = AmortizedExplainer(
        data.model, len(TASK_CLASSES[objects]), multilabel=multilabel, **constructor
    )
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "explainer.ckpt"
        for epoch in range(1, epochs + 1):
            # resuming from the last epoch's checkpoint trains exactly as one uninterrupted run
            start = time.perf_counter()
            explainer.fit(
                batches,
                val,
                **{"patience": None, "show_progress": False, **overrides},
                epochs=epoch,
                checkpoint=checkpoint,
                resume=True,
            )
            seconds = time.perf_counter() - start
            masks = explainer.attribute(data.inputs, target=data.targets)
            row = _row(data, masks, "AmortizedExplainer", epoch, seconds)
            if multilabel:
                row.update(_class_masking(explainer, data, n))
            rows.append(row)
    return rows


def _class_masking(explainer, data: Suite, n: int) -> dict:
    """Stalder et al.'s class-specific masking on the suite's ``n`` two-object images: the
    share of a class's probability that its own mask keeps and the other object's mask leaves."""
    images = data.inputs[:n]
    labels = torch.zeros(n, explainer.num_classes)
    labels[torch.arange(n).repeat(2), data.targets] = 1.0  # the rows are both objects, in turn
    result = metrics.class_specific_masking(
        data.model, images, explainer.explain_all(images), labels, multilabel=True
    )
    return {
        "own_mask_keeps": result["same_relative"],
        "other_mask_leaves": result["other_co_occurring_relative"],
    }


def format_explainer_epochs(rows: list[dict]) -> str:
    """:func:`explainer_epochs_report` as a markdown table."""
    columns = [c for c in _COLUMNS if c in rows[-1]]
    lines = [
        "| method | epoch | " + " | ".join(columns) + " | seconds |",
        "|---" * (len(columns) + 3) + "|",
    ]
    for row in rows:
        epoch = "–" if row["epoch"] is None else str(row["epoch"])
        cells = " | ".join(f"{row[c]:.3f}" if c in row else "–" for c in columns)
        lines.append(f"| {row['method']} | {epoch} | {cells} | {row['seconds']:.0f} |")
    return "\n".join(lines)


__all__ = ["EPOCH_SUITES", "explainer_epochs_report", "format_explainer_epochs"]
