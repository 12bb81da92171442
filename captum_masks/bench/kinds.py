"""Input kinds other than photos, each with its evidence known by construction: tabular rows,
sequences, volumes, token ids and small images (``python -m captum_masks kinds``).

Each task trains a small model in seconds on data whose label one region decides, then explains
fresh inputs of a split (``"calibration"``, where settings are chosen, or ``"held-out"``, which
is reported: disjoint generator seeds) for that label, with this package's methods at their
defaults next to Captum's built-ins. A method is scored where the evidence is:

- **rows**: the share of positive relevance on the deciding features (relevance mass);
- **sequences**, **volumes**, **images-32**: whether the map's maximum lies in the evidence
  (pointing: with no tolerance, and with the pointing game's tolerance of 15 px at 224 px
  scaled to the input) and the relevance mass;
- **tokens**: whether the token with the largest attribution (summed over the embedding) is the
  deciding token.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from captum_masks._engine.checks import model_scores
from captum_masks._engine.model_state import seeded_global_rng
from captum_masks.bench.kind_tasks import KINDS, KindTask, kind_task, training_batches
from captum_masks.bench.runners import accepted, check_overrides_taken
from captum_masks.bench.transformer_tasks import VIT_PATCH

if TYPE_CHECKING:
    from captum_masks import AmortizedExplainer

#: this package's methods the kinds run (the overrides go to these)
_OURS = (
    "MeaningfulPerturbation",
    "NeuroMaskAttr",
    "RISE",
    "ExtremalPerturbation",
    "GuidedFeatureInversion",
)


# ------------------------------------------------------------------------------------- methods
def _explainers(task: KindTask, overrides: dict) -> dict[str, Callable[..., Tensor]]:
    """Each method that applies to the task's kind, at its defaults but for the ``overrides``
    it takes, called as ``(inputs, target=...)``; token ids go through the embedding (the Layer
    classes, LayerIntegratedGradients)."""
    from captum.attr import (
        FeatureAblation,
        IntegratedGradients,
        LayerIntegratedGradients,
        Occlusion,
        ShapleyValueSampling,
    )

    from captum_masks import (
        RISE,
        ExtremalPerturbation,
        GuidedFeatureInversion,
        LayerMeaningfulPerturbation,
        LayerNeuroMask,
        MeaningfulPerturbation,
        NeuroMaskAttr,
    )

    def ours(name: str, attribute: Callable[..., Tensor], **settings) -> Callable[..., Tensor]:
        return partial(attribute, **settings, **accepted(name, overrides))

    model, embedding = task.model, task.layer
    if embedding is not None:  # token ids
        return {
            "MeaningfulPerturbation": ours(
                "MeaningfulPerturbation", LayerMeaningfulPerturbation(model, embedding).attribute
            ),
            "NeuroMaskAttr": ours("NeuroMaskAttr", LayerNeuroMask(model, embedding).attribute),
            "AmortizedExplainer": _fitted_explainer(task).attribute,
            # Captum's methods need a tensor: a Hugging Face model's logits
            "IntegratedGradients": LayerIntegratedGradients(
                lambda *inputs: model_scores(model(*inputs)), embedding
            ).attribute,
        }
    # a sequence's layout is (N, C, L): said, as a user who knows it would
    layout = {"channels_last": False} if task.kind == "sequences" else {}
    methods: dict[str, Callable[..., Tensor]] = {
        name: ours(name, cls(model).attribute, **layout)
        for name, cls in (
            ("MeaningfulPerturbation", MeaningfulPerturbation),
            ("NeuroMaskAttr", NeuroMaskAttr),
            ("RISE", RISE),
        )
    }
    if task.kind == "vit-32":
        methods["ExtremalPerturbation"] = ours(
            "ExtremalPerturbation", ExtremalPerturbation(model).attribute
        )
        blocks = model.get_submodule("blocks")
        assert isinstance(blocks, nn.Sequential)
        last_block = blocks[-1]  # its tokens, on the patch grid
        methods["GuidedFeatureInversion"] = ours(
            "GuidedFeatureInversion", GuidedFeatureInversion(model, last_block).attribute
        )
    if task.kind == "images-32":
        features = model.get_submodule("features")
        assert isinstance(features, nn.Sequential)
        methods["ExtremalPerturbation"] = ours(
            "ExtremalPerturbation", ExtremalPerturbation(model).attribute
        )
        methods["GuidedFeatureInversion"] = ours(
            "GuidedFeatureInversion", GuidedFeatureInversion(model, features[-1]).attribute
        )
    if task.kind == "rows":
        methods["FeatureAblation"] = FeatureAblation(model).attribute
        methods["ShapleyValueSampling"] = ShapleyValueSampling(model).attribute
        return methods
    channels = task.inputs.shape[1]
    window = {
        "sequences": (channels, 5),
        "volumes": (1, 2, 4, 4),
        "images-32": (channels, 4, 4),
        "vit-32": (channels, VIT_PATCH, VIT_PATCH),  # one patch, as a ViT user would
    }
    stride = {
        "sequences": (channels, 1),
        "volumes": (1, 1, 2, 2),
        "images-32": (channels, 2, 2),
        "vit-32": (channels, VIT_PATCH, VIT_PATCH),
    }
    occlusion = Occlusion(model)
    methods["Occlusion"] = partial(
        occlusion.attribute, sliding_window_shapes=window[task.kind], strides=stride[task.kind]
    )
    methods["IntegratedGradients"] = IntegratedGradients(model).attribute
    return methods


def _fitted_explainer(task: KindTask) -> AmortizedExplainer:
    """An :class:`~captum_masks.AmortizedExplainer` through the task's embedding, fitted at its
    defaults on the data the model trained on, as a user explaining their own model would."""
    from captum_masks import AmortizedExplainer

    batches = training_batches(task.kind)
    with torch.no_grad():
        classes = model_scores(task.model(*batches[0][:1], *batches[0][2:])).shape[1]
    explainer = AmortizedExplainer(task.model, classes, layer=task.layer)
    explainer.fit(batches, show_progress=False)
    return explainer


def _positions(task: KindTask, attribution: Tensor) -> Tensor:
    """The attribution on the evidence's positions: summed over the channel axis (over the
    embedding for tokens)."""
    if task.kind in ("tokens", "text"):
        return attribution.sum(dim=-1)
    if task.kind == "rows":
        return attribution
    return attribution.sum(dim=1)


def relevance_mass(scores: Tensor, evidence: Tensor) -> Tensor:
    """(N,) share of each map's positive part on the evidence; 0 for a map without one."""
    positive = scores.clamp_min(0).flatten(1)
    inside = (positive * evidence.flatten(1)).sum(dim=1)
    return inside / positive.sum(dim=1).clamp_min(1e-12)


