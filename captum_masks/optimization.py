"""How an optimising method runs its loop (:class:`Optimization`) and what the loop records
(:class:`OptimizationHistory`)."""

from __future__ import annotations

import dataclasses
import functools
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from captum_masks._engine.checks import (
    check_bool,
    check_positive,
    check_positive_int,
    check_seed,
    check_start,
)

if TYPE_CHECKING:
    from captum_masks.masks.low_resolution import LowResolutionMask

OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "rmsprop": torch.optim.RMSprop,
    "sgd": torch.optim.SGD,
}

OptimizerType = str | Callable[[list[Tensor], float], torch.optim.Optimizer]
SchedulerType = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler] | None


class _MethodDefault:
    """The value of a field left unset: the method's own default applies."""

    def __repr__(self) -> str:
        return "<method default>"

    def __reduce__(self) -> str:
        return "METHOD_DEFAULT"  # one object, also after pickling (explain_dataset's workers)


#: an :class:`Optimization` field left unset; typed Any so each field keeps its own type
METHOD_DEFAULT: Any = _MethodDefault()


@dataclass(frozen=True)
class Optimization:
    r"""How an optimising method runs its loop: where it starts, iterations, optimiser,
    schedule, early stopping, chunking, progress and the call's randomness. One object for every
    method (:class:`~captum_masks.MeaningfulPerturbation`, :class:`~captum_masks.NeuroMaskAttr`,
    :class:`~captum_masks.ExtremalPerturbation`, :class:`~captum_masks.GuidedFeatureInversion`),
    passed as ``attribute(..., optimization=Optimization(...))``. A field left unset takes the
    method's own default, listed in its ``default_optimization`` and in its docstring, so
    ``Optimization(n_iter=50)`` changes the iterations and nothing else.

    Examples stay independent whatever these settings: the loop differentiates the sum of
    per-example losses, and each example stops on its own loss, so a batch gives the masks of
    one-by-one calls and ``internal_batch_size`` never changes a result.

    Args:
        start (str, Tensor, AmortizedExplainer or None, optional): a warm start for the mask
            (:class:`~captum_masks.MeaningfulPerturbation`,
            :class:`~captum_masks.NeuroMaskAttr`, :class:`~captum_masks.ExtremalPerturbation`):
            None is the method's own start; ``"gradcam"`` Grad-CAM of the target at the model's
            last feature map (the last module whose output has the input's spatial axes; one
            forward and one backward pass); ``"auto"`` Grad-CAM where the call has it (a
            model in eval mode with such a feature map, not a vision transformer's patch
            embedding), else the method's own start; a fitted
            :class:`~captum_masks.AmortizedExplainer` or any object with
            ``attribute(inputs, target=...)`` (a Captum method), whose map is taken; or a map
            of importance with the input's shape or without its channel axis (e.g. another
            method's attribution). The map, scaled by each example's maximum, is averaged over
            each cell of the mask, which starts keeping it (or, in a deletion game, deleting
            it). One input tensor, without ``feature_mask``. A warm start
            replaces the mask's own start, and the fields left unset take the method's
            ``warm_optimization`` (fewer iterations) over its ``default_optimization``.
            :class:`~captum_masks.GuidedFeatureInversion`, whose mask combines its layer's
            feature maps, takes None and ``"auto"`` (both its own start).
        n_iter (int, optional): the most optimisation steps an example runs (fewer once it
            stops early, see ``tolerance``).
        lr (float, optional): the learning rate, > 0.
        optimizer (str or callable, optional): ``"adam"``, ``"rmsprop"``, ``"sgd"`` or a
            callable ``(params, lr) -> torch.optim.Optimizer``.
        scheduler (callable or None, optional): ``optimizer -> scheduler`` (e.g.
            ``functools.partial(torch.optim.lr_scheduler.StepLR, step_size=100, gamma=0.5)``),
            stepped once per iteration; None keeps ``lr`` constant.
        tolerance (float or None, optional): early stopping, per example: an example stops once
            its loss has not fallen below its best by more than ``tolerance`` times the best's
            magnitude for ``patience`` steps (relative, so one value fits any loss scale), and
            leaves the batch with the mask it had; ``history.steps`` holds each example's own
            count. None runs all ``n_iter`` steps.
        settled (float or None, optional): early stopping once an example has settled: it
            stops when, for ``patience`` steps, neither its target probability nor any value
            of its mask (in [0, 1]) has moved by more than ``settled``; after a warm start near
            the answer that is a few steps. Guided Feature Inversion, whose parameters are
            channel weights, watches the probability alone. None turns it off.
        patience (int, optional): see ``tolerance`` and ``settled``.
        keep_best (bool, optional): return each example's mask at the step of its lowest
            loss instead of its last step. The last step can have crossed a step in the
            model's score (flat on both sides, as a saturated text transformer's is in a
            token's embedding), where no later gradient leads back.
        internal_batch_size (int or None, optional): optimise at most this many examples at a
            time to bound memory; None optimises the whole batch at once.
        show_progress (bool, optional): a progress bar over the iterations.
        seed (int, optional): seed of the call's own random generators (jitter, noise, initial
            weights); an example draws the same numbers alone or in any batch, and the global
            RNG is never used nor changed.

    Examples::

        >>> from captum_masks import MeaningfulPerturbation, Optimization
        >>> mp = MeaningfulPerturbation(model)
        >>> quick = mp.attribute(images, target=3, optimization=Optimization(n_iter=50))
        >>> paper = mp.attribute(images, target=3, optimization=Optimization(tolerance=None))
        >>> warm = mp.attribute(images, target=3, optimization=Optimization(start="gradcam"))
        >>> MeaningfulPerturbation.default_optimization.n_iter   # from its own start
        300
        >>> MeaningfulPerturbation.warm_optimization.n_iter      # from Grad-CAM's map
        12
    """

    start: Any = METHOD_DEFAULT
    n_iter: int = METHOD_DEFAULT
    lr: float = METHOD_DEFAULT
    optimizer: OptimizerType = METHOD_DEFAULT
    scheduler: SchedulerType = METHOD_DEFAULT
    tolerance: float | None = METHOD_DEFAULT
    settled: float | None = METHOD_DEFAULT
    patience: int = METHOD_DEFAULT
    keep_best: bool = METHOD_DEFAULT
    internal_batch_size: int | None = METHOD_DEFAULT
    show_progress: bool = METHOD_DEFAULT
    seed: int = METHOD_DEFAULT

    def __post_init__(self) -> None:
        for name, value in self.given().items():
            _check_field(name, value)

    def given(self) -> dict[str, Any]:
        """The fields that were set, by name."""
        return {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if getattr(self, field.name) is not METHOD_DEFAULT
        }

    def over(self, defaults: Optimization) -> Optimization:
        """These settings, with ``defaults``' value for every field left unset."""
        return dataclasses.replace(defaults, **self.given())

    def make_optimizer(self, params: list[Tensor]) -> torch.optim.Optimizer:
        """The optimiser over ``params`` (all fields resolved)."""
        if isinstance(self.optimizer, str):
            return OPTIMIZERS[self.optimizer](params, lr=self.lr)
        return self.optimizer(params, self.lr)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self.given().items())
        return f"Optimization({fields})"


