"""What every mask method shares around the optimisation loop.

:class:`MaskAttribution` validates the call and runs the clean forward pass once (to pick the
predicted class and to check targets against the real output shape). :func:`mask_attribute`
wraps every ``attribute``: Captum's usage log, a clear error for a moved keyword, and the
model-state guard. :class:`PreparedCall` keeps the mixed-precision discipline in one place: masks,
references and losses are computed in the work dtype (float32 for half-precision inputs), the model
is called in the input's own dtype.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from captum.attr import PerturbationAttribution
from captum.log import log_usage
from torch import Tensor

from captum_masks._engine.checks import resolve_targets, run_forward
from captum_masks._engine.compat import _format_additional_forward_args, _format_output
from captum_masks._engine.layout import MaskLayout
from captum_masks._engine.loop import ExampleRows
from captum_masks._engine.model_state import leaves_model_as_found
from captum_masks._engine.model_structure import patch_size_of
from captum_masks._engine.warm_start import warm_started
from captum_masks.optimization import FIELDS, Optimization
from captum_masks.perturbations import BaselineValue, Perturbation, resolve_perturbation


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype masks, optimiser state and losses use for inputs of ``dtype``: float16 and
    bfloat16 are promoted to float32 (as mixed precision does), float32 and float64 stay."""
    return torch.promote_types(dtype, torch.float32)


@dataclass
class PreparedCall:
    """A validated call: inputs as a tuple, formatted extra arguments and (N, K) target indices.

    ``inputs`` keep the caller's dtype; ``work_inputs`` are the same tensors in the work dtype.
    """

    forward_func: Callable
    inputs: tuple[Tensor, ...]
    is_inputs_tuple: bool
    additional_args: tuple | None
    targets: Tensor
    clean_output: Tensor

    @property
    def num_examples(self) -> int:
        return self.inputs[0].shape[0]

    @property
    def device(self) -> torch.device:
        return self.inputs[0].device

    @property
    def work_dtype(self) -> torch.dtype:
        return work_dtype(self.inputs[0].dtype)

    @property
    def work_inputs(self) -> tuple[Tensor, ...]:
        return tuple(x.to(self.work_dtype) for x in self.inputs)

    def examples(
        self, batch: slice, inputs: Sequence[Tensor], references: Sequence[Tensor]
    ) -> ExampleRows:
        """The examples in ``batch``: their rows of ``inputs`` and ``references`` (one per input,
        in the method's working form), targets, additional arguments and positions."""
        positions = torch.arange(self.num_examples, device=self.device)
        everyone = ExampleRows(
            list(inputs), list(references), self.targets, self.additional_args, positions
        )
        return everyone.take(positions[batch])

    def result(self, attributions: Sequence[Tensor], history: Any, return_history: bool) -> Any:
        """Captum's output form (a tensor for a tensor input, a tuple for a tuple), with the
        history when asked for."""
        formatted = _format_output(self.is_inputs_tuple, tuple(attributions))
        return (formatted, history) if return_history else formatted

    def forward(self, perturbed: Sequence[Tensor], args: tuple | None) -> Tensor:
        """The model's scores for perturbed inputs: each is cast to its input's dtype (the model
        runs as the caller runs it), the scores come back in the work dtype."""
        cast = [p.to(x.dtype) for p, x in zip(perturbed, self.inputs)]
        return run_forward(self.forward_func, cast, args).to(self.work_dtype)


