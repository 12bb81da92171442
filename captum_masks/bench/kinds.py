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
from dataclasses import dataclass
from functools import cache, partial

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from captum_masks._engine.model_state import seeded_global_rng
from captum_masks.bench.layouts import SPLITS
from captum_masks.bench.runners import accepted, takes

#: the first generator seed of each split's inputs; the models train on seeds below both
SPLIT_SEEDS = {"calibration": 1_000, "held-out": 2_000}
KINDS = ("rows", "sequences", "volumes", "tokens", "images-32")
#: this package's methods the kinds run (the overrides go to these)
_OURS = (
    "MeaningfulPerturbation",
    "NeuroMaskAttr",
    "RISE",
    "ExtremalPerturbation",
    "GuidedFeatureInversion",
)


@dataclass
class KindTask:
    """A trained model and inputs whose evidence is known.

    Attributes:
        kind (str): one of :data:`KINDS`.
        model (nn.Module): the trained classifier, in eval mode.
        inputs (Tensor): the inputs to explain (token ids for ``"tokens"``).
        targets (Tensor): (N,) the class their evidence decides.
        evidence (Tensor): bool, where the evidence is: the inputs' shape without the channel
            axis ((N, F) rows, (N, L) sequences and tokens, (N, D, H, W) volumes, (N, H, W)
            images).
        accuracy (float): the model's accuracy on fresh inputs of both classes.
        layer (nn.Module, optional): the embedding that token-id models are explained through.
    """

    kind: str
    model: nn.Module
    inputs: Tensor
    targets: Tensor
    evidence: Tensor
    accuracy: float
    layer: nn.Module | None = None