def _check_field(name: str, value: Any) -> None:
    if name in ("n_iter", "patience"):
        check_positive_int(name, value)
    elif name == "internal_batch_size":
        check_positive_int(name, value, allow_none=True)
    elif name == "lr":
        check_positive(name, value)
    elif name == "optimizer":
        if isinstance(value, str) and value not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {sorted(OPTIMIZERS)} or a callable "
                f"(params, lr) -> torch.optim.Optimizer, got {value!r}"
            )
        if not isinstance(value, str) and not callable(value):
            raise TypeError(f"optimizer must be a string or a callable, got {value!r}")
    elif name == "scheduler":
        if value is not None and not callable(value):
            raise TypeError(
                f"scheduler must be None or a callable optimizer -> scheduler, got {value!r}"
            )
    elif name in ("tolerance", "settled"):
        if value is not None and not (
            isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value) >= 0
        ):
            raise ValueError(f"{name} must be None or a number >= 0, got {value!r}")
    elif name in ("show_progress", "keep_best"):
        check_bool(name, value)
    elif name == "seed":
        check_seed(value)
    elif name == "start":
        check_start(value)


#: the fields every method shares unless it says otherwise
SHARED_DEFAULTS = Optimization(
    start=None,
    optimizer="adam",
    scheduler=None,
    tolerance=None,
    settled=None,
    patience=10,
    keep_best=False,
    internal_batch_size=None,
    show_progress=False,
    seed=0,
)

FIELDS = tuple(field.name for field in dataclasses.fields(Optimization))


def halving_every(steps: int) -> SchedulerType:
    """A scheduler factory that halves the learning rate every ``steps`` iterations."""
    check_positive_int("steps", steps)
    return functools.partial(torch.optim.lr_scheduler.StepLR, step_size=steps, gamma=0.5)


@dataclass
class OptimizationHistory:
    """Per-step record of an optimisation, one column per example.

    Attributes:
        loss (Tensor): (n_iter, N) loss of each example before each step.
        probability (Tensor): (n_iter, N) the explained class's probability before each step.
        steps (Tensor): (N,) steps each example ran; its rows at or past that are NaN (it
            stopped early).
        low_resolution (tuple of LowResolutionMask, optional): the final masks, one per input,
            in the low-resolution form the method optimised them in, from which
            :meth:`~captum_masks.LowResolutionMask.expand` recomputes the attributions; None
            for a method or call without one (a pixel-level mask, feature groups).
    """

    loss: Tensor
    probability: Tensor
    steps: Tensor
    low_resolution: tuple[LowResolutionMask, ...] | None = None

    def followed_by(self, later: OptimizationHistory) -> OptimizationHistory:
        """One history of two optimisations run one after the other (e.g. two stages)."""
        return OptimizationHistory(
            torch.cat([self.loss, later.loss]),
            torch.cat([self.probability, later.probability]),
            self.steps + later.steps,
        )


__all__ = [
    "FIELDS",
    "METHOD_DEFAULT",
    "OPTIMIZERS",
    "Optimization",
    "OptimizationHistory",
    "SHARED_DEFAULTS",
    "halving_every",
]
