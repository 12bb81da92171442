"""The one optimisation loop every per-example mask method runs on.

A method describes, for a slice of its batch, the mask parameters to optimise and a closure that
returns one loss and one target probability per example (:class:`MaskProblem`). The loop here owns
everything generic: ``torch.enable_grad()`` (Captum calls methods under ``no_grad``), gradients
with ``torch.autograd.grad`` w.r.t. the mask parameters only (the model's ``.grad`` is never
touched), the optimiser and step schedule, projection after each step, early stopping, chunking of
the batch (``internal_batch_size``), the progress bar and the loss history.

Examples stay independent: the loss that is differentiated is the *sum* of per-example losses, and
Adam, RMSprop and SGD update each parameter element from its own gradient only, so an example's
result does not depend on which other examples share its batch or chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from captum_masks._compat import progress
from captum_masks._inputs import check_positive_int
from captum_masks._warnings import warn_user

OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "rmsprop": torch.optim.RMSprop,
    "sgd": torch.optim.SGD,
}

OptimizerType = str | Callable[[list[Tensor], float], torch.optim.Optimizer]
SchedulerType = Callable[[torch.optim.Optimizer], object] | None


@dataclass
class MaskProblem:
    """The optimisation problem for one chunk of examples.

    Attributes:
        params: initial mask parameters, batch-first (copied; the copies are optimised).
        objective: maps the current parameters to ``(loss, probability)``, both shape (n,): the
            per-example loss to minimise and the per-example target probability to report.
        project: optional in-place projection applied to the parameters after every step
            (e.g. clipping to [0, 1]).
    """

    params: Sequence[Tensor]
    objective: Callable[[Sequence[Tensor]], tuple[Tensor, Tensor]]
    project: Callable[[Sequence[Tensor]], None] | None = None


@dataclass
class OptimizationHistory:
    """Per-step record of an optimisation, one column per example.

    Attributes:
        loss (Tensor): (n_iter, N) loss of each example before each step.
        probability (Tensor): (n_iter, N) the explained class's probability before each step.
        steps (Tensor): (N,) steps each example ran; rows at or past it are NaN (early stop).
    """

    loss: Tensor
    probability: Tensor
    steps: Tensor

    def followed_by(self, later: OptimizationHistory) -> OptimizationHistory:
        """One history of two optimisations run one after the other (e.g. two stages)."""
        return OptimizationHistory(
            torch.cat([self.loss, later.loss]),
            torch.cat([self.probability, later.probability]),
            self.steps + later.steps,
        )


@dataclass(frozen=True)
class OptimizationSettings:
    """How :func:`optimize_masks` runs: see the method docstrings for each argument."""

    n_iter: int
    lr: float
    optimizer: OptimizerType = "adam"
    scheduler: SchedulerType = None
    tolerance: float | None = None
    patience: int = 10
    internal_batch_size: int | None = None
    show_progress: bool = False
    progress_desc: str = "Mask optimisation"
    #: warn about examples whose target probability stays near 0 and never moves
    warn_without_signal: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_positive_int("n_iter", self.n_iter)
        if not isinstance(self.lr, (int, float)) or isinstance(self.lr, bool) or self.lr <= 0:
            raise ValueError(f"lr must be a number > 0, got {self.lr!r}")
        if isinstance(self.optimizer, str) and self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {sorted(OPTIMIZERS)} or a callable "
                f"(params, lr) -> torch.optim.Optimizer, got {self.optimizer!r}"
            )
        if not isinstance(self.optimizer, str) and not callable(self.optimizer):
            raise TypeError(f"optimizer must be a string or a callable, got {self.optimizer!r}")
        if self.tolerance is not None and not self.tolerance >= 0:
            raise ValueError(f"tolerance must be None or >= 0, got {self.tolerance!r}")
        check_positive_int("patience", self.patience)
        check_positive_int("internal_batch_size", self.internal_batch_size, allow_none=True)

    def make_optimizer(self, params: list[Tensor]) -> torch.optim.Optimizer:
        if isinstance(self.optimizer, str):
            return OPTIMIZERS[self.optimizer](params, lr=self.lr)
        return self.optimizer(params, self.lr)


def optimize_masks(
    build_problem: Callable[[slice], MaskProblem],
    num_examples: int,
    settings: OptimizationSettings,
) -> tuple[list[Tensor], OptimizationHistory]:
    """Optimise mask parameters for ``num_examples`` examples, chunk by chunk.

    Args:
        build_problem: given the slice of examples of a chunk, returns its :class:`MaskProblem`.
        num_examples: batch size N.
        settings: iterations, optimiser, schedule, early stopping, chunking and progress.

    Returns:
        The optimised parameters (each concatenated over chunks, detached) and the history.
    """
    chunk = settings.internal_batch_size or num_examples
    slices = [
        slice(start, min(start + chunk, num_examples)) for start in range(0, num_examples, chunk)
    ]
    bar = (
        progress(desc=settings.progress_desc, total=settings.n_iter * len(slices))
        if settings.show_progress
        else None
    )
    results: list[list[Tensor]] = []
    histories: list[tuple[Tensor, Tensor, Tensor]] = []
    try:
        with torch.enable_grad():
            for batch in slices:
                params, history = _optimize_chunk(build_problem(batch), settings, bar)
                results.append(params)
                histories.append(history)
    finally:
        if bar is not None:
            bar.close()
    params = [torch.cat(parts) for parts in zip(*results)]
    loss, probability, steps = (torch.cat(parts, dim=-1) for parts in zip(*histories))
    if settings.warn_without_signal:
        warn_without_signal(probability)
    return params, OptimizationHistory(loss=loss, probability=probability, steps=steps)


#: a target probability below this at every step, that moved by less than SIGNAL_SPREAD, gave the
#: optimisation (almost) no gradient
SIGNAL_FLOOR = 1e-2
SIGNAL_SPREAD = 1e-3


def warn_without_signal(probability: Tensor) -> None:
    """Warn about the examples whose target probability (a (steps, N) history, NaN after an early
    stop) stayed below ``SIGNAL_FLOOR`` and moved by less than ``SIGNAL_SPREAD``: their masks
    reflect the regularisers, not the model."""
    ran = ~torch.isnan(probability)
    highest = probability.masked_fill(~ran, -torch.inf).amax(dim=0)
    lowest = probability.masked_fill(~ran, torch.inf).amin(dim=0)
    silent = (lowest >= 0) & (highest < SIGNAL_FLOOR) & (highest - lowest < SIGNAL_SPREAD)
    if bool(silent.any()):
        examples = silent.nonzero().flatten().tolist()
        warn_user(
            f"the target's probability stayed below {SIGNAL_FLOOR} and never moved during the "
            f"optimisation for example(s) {examples}, so their masks say nothing about the model. "
            "Check that target is the class you mean (target=None explains the predicted "
            "class), and that apply_softmax matches what forward_func returns (True for logits, "
            "False for probabilities)."
        )


def _optimize_chunk(
    problem: MaskProblem, settings: OptimizationSettings, bar
) -> tuple[list[Tensor], tuple[Tensor, Tensor, Tensor]]:
    params = [p.detach().clone().requires_grad_(True) for p in problem.params]
    optimizer = settings.make_optimizer(params)
    scheduler = settings.scheduler(optimizer) if settings.scheduler is not None else None
    losses: list[Tensor] = []
    probabilities: list[Tensor] = []
    best = None
    stale_steps = 0
    for _ in range(settings.n_iter):
        loss, probability = problem.objective(params)
        grads = torch.autograd.grad(loss.sum(), params)
        for param, grad in zip(params, grads):
            param.grad = grad
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if problem.project is not None:
            with torch.no_grad():
                problem.project(params)
        loss, probability = loss.detach(), probability.detach()
        losses.append(loss)
        probabilities.append(probability)
        if bar is not None:
            bar.update()
        if settings.tolerance is not None:
            improved = best is None or bool((loss < best - settings.tolerance).any())
            best = loss if best is None else torch.minimum(best, loss)
            stale_steps = 0 if improved else stale_steps + 1
            if stale_steps >= settings.patience:
                if bar is not None:
                    bar.update(settings.n_iter - len(losses))
                break
    steps_run = len(losses)
    loss_history = _pad_rows(torch.stack(losses), settings.n_iter)
    probability_history = _pad_rows(torch.stack(probabilities), settings.n_iter)
    steps = torch.full((loss.shape[0],), steps_run, dtype=torch.long, device=loss.device)
    return [p.detach() for p in params], (loss_history, probability_history, steps)


def _pad_rows(rows: Tensor, total: int) -> Tensor:
    missing = total - rows.shape[0]
    if missing == 0:
        return rows
    return torch.cat([rows, rows.new_full((missing, rows.shape[1]), float("nan"))])


__all__ = [
    "OPTIMIZERS",
    "MaskProblem",
    "OptimizationHistory",
    "OptimizationSettings",
    "optimize_masks",
    "warn_without_signal",
]