# ---------------------------------------------------------------------------------------- data
def _rows(n: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """(n, 10) Gaussian rows; the label is whether features 2 and 7 sum above 0."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randn(n, 10, generator=generator)
    labels = (rows[:, 2] + rows[:, 7] > 0).long()
    evidence = torch.zeros(n, 10, dtype=torch.bool)
    evidence[:, [2, 7]] = True
    return rows, labels, evidence


def _sequences(n: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """(n, 4, 64) noise; class 1 has a bump of 5 samples on channel 0 at a random place."""
    generator = torch.Generator().manual_seed(seed)
    sequences = 0.5 * torch.randn(n, 4, 64, generator=generator)
    labels = torch.randint(0, 2, (n,), generator=generator)
    starts = torch.randint(0, 64 - 5, (n,), generator=generator)
    evidence = torch.zeros(n, 64, dtype=torch.bool)
    for row in torch.nonzero(labels).flatten().tolist():
        start = int(starts[row])
        sequences[row, 0, start : start + 5] += 2.0
        evidence[row, start : start + 5] = True
    return sequences, labels, evidence


def _volumes(n: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """(n, 1, 8, 16, 16) volumes of faint noise; class 1 holds a bright 3 × 4 × 4 sub-cube."""
    generator = torch.Generator().manual_seed(seed)
    volumes = 0.2 * torch.rand(n, 1, 8, 16, 16, generator=generator)
    labels = torch.randint(0, 2, (n,), generator=generator)
    corners = [
        torch.randint(0, side - size + 1, (n,), generator=generator)
        for side, size in ((8, 3), (16, 4), (16, 4))
    ]
    evidence = torch.zeros(n, 8, 16, 16, dtype=torch.bool)
    for row in torch.nonzero(labels).flatten().tolist():
        d, h, w = (int(corner[row]) for corner in corners)
        volumes[row, 0, d : d + 3, h : h + 4, w : w + 4] += 0.8
        evidence[row, d : d + 3, h : h + 4, w : w + 4] = True
    return volumes, labels, evidence


#: the token whose presence is class 1, in a vocabulary of 50
EVIDENCE_TOKEN = 7


def _tokens(n: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """(n, 12) token ids; class 1 holds :data:`EVIDENCE_TOKEN` once, class 0 never."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 50, (n, 12), generator=generator)
    ids[ids == EVIDENCE_TOKEN] = EVIDENCE_TOKEN + 1
    labels = torch.randint(0, 2, (n,), generator=generator)
    where = torch.randint(0, 12, (n,), generator=generator)
    evidence = torch.zeros(n, 12, dtype=torch.bool)
    rows = torch.nonzero(labels).flatten()
    ids[rows, where[rows]] = EVIDENCE_TOKEN
    evidence[rows, where[rows]] = True
    return ids, labels, evidence


def _images(n: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """(n, 3, 32, 32) texture crops with one of four filled shapes; the label is the shape."""
    from captum_masks.bench.shapes import make_synthetic

    batch = make_synthetic(n, seed=seed, size=32)
    return batch.images, batch.labels, batch.masks[:, 0].bool()


# -------------------------------------------------------------------------------------- models
class _TokenModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(50, 16)
        self.conv = nn.Conv1d(16, 32, 3, padding=1)
        self.head = nn.Linear(32, 2)

    def forward(self, ids: Tensor) -> Tensor:
        hidden = F.relu(self.conv(self.embedding(ids).transpose(1, 2)))
        return self.head(hidden.amax(dim=2))


def _max_pooled_cnn(
    conv: type[nn.Module], pool: type[nn.Module], channels: int, width: int, kernel: int
) -> nn.Module:
    """Two convolutions and a global max: it answers wherever the evidence is."""
    return nn.Sequential(
        conv(channels, width, kernel, padding=kernel // 2),
        nn.ReLU(),
        conv(width, width, kernel, padding=kernel // 2),
        nn.ReLU(),
        pool(1),
        nn.Flatten(),
        nn.Linear(width, 2),
    )


def _model(kind: str) -> nn.Module:
    if kind == "rows":
        return nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 2))
    if kind == "sequences":
        return _max_pooled_cnn(nn.Conv1d, nn.AdaptiveMaxPool1d, 4, 16, 5)
    if kind == "volumes":
        return _max_pooled_cnn(nn.Conv3d, nn.AdaptiveMaxPool3d, 1, 8, 3)
    if kind == "tokens":
        return _TokenModel()
    from captum_masks.bench.synthetic import ReferenceCNN

    return ReferenceCNN(4, width=16)


_DATA: dict[str, Callable[[int, int], tuple[Tensor, Tensor, Tensor]]] = {
    "rows": _rows,
    "sequences": _sequences,
    "volumes": _volumes,
    "tokens": _tokens,
    "images-32": _images,
}
#: training examples and epochs per kind: each model trains in seconds on a CPU
_TRAINING = {
    "rows": (2000, 20),
    "sequences": (2000, 6),
    "volumes": (1000, 6),
    "tokens": (2000, 6),
    "images-32": (3000, 8),
}


@cache  # seeded: the same model every time, so a process trains each kind once
def _train(kind: str) -> nn.Module:
    size, epochs = _TRAINING[kind]
    inputs, labels, _ = _DATA[kind](size, 0)
    with seeded_global_rng(0):
        model = _model(kind)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(size)
            for start in range(0, size, 32):
                batch = order[start : start + 32]
                loss = F.cross_entropy(model(inputs[batch]), labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    return model.eval()


def kind_task(kind: str, n: int = 40, split: str = "held-out") -> KindTask:
    """Train ``kind``'s model and draw ``n`` inputs of ``split`` that carry the evidence (the
    positive class; any class for rows and images), each explained for its label.

    Examples::

        >>> task = kind_task("volumes", n=20, split="calibration")
        >>> task.inputs.shape, task.evidence.shape
        (torch.Size([20, 1, 8, 16, 16]), torch.Size([20, 8, 16, 16]))
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    model = _train(kind)
    fresh, fresh_labels, _ = _DATA[kind](1000, SPLIT_SEEDS[split] + 500)
    with torch.no_grad():
        accuracy = float((model(fresh).argmax(dim=1) == fresh_labels).float().mean())
    inputs, labels, evidence = _DATA[kind](4 * n, SPLIT_SEEDS[split])
    keep = evidence.flatten(1).any(dim=1)
    chosen = torch.nonzero(keep).flatten()[:n]
    layer = getattr(model, "embedding", None)
    return KindTask(kind, model, inputs[chosen], labels[chosen], evidence[chosen], accuracy, layer)


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
            "IntegratedGradients": LayerIntegratedGradients(model, embedding).attribute,
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
    window = {"sequences": (channels, 5), "volumes": (1, 2, 4, 4), "images-32": (channels, 4, 4)}
    stride = {"sequences": (channels, 1), "volumes": (1, 1, 2, 2), "images-32": (channels, 2, 2)}
    occlusion = Occlusion(model)
    methods["Occlusion"] = partial(
        occlusion.attribute, sliding_window_shapes=window[task.kind], strides=stride[task.kind]
    )
    methods["IntegratedGradients"] = IntegratedGradients(model).attribute
    return methods


def _positions(task: KindTask, attribution: Tensor) -> Tensor:
    """The attribution on the evidence's positions: summed over the channel axis (over the
    embedding for tokens)."""
    if task.kind == "tokens":
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
    unused = [k for k in overrides if not any(takes(method, k) for method in _OURS)]
    if unused:
        raise ValueError(f"overrides {unused} are not arguments of {', '.join(_OURS)}")
    report: dict[str, dict] = {}
    for kind in kinds:
        task = kind_task(kind, n, split)
        methods = {}
        for name, explain in _explainers(task, overrides).items():
            with seeded_global_rng(0):  # Shapley sampling draws from the global RNG
                start = time.perf_counter()
                attribution = explain(task.inputs, target=task.targets).detach()
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
        report[kind] = {"accuracy": task.accuracy, "methods": methods}
    return report


#: what each kind's columns report
COLUMNS = {
    "rows": ("relevance_mass",),
    "sequences": ("pointing", "pointing_with_tolerance", "relevance_mass"),
    "volumes": ("pointing", "pointing_with_tolerance", "relevance_mass"),
    "tokens": ("pointing",),
    "images-32": ("pointing", "pointing_with_tolerance", "relevance_mass"),
}


COLUMN_NAMES = {
    "pointing": "pointing",
    "pointing_with_tolerance": "pointing ±15/224",
    "relevance_mass": "relevance mass",
}


def format_kinds(report: dict[str, dict]) -> str:
    """A Markdown table, one row per method, the means of each kind's columns ("–" where a
    method does not apply), then each model's accuracy."""
    names: list[str] = []
    for result in report.values():
        names += [name for name in result["methods"] if name not in names]
    header = [
        f"{kind}: {'top token' if kind == 'tokens' else COLUMN_NAMES.get(column, column)}"
        for kind in report
        for column in COLUMNS[kind]
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


__all__ = ["KINDS", "KindTask", "format_kinds", "kind_task", "kinds_report"]
