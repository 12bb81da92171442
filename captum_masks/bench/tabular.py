"""Tabular rows: scikit-learn's bundled breast-cancer data, a small classifier trained on it, and
each method's mean feature importance ranked against Captum's ShapleyValueSampling
(``python -m captum_masks tabular``)."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from captum_masks.bench.layouts import SPLITS

#: rows held out from training; the first half calibrates, the second is reported
TEST_FRACTION = 0.4


@dataclass
class TabularTask:
    """A trained classifier and standardised rows (feature mean 0, so baselines=0 is the
    training set's average patient).

    Attributes:
        model (nn.Module): (N, 30) -> (N, 2) logits (malignant, benign), in eval mode.
        rows (dict): split name -> (n, 30) float32 rows the model was not trained on.
        feature_names (list of str): the 30 measurements' names.
        accuracy (float): on all the held-out rows.
    """

    model: nn.Module
    rows: dict[str, Tensor]
    feature_names: list[str]
    accuracy: float


def breast_cancer_task(seed: int = 0) -> TabularTask:
    """Train a 30-32-2 MLP on 60% of the Wisconsin breast-cancer rows (ships with
    scikit-learn, nothing to download), in about a second on a CPU; the other rows, split in two
    halves by ``seed``, are the calibration and held-out splits.

    Examples::

        >>> task = breast_cancer_task()
        >>> task.model(task.rows["held-out"]).argmax(dim=1)
    """
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    features = torch.tensor(data.data, dtype=torch.float32)
    labels = torch.tensor(data.target, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    test_size = int(TEST_FRACTION * len(labels))
    test, train = order[:test_size], order[test_size:]
    mean, std = features[train].mean(dim=0), features[train].std(dim=0)
    standardised = (features - mean) / std

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(30, 32), nn.ReLU(), nn.Linear(32, 2))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)
        for _ in range(300):
            loss = nn.functional.cross_entropy(model(standardised[train]), labels[train])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(standardised[test]).argmax(dim=1) == labels[test]).float().mean()
    half = test_size // 2
    rows = {SPLITS[0]: standardised[test[:half]], SPLITS[1]: standardised[test[half:]]}
    return TabularTask(model, rows, list(data.feature_names), float(accuracy))


def _explainers(model: nn.Module) -> dict:
    from captum.attr import FeatureAblation, IntegratedGradients, ShapleyValueSampling

    from captum_masks import MeaningfulPerturbation, NeuroMaskAttr

    return {
        "ShapleyValueSampling": lambda x, t: (
            ShapleyValueSampling(model).attribute(x, target=t, baselines=0.0, n_samples=50).abs()
        ),
        "MeaningfulPerturbation": lambda x, t: MeaningfulPerturbation(model).attribute(
            x, target=t
        ),
        "MeaningfulPerturbation/preservation": lambda x, t: MeaningfulPerturbation(
            model
        ).attribute(x, target=t, game="preservation"),
        "NeuroMaskAttr": lambda x, t: NeuroMaskAttr(model).attribute(x, target=t),
        "FeatureAblation": lambda x, t: (
            FeatureAblation(model).attribute(x, target=t, baselines=0.0).abs()
        ),
        "IntegratedGradients": lambda x, t: (
            IntegratedGradients(model).attribute(x, target=t, baselines=0.0).abs()
        ),
    }


def tabular_report(split: str = "held-out", n: int | None = None, seed: int = 0) -> dict:
    """Each method's importance on the breast-cancer rows of ``split``, explained for the
    predicted class with deleted features at 0 (the training average), against
    ShapleyValueSampling's absolute attributions.

    Args:
        split (str): ``"calibration"`` or ``"held-out"``.
        n (int, optional): explain only the first ``n`` rows of the split. Default: all (114).
        seed (int): the training and split seed.

    Returns:
        dict with ``"accuracy"``, ``"rows"``, ``"features"`` (names) and ``"methods"``: per
        method, ``"importance"`` (30,) mean importance, ``"spearman"`` rank correlation of it with
        ShapleyValueSampling's, ``"row_spearman"`` the mean per-row rank correlation,
        ``"top5"`` how many of Shapley's five most important features it also ranks in its top
        five, and ``"seconds_per_row"``.

    Examples::

        >>> print(format_tabular(tabular_report("calibration")))
    """
    from captum_masks.metrics import spearman_rank_correlation

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    task = breast_cancer_task(seed)
    rows = task.rows[split][:n]
    with torch.no_grad():
        targets = task.model(rows).argmax(dim=1)
    methods = {}
    for name, explain in _explainers(task.model).items():
        with torch.random.fork_rng():  # Shapley sampling draws from the global RNG
            torch.manual_seed(seed)
            start = time.perf_counter()
            attribution = explain(rows, targets).detach()
            seconds = (time.perf_counter() - start) / len(rows)
        methods[name] = {"attribution": attribution, "seconds_per_row": seconds}
    reference = methods["ShapleyValueSampling"]["attribution"]
    reference_top = set(reference.mean(dim=0).topk(5).indices.tolist())
    for result in methods.values():
        attribution = result.pop("attribution")
        importance = attribution.mean(dim=0)
        result["importance"] = importance
        result["spearman"] = float(
            spearman_rank_correlation(importance[None], reference.mean(dim=0)[None])[0]
        )
        with warnings.catch_warnings():  # a constant (empty) map has no rank correlation
            warnings.simplefilter("ignore")
            per_row = spearman_rank_correlation(attribution, reference)
        result["row_spearman"] = float(per_row.nanmean())
        result["top5"] = len(reference_top & set(importance.topk(5).indices.tolist()))
    return {
        "accuracy": task.accuracy,
        "rows": len(rows),
        "split": split,
        "features": task.feature_names,
        "methods": methods,
    }


def format_tabular(report: dict) -> str:
    """The report as a Markdown table, one row per method."""
    lines = [
        f"breast cancer, {report['split']} split: {report['rows']} rows, classifier accuracy "
        f"{report['accuracy']:.3f}",
        "",
        "| method | rank corr. of mean importance with Shapley | mean per-row rank corr. | "
        "Shapley's top 5 in its top 5 | s / row |",
        "|---|---|---|---|---|",
    ]
    for name, result in report["methods"].items():
        lines.append(
            f"| {name} | {result['spearman']:.3f} | {result['row_spearman']:.3f} | "
            f"{result['top5']} | {result['seconds_per_row']:.4f} |"
        )
    reference = report["methods"]["ShapleyValueSampling"]["importance"]
    top = [report["features"][i] for i in reference.topk(5).indices.tolist()]
    lines += ["", f"Shapley's five most important features: {', '.join(top)}"]
    return "\n".join(lines)


__all__ = ["TabularTask", "breast_cancer_task", "format_tabular", "tabular_report"]
