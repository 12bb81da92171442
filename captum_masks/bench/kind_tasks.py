"""The input-kinds tasks: tabular rows, sequences, volumes, token ids and small images, each
with its evidence known by construction and a small model trained in seconds to decide by it
(the data and models behind ``python -m captum_masks kinds``, :mod:`captum_masks.bench.kinds`).

Each split (``"calibration"``, where settings are chosen, or ``"held-out"``, which is reported)
draws its inputs from its own generator seeds; the models train on seeds below both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from captum_masks._engine.checks import model_scores
from captum_masks._engine.model_state import seeded_global_rng
from captum_masks.bench import transformer_tasks
from captum_masks.bench.layouts import SPLITS

#: the first generator seed of each split's inputs; the models train on seeds below both
SPLIT_SEEDS = {"calibration": 1_000, "held-out": 2_000}
KINDS = ("rows", "sequences", "volumes", "tokens", "images-32")
#: the transformer kinds (the ``transformers`` extra): :mod:`captum_masks.bench.transformer_tasks`
TRANSFORMER_KINDS = ("vit-32", "text")
ALL_KINDS = KINDS + TRANSFORMER_KINDS


@dataclass
class KindTask:
    """A trained model and inputs whose evidence is known.

    Attributes:
        kind (str): one of :data:`ALL_KINDS`.
        model (nn.Module): the trained classifier, in eval mode.
        inputs (Tensor): the inputs to explain (token ids for ``"tokens"``).
        targets (Tensor): (N,) the class their evidence decides.
        evidence (Tensor): bool, where the evidence is: the inputs' shape without the channel
            axis ((N, F) rows, (N, L) sequences and tokens, (N, D, H, W) volumes, (N, H, W)
            images).
        accuracy (float): the model's accuracy on fresh inputs of both classes.
        layer (nn.Module, optional): the embedding that token-id models are explained through.
        additional_forward_args (tuple): what the model takes after the inputs (a text
            transformer's attention mask), one row per input.
    """

    kind: str
    model: nn.Module
    inputs: Tensor
    targets: Tensor
    evidence: Tensor
    accuracy: float
    layer: nn.Module | None = None
    additional_forward_args: tuple = ()


# ---------------------------------------------------------------------------------------- data
class Drawn(NamedTuple):
    """A draw of a task's data: inputs, labels, where the evidence is, what the model takes
    after the inputs (one row per input), and the same inputs without their evidence where the
    data can show them (the kind's explained inputs are then those whose class it decides)."""

    inputs: Tensor
    labels: Tensor
    evidence: Tensor
    additional: tuple = ()
    without_evidence: Tensor | None = None


def _rows(n: int, seed: int) -> Drawn:
    """(n, 10) Gaussian rows; the label is whether features 2 and 7 sum above 0."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randn(n, 10, generator=generator)
    labels = (rows[:, 2] + rows[:, 7] > 0).long()
    evidence = torch.zeros(n, 10, dtype=torch.bool)
    evidence[:, [2, 7]] = True
    return Drawn(rows, labels, evidence)


def _sequences(n: int, seed: int) -> Drawn:
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
    return Drawn(sequences, labels, evidence)


def _volumes(n: int, seed: int) -> Drawn:
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
    return Drawn(volumes, labels, evidence)


#: the token whose presence is class 1, in a vocabulary of 50
EVIDENCE_TOKEN = 7


def _tokens(n: int, seed: int) -> Drawn:
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
    return Drawn(ids, labels, evidence)


def _images(n: int, seed: int) -> Drawn:
    """(n, 3, 32, 32) texture crops with one of four filled shapes; the label is the shape."""
    from captum_masks.bench.shapes import make_synthetic

    batch = make_synthetic(n, seed=seed, size=32)
    return Drawn(batch.images, batch.labels, batch.masks[:, 0].bool())


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
    if kind == "vit-32":
        return transformer_tasks.tiny_vit()
    if kind == "text":
        return transformer_tasks.tiny_bert()
    from captum_masks.bench.synthetic import ReferenceCNN

    return ReferenceCNN(4, width=16)


_DATA: dict[str, Callable[[int, int], Drawn]] = {
    "rows": _rows,
    "sequences": _sequences,
    "volumes": _volumes,
    "tokens": _tokens,
    "images-32": _images,
    "vit-32": lambda n, seed: Drawn(*transformer_tasks.patch_squares(n, seed)),
    "text": lambda n, seed: Drawn(*transformer_tasks.padded_sentences(n, seed)),
}
#: training examples, epochs and learning rate per kind: each model trains in seconds on a CPU
_TRAINING = {
    "rows": (2000, 20, 3e-3),
    "sequences": (2000, 6, 3e-3),
    "volumes": (1000, 6, 3e-3),
    "tokens": (2000, 6, 3e-3),
    "images-32": (3000, 8, 3e-3),
    "vit-32": (3000, 3, 1e-3),
    "text": (3000, 1, 1e-3),
}


def _scores(model: nn.Module, inputs: Tensor, additional: tuple) -> Tensor:
    return model_scores(model(inputs, *additional))


@cache  # seeded: the same model every time, so a process trains each kind once
def _train(kind: str) -> nn.Module:
    size, epochs, learning_rate = _TRAINING[kind]
    inputs, labels, _, additional, _ = _DATA[kind](size, 0)
    with seeded_global_rng(0):
        model = _model(kind)
        optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(size)
            for start in range(0, size, 32):
                batch = order[start : start + 32]
                scores = _scores(model, inputs[batch], tuple(a[batch] for a in additional))
                loss = F.cross_entropy(scores, labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    return model.eval()


def training_batches(kind: str, batch_size: int = 64) -> list[tuple[Tensor, ...]]:
    """The data ``kind``'s model trained on, as ``(inputs, labels, *additional_forward_args)``
    batches: what an :class:`~captum_masks.AmortizedExplainer` of that model fits on."""
    size = _TRAINING[kind][0]
    inputs, labels, _, additional, _ = _DATA[kind](size, 0)
    return [
        (inputs[start : start + batch_size], labels[start : start + batch_size])
        + tuple(a[start : start + batch_size] for a in additional)
        for start in range(0, size, batch_size)
    ]


def kind_task(kind: str, n: int = 40, split: str = "held-out") -> KindTask:
    """Train ``kind``'s model and draw ``n`` inputs of ``split`` that carry the evidence (the
    positive class; any class for rows and images), each explained for its label. Where the
    data can show an input without its evidence (the ViT's crop without its square), only
    inputs whose class the evidence decides are drawn: a model may give one class to a crop
    with no square at all, and for that class the square is no evidence.

    Examples::

        >>> task = kind_task("volumes", n=20, split="calibration")
        >>> task.inputs.shape, task.evidence.shape
        (torch.Size([20, 1, 8, 16, 16]), torch.Size([20, 8, 16, 16]))
    """
    if kind not in ALL_KINDS:
        raise ValueError(f"kind must be one of {ALL_KINDS}, got {kind!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    model = _train(kind)
    fresh, fresh_labels, _, fresh_additional, _ = _DATA[kind](1000, SPLIT_SEEDS[split] + 500)
    with torch.no_grad():
        predicted = _scores(model, fresh, fresh_additional).argmax(dim=1)
    accuracy = float((predicted == fresh_labels).float().mean())
    inputs, labels, evidence, additional, without_evidence = _DATA[kind](4 * n, SPLIT_SEEDS[split])
    keep = evidence.flatten(1).any(dim=1)
    if without_evidence is not None:  # the evidence decides: without it, another class
        with torch.no_grad():
            keep &= _scores(model, without_evidence, additional).argmax(dim=1) != labels
    chosen = torch.nonzero(keep).flatten()[:n]
    # token ids go through the embedding: a Hugging Face model names its own
    embeddings = getattr(model, "get_input_embeddings", None)
    layer = embeddings() if callable(embeddings) else getattr(model, "embedding", None)
    return KindTask(
        kind,
        model,
        inputs[chosen],
        labels[chosen],
        evidence[chosen],
        accuracy,
        layer,
        tuple(a[chosen] for a in additional),
    )


__all__ = [
    "ALL_KINDS",
    "EVIDENCE_TOKEN",
    "KINDS",
    "SPLIT_SEEDS",
    "TRANSFORMER_KINDS",
    "KindTask",
    "kind_task",
    "training_batches",
]
