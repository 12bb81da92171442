"""The one optimisation loop every per-example mask method runs on.

A method describes, for a slice of its batch, the mask parameters to optimise and a closure that
returns one loss and one target probability per example (:class:`MaskProblem`). The loop here owns
everything generic: ``torch.enable_grad()`` (Captum calls methods under ``no_grad``), gradients
with ``torch.autograd.grad`` w.r.t. the mask parameters only (the model's ``.grad`` is never
touched), the optimiser and step schedule, projection after each step, per-example early
stopping, chunking of the batch (``internal_batch_size``), the progress bar and the loss history.

Examples stay independent: the loss that is differentiated is the *sum* of per-example losses, and
Adam, RMSprop and SGD update each parameter element from its own gradient only, so an example's
result does not depend on which other examples share its batch or chunk. Early stopping keeps
that: each example stops on its own loss, leaves the batch (the objective is evaluated on the
examples still running, so a batch costs what its slowest example needs) and keeps its mask.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from captum_masks._engine.checks import map_batch
from captum_masks._engine.compat import progress
from captum_masks._engine.user_warnings import warn_user
from captum_masks.optimization import Optimization, OptimizationHistory


@dataclass(frozen=True)
class ExampleRows:
    """What an objective reads about the examples it scores, batch-first.

    Attributes:
        inputs (list of Tensor): the inputs, one tensor per input of the call.
        references (list of Tensor): what a deleted region becomes, one per input.
        targets (Tensor): the explained class of each example.
        additional_args (tuple or None): Captum's additional forward arguments of the examples.
        indices (Tensor): the examples' positions in the whole batch.
    """

    inputs: list[Tensor]
    references: list[Tensor]
    targets: Tensor
    additional_args: tuple | None
    indices: Tensor

    def take(self, rows: Tensor) -> ExampleRows:
        """The examples at positions ``rows`` of these."""
        count = self.indices.shape[0]
        return ExampleRows(
            [x[rows] for x in self.inputs],
            [r[rows] for r in self.references],
            self.targets[rows],
            map_batch(self.additional_args, count, lambda arg: arg[rows]),
            self.indices[rows],
        )


@dataclass
class MaskProblem:
    """The optimisation problem for one chunk of examples.

    Attributes:
        params: initial mask parameters, batch-first (copied; the copies are optimised).
        objective: ``objective(params, rows, step)`` maps the parameters of some examples,
            their :class:`ExampleRows` and the step index (0 first) to ``(loss, probability)``,
            both (n,): the per-example loss to minimise and the target probability to
            report.
        examples: the chunk's :class:`ExampleRows`; the loop passes the objective those of
            the examples still running.
        project: optional in-place projection applied to the parameters after every step
            (e.g. clipping to [0, 1]).
        values: optional map from parameters to each example's mask values in [0, 1], (n, K),
            which ``Optimization.settled`` watches; without it, the probability alone.
    """

    params: Sequence[Tensor]
    objective: Callable[[list[Tensor], ExampleRows, int], tuple[Tensor, Tensor]]
    examples: ExampleRows
    project: Callable[[Sequence[Tensor]], None] | None = None
    values: Callable[[Sequence[Tensor]], Tensor] | None = None


def optimize_masks(
    build_problem: Callable[[slice], MaskProblem],
    num_examples: int,
    settings: Optimization,
    description: str,
    warn_without_signal: bool = True,
) -> tuple[list[Tensor], OptimizationHistory]:
    """Optimise mask parameters for ``num_examples`` examples, chunk by chunk.

    Args:
        build_problem: given the slice of examples of a chunk, returns its :class:`MaskProblem`.
        num_examples: batch size N.
        settings: iterations, optimiser, schedule, early stopping, chunking and progress, every
            field resolved.
        description: the progress bar's label.
        warn_without_signal: warn about examples whose target probability stays near 0 and
            never moves (off for an objective that does not score the target).

    Returns:
        The optimised parameters (each concatenated over chunks, detached) and the history.
    """
    chunk = settings.internal_batch_size or num_examples
    slices = [
        slice(start, min(start + chunk, num_examples)) for start in range(0, num_examples, chunk)
    ]
    bar = (
        progress(desc=description, total=settings.n_iter * len(slices))
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
    if warn_without_signal:
        _warn_without_signal(probability)
    return params, OptimizationHistory(loss=loss, probability=probability, steps=steps)


#: a target probability below this at every step, that moved by less than SIGNAL_SPREAD, gave the
#: optimisation (almost) no gradient
SIGNAL_FLOOR = 1e-2
SIGNAL_SPREAD = 1e-3


def _warn_without_signal(probability: Tensor) -> None:
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
    problem: MaskProblem, settings: Optimization, bar: Any
) -> tuple[list[Tensor], tuple[Tensor, Tensor, Tensor]]:
    params = [p.detach().clone().requires_grad_(True) for p in problem.params]
    count = params[0].shape[0]
    optimizer = settings.make_optimizer(params)
    scheduler = settings.scheduler(optimizer) if settings.scheduler is not None else None
    stopping = _PerExampleStopping(count, settings, params[0].device)
    best = _LowestLoss(params) if settings.keep_best else None
    losses: list[Tensor] = []
    probabilities: list[Tensor] = []
    for step in range(settings.n_iter):
        rows = stopping.running_rows()  # None while every example runs
        if rows is None:
            loss, probability = problem.objective(params, problem.examples, step)
        else:
            running = [p[rows] for p in params]
            loss, probability = problem.objective(running, problem.examples.take(rows), step)
            stopped_values = [p.detach().clone() for p in params]
        if best is not None:
            best.offer(params, loss.detach(), rows)
        grads = torch.autograd.grad(loss.sum(), params)
        for param, grad in zip(params, grads):
            param.grad = grad
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        with torch.no_grad():
            if problem.project is not None:
                problem.project(params)
            if rows is not None:  # the optimiser's momentum must not move a stopped example
                for param, kept in zip(params, stopped_values):
                    param[stopping.stopped] = kept[stopping.stopped]
        losses.append(stopping.full_row(loss.detach(), rows))
        probabilities.append(stopping.full_row(probability.detach(), rows))
        if bar is not None:
            bar.update()
        if stopping.settled is not None:
            with torch.no_grad():
                watched = probability.detach().unsqueeze(1)
                if problem.values is not None:  # the values the step has just made
                    running = params if rows is None else [p[rows] for p in params]
                    watched = torch.cat([watched, problem.values(running)], dim=1)
            stopping.watch(watched, rows)
        if stopping.update(losses[-1]):
            if bar is not None:
                bar.update(settings.n_iter - len(losses))
            break
    loss_history = _pad_rows(torch.stack(losses), settings.n_iter)
    probability_history = _pad_rows(torch.stack(probabilities), settings.n_iter)
    result = params if best is None else best.params
    return [p.detach() for p in result], (loss_history, probability_history, stopping.steps)


class _LowestLoss:
    """Each example's parameters at the step of its lowest loss so far."""

    def __init__(self, params: Sequence[Tensor]) -> None:
        self.params = [p.detach().clone() for p in params]
        self.loss = params[0].new_full((params[0].shape[0],), torch.inf)

    def offer(self, params: Sequence[Tensor], loss: Tensor, rows: Tensor | None) -> None:
        """Every example's ``params`` before this step, whose loss is ``loss`` for the examples
        at ``rows`` (all when None)."""
        with torch.no_grad():
            rows = torch.arange(len(self.loss), device=loss.device) if rows is None else rows
            lower = loss < self.loss[rows]
            chosen = rows[lower]
            self.loss[chosen] = loss[lower]
            for kept, current in zip(self.params, params):
                kept[chosen] = current[chosen]


