"""The explainer's training loop: one epoch of steps, the record of what it measured, and the
state a checkpoint keeps so that a resumed run ends where an uninterrupted one would."""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import operator
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from captum_masks._engine.compat import progress


@dataclass
class FitHistory:
    """What :meth:`AmortizedExplainer.fit` measured, one entry per epoch.

    Attributes:
        train_loss (list of float): mean training loss.
        val_loss (list of float): mean validation loss (empty without ``val_data``).
        terms (dict): mean of each loss term per epoch, e.g. ``terms["classification"]``.
        best_epoch (int): the epoch whose explainer was kept (0-based).
        stopped_early (bool): training stopped before ``epochs`` for lack of improvement.
    """

    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    terms: dict = field(default_factory=dict)
    best_epoch: int = -1
    stopped_early: bool = False


@dataclass
class TrainingState:
    """Where training stands after an epoch: the history, the best explainer so far and the
    early-stopping count. A checkpoint holds it next to the networks."""

    history: FitHistory = field(default_factory=FitHistory)
    best_state: dict | None = None
    best_loss: float = math.inf
    stale: int = 0
    next_epoch: int = 0

    def end_epoch(
        self, epoch: int, monitored: float, network: nn.Module, patience: int | None
    ) -> None:
        """Keep the network if ``monitored`` is its best loss yet; else count a stale epoch."""
        if monitored < self.best_loss:
            self.best_loss, self.stale, self.history.best_epoch = monitored, 0, epoch
            self.best_state = copy.deepcopy(network.state_dict())
        else:
            self.stale += 1
            self.history.stopped_early = patience is not None and self.stale >= patience
        self.next_epoch = epoch + 1

    def to_checkpoint(self) -> dict:
        return {
            "history": asdict(self.history),
            "best_state": self.best_state,
            "best_loss": self.best_loss,
            "stale": self.stale,
            "epoch": self.next_epoch - 1,
        }

    @classmethod
    def from_checkpoint(cls, saved: dict) -> TrainingState:
        return cls(
            FitHistory(**saved["history"]),
            saved["best_state"],
            saved["best_loss"],
            saved["stale"],
            saved["epoch"] + 1,
        )


def train_epoch(
    step: Callable[[Any], dict[str, Tensor]],
    batches: Iterable,
    optimizer: torch.optim.Optimizer,
    description: str,
    show_progress: bool,
) -> dict[str, float]:
    """One pass over ``batches``: for each, the per-example loss terms of ``step``, one
    optimiser step on the mean of their sum.

    Returns:
        the epoch's mean of each term and of their sum (``"loss"``) per example.
    """
    sums: dict[str, float] = {}
    count = 0
    bar = progress(batches, desc=description, disable=not show_progress)
    for raw in bar:
        terms = step(raw)
        total: Tensor = functools.reduce(operator.add, terms.values())
        optimizer.zero_grad(set_to_none=True)
        total.mean().backward()  # the explainer's own parameters: the classifier is frozen
        optimizer.step()
        count += total.shape[0]
        for name, value in {"loss": total, **terms}.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach().sum())
        if hasattr(bar, "set_postfix"):
            bar.set_postfix({k: f"{v / count:.4f}" for k, v in sums.items()})
    return {name: value / max(count, 1) for name, value in sums.items()}


def record_epoch(history: FitHistory, means: dict[str, float]) -> float:
    """Append an epoch's means to ``history``; returns its mean training loss."""
    means = dict(means)
    history.train_loss.append(means.pop("loss"))
    for name, value in means.items():
        history.terms.setdefault(name, []).append(value)
    return history.train_loss[-1]


def mean_loss(step: Callable[[Any], dict[str, Tensor]], batches: Iterable) -> float:
    """The mean per-example loss of ``step`` over ``batches``, without gradients."""
    total, count = 0.0, 0
    with torch.no_grad():
        for raw in batches:
            loss: Tensor = functools.reduce(operator.add, step(raw).values())
            total += float(loss.sum())
            count += loss.shape[0]
    if count == 0:
        raise ValueError("val_data gave no batch")
    return total / count


@contextlib.contextmanager
def evaluating(network: nn.Module | None) -> Iterator[None]:
    """``network`` in eval mode (batch norm statistics, no dropout), then back to its mode; a
    network built inside the block (None on entry) keeps the mode it was built in."""
    training = network.training if network is not None else False
    if network is not None:
        network.eval()
    try:
        yield
    finally:
        if network is not None:
            network.train(training)


@contextlib.contextmanager
def frozen(modules: list[nn.Module]) -> Iterator[None]:
    """No gradient reaches the classifier's parameters while the explainer trains: their
    ``requires_grad`` is switched off and restored, even if training raises."""
    parameters = [p for module in modules for p in module.parameters() if p.requires_grad]
    for parameter in parameters:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in parameters:
            parameter.requires_grad_(True)


__all__ = [
    "FitHistory",
    "TrainingState",
    "evaluating",
    "frozen",
    "mean_loss",
    "record_epoch",
    "train_epoch",
]