def points_at(scores: Tensor, evidence: Tensor, tolerance: float = 0.0) -> Tensor:
    """(N,) whether each map's maximum lies on the evidence, or within ``tolerance`` positions
    of it (the pointing game's tolerance). Where several positions share the maximum (a
    saturated mask), the point is the tied position nearest their centroid."""
    hits = []
    for row, where in zip(scores, evidence):
        flat = row.flatten()
        tied = torch.nonzero(flat >= flat.max() - 1e-6 * flat.max().abs()).flatten()
        coordinates = torch.stack(torch.unravel_index(tied, row.shape), dim=1).float()
        point = coordinates[(coordinates - coordinates.mean(dim=0)).norm(dim=1).argmin()]
        inside = torch.nonzero(where).float()
        distance = (inside - point).norm(dim=1).min() if len(inside) else torch.tensor(math.inf)
        hits.append(bool(distance <= tolerance))
    return torch.tensor(hits, dtype=torch.float)


def pointing_tolerance(task: KindTask) -> float:
    """The pointing game's tolerance, 15 px at 224 px, as the same fraction of the shortest
    side of the task's positions, rounded (at least 1)."""
    return max(1, round(15 * min(task.evidence.shape[1:]) / 224))


def kinds_report(
    kinds: tuple[str, ...] = KINDS,
    n: int = 40,
    split: str = "held-out",
    overrides: dict | None = None,
) -> dict[str, dict]:
    """Every method that applies, at its defaults, on ``n`` inputs of ``split`` of each kind;
    ``overrides`` (such as ``{"l1_weight": 0.4}``) go to each of this package's methods that
    takes them, to calibrate.

    Returns:
        dict kind -> {"accuracy": the model's, "methods": {method: {"pointing": (N,),
        "pointing_with_tolerance": (N,), "relevance_mass": (N,), "seconds": per input}}}.

    Examples::

        >>> print(format_kinds(kinds_report(("rows", "volumes"), n=20, split="calibration")))
    """
    overrides = overrides or {}
    check_overrides_taken(overrides, _OURS)
    report: dict[str, dict] = {}
    for kind in kinds:
        task = kind_task(kind, n, split)
        extra = {}
        if task.additional_forward_args:  # a text transformer's attention mask
            extra = {"additional_forward_args": task.additional_forward_args}
        methods = {}
        for name, explain in _explainers(task, overrides).items():
            with seeded_global_rng(0):  # Shapley sampling draws from the global RNG
                start = time.perf_counter()
                attribution = explain(task.inputs, target=task.targets, **extra).detach()
                seconds = (time.perf_counter() - start) / len(task.inputs)
            scores = _positions(task, attribution.float())
            methods[name] = {
                "pointing": points_at(scores, task.evidence),
                "pointing_with_tolerance": points_at(
                    scores, task.evidence, pointing_tolerance(task)
                ),
                "relevance_mass": relevance_mass(scores, task.evidence),
                "seconds": seconds,
            }
            if task.kind == "text":  # the largest attribution a padding token got
                (attention_mask,) = task.additional_forward_args
                padding = (attention_mask == 0).to(scores.dtype)
                methods[name]["padding"] = (scores.abs() * padding).amax(dim=1)
        report[kind] = {"accuracy": task.accuracy, "methods": methods}
    return report