class MaskAttribution(PerturbationAttribution):
    """Base class of the mask methods: a Captum ``PerturbationAttribution`` whose attributions
    are masks in [0, 1] with the input's shape (never multiplied by the input).

    Attributes:
        default_optimization (Optimization): an optimising method's loop settings; the fields a
            call's ``optimization`` leaves unset take these.
        warm_optimization (Optimization): the fields that differ when the mask starts warm
            (``Optimization.start``): a mask that starts near the answer needs fewer steps.
        moved_arguments (dict): old keyword names and the spelling that replaced them, for the
            ``TypeError`` a call with one raises.
    """

    default_optimization: ClassVar[Optimization | None] = None
    warm_optimization: ClassVar[Optimization] = Optimization()
    moved_arguments: ClassVar[dict[str, str]] = {}

    def __init__(self, forward_func: Callable) -> None:
        if not callable(forward_func):
            raise TypeError(f"forward_func must be callable, got {type(forward_func).__name__}")
        super().__init__(forward_func)

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    def _perturbation(
        self,
        perturbation: str | Perturbation | None,
        inputs: Sequence[Tensor],
        baselines: Sequence[BaselineValue],
        by_name: Mapping[str, Perturbation],
    ) -> Perturbation:
        """:func:`~captum_masks.perturbations.resolve_perturbation` for this method's model: on a
        vision transformer, a default blur covers at least a patch."""
        patch = patch_size_of(self.forward_func)
        return resolve_perturbation(perturbation, inputs, baselines, by_name, patch=patch)

    def _optimization(self, optimization: Optimization | None) -> Optimization:
        """The call's loop settings: ``optimization``'s fields over the method's defaults."""
        defaults = self.default_optimization
        assert defaults is not None, f"{type(self).__name__} declares no default_optimization"
        if optimization is None:
            return defaults
        if not isinstance(optimization, Optimization):
            raise TypeError(
                "optimization must be a captum_masks.Optimization (e.g. "
                f"Optimization(n_iter=50)) or None, got {type(optimization).__name__}"
            )
        return optimization.over(defaults)

    def _started(
        self,
        optimization: Optimization | None,
        masks: Any,
        call: PreparedCall,
        layout: MaskLayout,
        keeps: bool,
    ) -> tuple[Optimization, Any]:
        """The call's loop settings and ``masks`` with their start: a warm start's masks and
        :attr:`warm_optimization` under the caller's fields, or, without one (``start=None``,
        or ``"auto"`` where the call has no Grad-CAM), the cold settings and ``masks``."""
        settings = self._optimization(optimization)
        started = None
        if settings.start is not None:
            started = warm_started(masks, settings.start, call, layout, keeps)
        if started is None:
            return dataclasses.replace(settings, start=None), masks
        warm_defaults = self.warm_optimization.over(self._optimization(None))
        return (optimization or Optimization()).over(warm_defaults), started

    def _prepare(
        self,
        inputs: Any,
        formatted: tuple[Tensor, ...],
        target: Any,
        additional_forward_args: Any,
    ) -> PreparedCall:
        """Run the clean forward pass on the ``formatted`` inputs (the method checked them with
        :func:`format_inputs`, and its own options, before the model runs) and resolve the
        targets against its output; ``inputs`` as the caller gave them, for the output's form."""
        additional_args = _format_additional_forward_args(additional_forward_args)
        with torch.no_grad():
            clean_output = run_forward(self.forward_func, formatted, additional_args)
        targets = resolve_targets(target, clean_output)
        return PreparedCall(
            self.forward_func,
            formatted,
            isinstance(inputs, tuple),
            additional_args,
            targets,
            clean_output,
        )


def mask_attribute(attribute: Callable) -> Callable:
    """Decorate a method's ``attribute``: Captum's usage log (``NoiseTunnel`` calls
    ``attribute.__wrapped__``, the function under it), a ``TypeError`` that shows the new
    spelling of a moved keyword, and :func:`leaves_model_as_found`."""

    @functools.wraps(attribute)
    def checked(self: MaskAttribution, *args: Any, **kwargs: Any) -> Any:
        reject_moved_keywords(self, kwargs)
        return attribute(self, *args, **kwargs)

    return log_usage()(leaves_model_as_found(checked))


def reject_moved_keywords(method: Any, kwargs: Mapping[str, Any]) -> None:
    """A ``TypeError`` that shows the new spelling of a keyword that moved into a settings
    object (``n_iter=`` into ``optimization=Optimization(n_iter=...)``); nothing for other
    keywords, which Python checks as usual, nor for a method that is not a mask method."""
    if not isinstance(method, MaskAttribution):
        return
    own = set(inspect.signature(type(method).attribute).parameters)
    for name in kwargs:
        if name in own:
            continue
        spelling = method.moved_arguments.get(name)
        if spelling is None and "optimization" in own and name in FIELDS:
            spelling = f"optimization=Optimization({name}=...)"
        if spelling is not None:
            raise TypeError(
                f"{type(method).__name__}.attribute() takes no argument {name!r} any more: "
                f"pass {spelling}"
            )


__all__ = [
    "MaskAttribution",
    "PreparedCall",
    "mask_attribute",
    "reject_moved_keywords",
    "work_dtype",
]