class _PerExampleStopping:
    """Which examples of a chunk still run: one stops when its loss has not fallen below its best
    by more than ``tolerance`` × abs(best) for ``patience`` steps (never without a tolerance). The
    tolerance is relative so that one value fits losses of any scale. With ``settled``, one also
    stops when, for ``patience`` steps, neither its target probability nor any value of its mask
    has moved by more than ``settled`` from where they were when the count began."""

    def __init__(self, count: int, settings: Optimization, device: torch.device) -> None:
        self.tolerance, self.patience = settings.tolerance, settings.patience
        self.settled = settings.settled
        self.stopped = torch.zeros(count, dtype=torch.bool, device=device)
        self.steps = torch.zeros(count, dtype=torch.long, device=device)
        self.stale = torch.zeros(count, dtype=torch.long, device=device)
        self.still = torch.zeros(count, dtype=torch.long, device=device)
        self.best: Tensor | None = None
        # (count, K): the values each example's count of still steps began at
        self.anchor: Tensor | None = None

    def watch(self, values: Tensor, rows: Tensor | None) -> None:
        """Count a still step for the running examples whose ``values`` (n, K) lie within
        ``settled`` of their anchor; the others start again from these values."""
        assert self.settled is not None
        rows = torch.arange(len(self.stopped), device=values.device) if rows is None else rows
        if self.anchor is None:
            self.anchor = values.new_full((len(self.stopped), values.shape[1]), torch.inf)
        within = (values - self.anchor[rows]).abs().amax(dim=1) <= self.settled
        self.still[rows] = torch.where(within, self.still[rows] + 1, 0)
        self.anchor[rows[~within]] = values[~within]

    def running_rows(self) -> Tensor | None:
        return (~self.stopped).nonzero().flatten() if bool(self.stopped.any()) else None

    def full_row(self, values: Tensor, rows: Tensor | None) -> Tensor:
        """One value per example of the chunk: NaN for the stopped ones."""
        if rows is None:
            return values
        row = values.new_full(self.stopped.shape, float("nan"))
        row[rows] = values
        return row

    def update(self, loss: Tensor) -> bool:
        """Count the step for the running examples; True when none is left running."""
        running = ~self.stopped
        self.steps += running.long()
        if self.settled is not None:
            self.stopped |= self.still >= self.patience
        if self.tolerance is None:
            return bool(self.stopped.all())
        if self.best is None:
            self.best = loss.clone()
            return False
        # False for the stopped (NaN) ones
        improved = loss < self.best - self.tolerance * self.best.abs()
        self.best = torch.where(running, torch.minimum(self.best, loss), self.best)
        self.stale = torch.where(improved, 0, self.stale + running.long())
        self.stopped |= self.stale >= self.patience
        return bool(self.stopped.all())


def _pad_rows(rows: Tensor, total: int) -> Tensor:
    missing = total - rows.shape[0]
    if missing == 0:
        return rows
    return torch.cat([rows, rows.new_full((missing, rows.shape[1]), float("nan"))])


__all__ = [
    "ExampleRows",
    "MaskProblem",
    "optimize_masks",
]