#: the kinds scored per token: pointing is whether the top token is the deciding one
TOKEN_KINDS = ("tokens", "text")
#: what each kind's columns report
COLUMNS = {
    "rows": ("relevance_mass",),
    "sequences": ("pointing", "pointing_with_tolerance", "relevance_mass"),
    "volumes": ("pointing", "pointing_with_tolerance", "relevance_mass"),
    "tokens": ("pointing",),
    "images-32": ("pointing", "pointing_with_tolerance", "relevance_mass"),
    "vit-32": ("pointing", "relevance_mass"),
    "text": ("pointing", "padding"),
}


COLUMN_NAMES = {
    "pointing": "pointing",
    "pointing_with_tolerance": "pointing ±15/224",
    "relevance_mass": "relevance mass",
    "padding": "largest attribution on padding",
}


def _column_name(kind: str, column: str) -> str:
    return "top token" if kind in TOKEN_KINDS and column == "pointing" else COLUMN_NAMES[column]


def format_kinds(report: dict[str, dict]) -> str:
    """A Markdown table, one row per method, the means of each kind's columns ("–" where a
    method does not apply), then each model's accuracy."""
    names: list[str] = []
    for result in report.values():
        names += [name for name in result["methods"] if name not in names]
    header = [
        f"{kind}: {_column_name(kind, column)}" for kind in report for column in COLUMNS[kind]
    ]
    lines = ["| method | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    for name in names:
        cells = []
        for kind, result in report.items():
            scores = result["methods"].get(name)
            for column in COLUMNS[kind]:
                cells.append("–" if scores is None else f"{float(scores[column].mean()):.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    accuracies = ", ".join(f"{kind} {result['accuracy']:.3f}" for kind, result in report.items())
    return "\n".join(lines) + f"\n\nModels' accuracy on fresh inputs: {accuracies}."


__all__ = ["format_kinds", "kinds_report", "pointing_tolerance", "points_at", "relevance_mass"]
