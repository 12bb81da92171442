"""``python -m captum_masks benchmark``: this package's methods next to Captum's built-ins.

Every method explains the same images for the same targets; each is scored against the pasted
ground truth (pointing game, relevance mass, IoU), on the model (deletion and insertion AUC) and
on time. Four suites:

- ``synthetic``: shapes on real backgrounds (:mod:`captum_masks.bench.synthetic`), explained on the
  reference CNN for their true class; 64 px images.
- ``photos``: real object photos pasted on real textures at varied scales and positions
  (:mod:`captum_masks.bench.layouts`), explained on the pretrained EfficientNet-Lite0 for the
  object's predicted class; 224 px images.
- ``synthetic-pairs`` and ``photos-pairs``: two objects of different classes in each image
  (the multi-label reference CNN; two different photo objects,
  :func:`captum_masks.bench.zoo.paste_pair`),
  each image explained once for each object's class. The ground truth is the explained object,
  and the ``discrimination`` column is the share of explanations with more relevance on it than
  on the other object.

Each suite has a ``"calibration"`` split, where settings are chosen, and a ``"held-out"`` split,
which the docs report; the photo splits have disjoint backgrounds.

``AmortizedExplainer`` needs an explainer trained for the suite's model; the one for the
multi-label reference CNN (:func:`captum_masks.bench.synthetic.load_synthetic_explainer`) makes
it a method of the ``synthetic-pairs`` suite. :func:`class_masking_report` is Stalder et al.'s
class-specific masking table for it (``python -m captum_masks class-masking``).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from captum_masks import explain_dataset, metrics
from captum_masks._engine.distributed import rank_and_world_size
from captum_masks.bench.passes import counting_passes
from captum_masks.bench.runners import (
    ALL_METHODS,
    AMORTIZED_SUITES,
    DEFAULT_METHODS,
    OUR_METHODS,
    RunnerAttribution,
    check_overrides_taken,
    method_runners,
    split_variant,
    takes,
)
from captum_masks.bench.suites import (
    PHOTO_PAIR_SUITES,
    SUITE_BUILDERS,
    SUITES,
    Suite,
    SuiteDataset,
)

METRIC_COLUMNS = (
    "pointing",
    "relevance_mass",
    "discrimination",
    "iou",
    "f_measure",
    "mae",
    "deletion_auc",
    "insertion_auc",
    "map_mean",
    "map_tv",
)
#: which way is better; None for the descriptive columns (sparseness and roughness of the map)
HIGHER_IS_BETTER = {
    "pointing": True,
    "relevance_mass": True,
    "discrimination": True,
    "iou": True,
    "f_measure": True,
    "mae": False,
    "deletion_auc": False,
    "insertion_auc": True,
    "map_mean": None,
    "map_tv": None,
    "forward_passes": False,
    "backward_passes": False,
    "seconds": False,
}
#: the columns with one value per method (per row, for the whole batch)
COST_COLUMNS = ("forward_passes", "backward_passes", "seconds")


@dataclass
class BenchmarkResult:
    """What one benchmark run measured.

    Attributes:
        suite (Suite): the images, targets, ground truth and model.
        scores (dict): ``scores[method][metric]``, a list over rows (``seconds`` and the
            model's ``forward_passes`` and ``backward_passes`` hold one value: the whole batch
            ÷ rows; the passes are NaN where the rows ran in other processes).
            ``discrimination`` is there for pair suites only.
        attributions (dict): each method's maps, for figures.
        curves (dict): ``curves[method]["deletion" | "insertion"]``, (n, steps + 1) probability
            of the target as pixels are removed or inserted in the method's order.
    """

    suite: Suite
    scores: dict
    attributions: dict
    curves: dict


def run_benchmark(
    suite: str = "synthetic",
    methods: Sequence[str] | None = None,
    n: int = 20,
    seed: int = 0,
    split: str = "held-out",
    deletion_steps: int = 16,
    show_progress: bool = True,
    overrides: dict | None = None,
    workdir: str | None = None,
    objects: Sequence[str] | None = None,
) -> BenchmarkResult:
    """Explain ``n`` images of ``suite`` with every method and score them.

    Args:
        suite (str): ``"synthetic"`` (reference CNN, 64 px shapes), ``"photos"``
            (EfficientNet-Lite0, 224 px composites), or their two-object versions
            ``"synthetic-pairs"`` and ``"photos-pairs"`` (each image explained for both
            objects); ``"photos-lite2"`` and ``"photos-pairs-lite2"`` are the photo suites on
            EfficientNet-Lite2 at 260 px, a second model no setting was chosen on.
        methods (sequence of str, optional): a subset of :data:`ALL_METHODS`, each of this
            package's also with its own settings as a row of its own
            (``"NeuroMaskAttr[mask.temperature=1.0]"``, see
            :func:`~captum_masks.bench.runners.split_variant`); by default the
            :data:`DEFAULT_METHODS` that apply to the suite (AmortizedExplainer only on
            :data:`AMORTIZED_SUITES`). Other libraries' implementations
            (:data:`REFERENCE_METHODS`) run only when named, and need installing.
        n (int): number of images; the same ``n`` and ``seed`` give the same images.
        seed (int): picks the images and seeds the stochastic methods.
        split (str): ``"held-out"`` (what the docs report) or ``"calibration"`` (where
            settings are chosen): disjoint backgrounds for the photos
            (:mod:`captum_masks.bench.layouts`), disjoint generator seeds for the synthetic images.
        deletion_steps (int): steps of the deletion and insertion curves.
        show_progress (bool): a progress bar over the methods.
        overrides (dict, optional): settings for this package's methods on top of the suite's,
            such as ``{"mask.temperature": 1.0, "optimization.n_iter": 150}``; each goes to
            the selected methods that take it, and one that none of them takes is an error.
        workdir (str, optional): explain through :func:`captum_masks.explain_dataset` into
            ``workdir/<method>``, so that a run can be resumed and, under ``torchrun``, the rows
            are shared by the processes (each method's batch is its rows ÷ processes). Rank 0
            scores and returns the table; the other ranks return their result without scores.
        objects (sequence of two str, optional): on the photo pair suites only, the two objects of
            every image (keys of :data:`~captum_masks.bench.objects.NAMED_OBJECTS`, e.g.
            ``("coffee", "officer")``), to look at one pair of objects; drawn per image by
            default.

    Returns:
        :class:`BenchmarkResult`; :func:`format_table` turns it into markdown.

    Examples::

        >>> result = run_benchmark("synthetic", n=20)
        >>> print(format_table(result))
    """
    from captum_masks._engine.compat import progress

    methods = _chosen_methods(suite, methods, n, overrides or {})
    if objects is None:
        data = SUITE_BUILDERS[suite](n, seed, split)
    elif suite in PHOTO_PAIR_SUITES:
        first, second = objects
        data = SUITE_BUILDERS[suite](n, seed, split, objects=(first, second))
    else:
        raise ValueError(f"objects picks the two objects of a photo pair suite, not of {suite!r}")
    if "AmortizedExplainer" in methods:
        from captum_masks.bench.synthetic import load_synthetic_explainer

        # trained on first use, then cached: before the timer, so its row times explanations
        load_synthetic_explainer(verbose=False)
    runners = method_runners(data, seed, overrides)
    for row in methods:
        method, own = split_variant(row)
        if own:
            runners[row] = method_runners(data, seed, {**(overrides or {}), **own})[method]
    rank, world_size = rank_and_world_size()
    scores, attributions, curves = {}, {}, {}
    for name in progress(
        methods,
        desc=f"Benchmark ({suite})",
        total=len(methods),
        disable=not show_progress or rank != 0,
    ):
        start = time.perf_counter()
        passes = (math.nan, math.nan)
        if workdir is None and world_size == 1:
            with counting_passes(data.model) as count:
                attribution = runners[name](data.inputs, data.targets).detach()
            passes = count.per_input(data.inputs.shape[0])
        else:
            run = {"suite": suite, "n": n, "seed": seed, "split": split, "overrides": overrides}
            if objects is not None:
                run["objects"] = list(objects)
            attribution = _explained(name, runners[name], data, workdir, run, world_size)
        seconds = (time.perf_counter() - start) / data.inputs.shape[0]
        if rank == 0:
            scores[name], curves[name] = _scores(data, attribution, deletion_steps)
            scores[name].update(
                forward_passes=[passes[0]], backward_passes=[passes[1]], seconds=[seconds]
            )
        attributions[name] = attribution
    return BenchmarkResult(data, scores, attributions, curves)


def _explained(
    name: str,
    runner: Callable[[Tensor, Tensor], Tensor],
    data: Suite,
    workdir: str | None,
    run: dict,
    world_size: int,
) -> Tensor:
    """One row's maps through :func:`explain_dataset`, each process explaining its share."""
    if workdir is None:
        raise ValueError("under torchrun the benchmark needs workdir, a folder every rank shares")
    rows = data.inputs.shape[0]
    results = explain_dataset(
        RunnerAttribution(data.model, runner),
        SuiteDataset(data, ground_truth=False),
        Path(workdir) / name.replace("/", "-"),
        target="label",
        batch_size=math.ceil(rows / world_size),
        settings={"row": name, **run},
        show_progress=False,
    )
    return results.load(["attributions"])["attributions"]


def _chosen_methods(suite: str, methods: Sequence[str] | None, n: int, overrides: dict) -> list:
    """The methods to run, after checking the suite, the names, ``n`` and the overrides."""
    if suite not in SUITES:
        raise ValueError(f"suite must be one of {SUITES}, got {suite!r}")
    methods = list(
        methods
        or (m for m in DEFAULT_METHODS if m != "AmortizedExplainer" or suite in AMORTIZED_SUITES)
    )
    variants = {row: split_variant(row) for row in methods}
    unknown = [m for m in methods if variants[m][0] not in ALL_METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {', '.join(ALL_METHODS)}")
    if "AmortizedExplainer" in methods and suite not in AMORTIZED_SUITES:
        raise ValueError(
            f"AmortizedExplainer has a trained explainer only for the suites {AMORTIZED_SUITES}, "
            f"not {suite!r}"
        )
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    for method, own in variants.values():
        refused = [k for k in own if not takes(method, k)]
        if refused:
            raise ValueError(f"{method} takes no setting {refused}")
    check_overrides_taken(
        overrides, [method for method, _ in variants.values() if method in OUR_METHODS]
    )
    return methods


def localisation_scores(data: Suite, attribution: Tensor) -> dict:
    """The suite's localisation metrics of one method's attributions, each a list over rows:
    pointing, relevance mass, IoU, F-measure, MAE, map mean and roughness, and on pair suites
    discrimination."""
    salient = metrics.salient_object_scores(attribution, data.masks)
    scores = {
        "pointing": metrics.pointing_game(
            attribution, data.masks, data.pointing_tolerance, data.pointing_sigma
        ).tolist(),
        "relevance_mass": metrics.relevance_mass(attribution, data.masks).tolist(),
        "iou": metrics.mask_iou(attribution, data.masks, 0.5).tolist(),
        "f_measure": salient["f_measure"].tolist(),
        "mae": salient["mae"].tolist(),
        "map_mean": metrics.map_mean(attribution).tolist(),
        "map_tv": metrics.map_total_variation(attribution).tolist(),
    }
    if data.other_masks is not None:
        scores["discrimination"] = metrics.class_discrimination(
            attribution, data.masks, data.other_masks
        ).tolist()
    return scores


def _scores(data: Suite, attribution: Tensor, deletion_steps: int) -> tuple[dict, dict]:
    """One method's row of metrics (lists over rows) and its deletion / insertion curves."""
    aucs, curves = {}, {}
    for mode in ("deletion", "insertion"):
        aucs[mode], curves[mode] = metrics.deletion_insertion_curve(
            data.model,
            data.inputs,
            attribution,
            data.targets,
            mode,
            deletion_steps,
            blur_sigma=data.blur_sigma,
        )
    scores = {
        **localisation_scores(data, attribution),
        "deletion_auc": aucs["deletion"].tolist(),
        "insertion_auc": aucs["insertion"].tolist(),
    }
    return scores, curves


def _cost(column: str, value: float) -> str:
    if math.isnan(value):
        return "–"
    return f"{value:.3f}" if column == "seconds" else f"{value:.0f}"


def _mean_std(values: list) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def format_table(result: BenchmarkResult) -> str:
    """Markdown table, mean ± std over rows; the model's passes and the seconds per row are for
    the whole batch ÷ rows."""
    first = next(iter(result.scores.values()))
    columns = (*(c for c in METRIC_COLUMNS if c in first), *COST_COLUMNS)
    arrows = {True: " ↑", False: " ↓", None: ""}
    header = (
        "| method | " + " | ".join(f"{c}{arrows[HIGHER_IS_BETTER[c]]}" for c in columns) + " |"
    )
    lines = [header, "|---" * (len(columns) + 1) + "|"]
    for name, score in result.scores.items():
        cells = [
            _mean_std(score[c]) if c not in COST_COLUMNS else _cost(c, score[c][0])
            for c in columns
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_rows(result: BenchmarkResult) -> str:
    """Markdown table of every row: what it shows, and for each method its pointing hit,
    relevance mass and, on pair suites, whether it puts more relevance on the explained object
    than on the other (1) or not (0): which rows a method misses, and by how much."""
    first = next(iter(result.scores.values()))
    columns = [c for c in ("pointing", "relevance_mass", "discrimination") if c in first]
    names = list(result.scores)
    header = "| row | image | " + " | ".join(f"{name}: {c}" for name in names for c in columns)
    lines = [header + " |", "|---" * (2 + len(names) * len(columns)) + "|"]
    descriptions = result.suite.descriptions
    for row in range(result.suite.inputs.shape[0]):
        image = descriptions[row] if descriptions else ""
        cells = [f"{result.scores[name][c][row]:.2f}" for name in names for c in columns]
        lines.append(f"| {row} | {image} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save_figure(result: BenchmarkResult, path: str | os.PathLike, rows: int = 4) -> None:
    """A grid of blended overlays: one row per explanation, one column per method; the cyan
    outline is the object to find (pair suites show each image for both of its objects)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from captum.attr import visualization as viz

    from captum_masks.visualization import attribution_to_image, image_to_numpy

    total = result.suite.inputs.shape[0]
    if result.suite.other_masks is None:
        order = list(range(total))
    else:  # each image explained for its first object, then for its second
        order = [row for i in range(total // 2) for row in (i, i + total // 2)]
    order = order[:rows]
    names = list(result.attributions)
    figure, axes = plt.subplots(
        len(order),
        len(names) + 1,
        figsize=(2.4 * (len(names) + 1), 2.5 * len(order)),
        squeeze=False,
    )
    for row, index in enumerate(order):
        image = image_to_numpy(result.suite.display, index=index)
        axes[row, 0].imshow(image)
        axes[row, 0].contour(
            result.suite.masks[index, 0].numpy(), levels=[0.5], colors="cyan", linewidths=0.8
        )
        axes[row, 0].axis("off")
        for column, name in enumerate(names, start=1):
            heat = attribution_to_image(result.attributions[name], index=index)
            heat = heat.sum(-1, keepdims=True)
            axis = axes[row, column]
            if (heat > 0).any():
                viz.visualize_image_attr(
                    heat,
                    image,
                    method="blended_heat_map",
                    sign="positive",
                    plt_fig_axis=(figure, axis),
                    use_pyplot=False,
                )
            else:
                axis.imshow(image)
                axis.axis("off")
            if row == 0:
                axis.set_title(name, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


__all__ = [
    "COST_COLUMNS",
    "METRIC_COLUMNS",
    "BenchmarkResult",
    "format_rows",
    "format_table",
    "localisation_scores",
    "run_benchmark",
    "save_figure",
]
