"""What every mask method shares around the optimisation loop.

:class:`MaskAttribution` validates the call and runs the clean forward pass once (to pick the
predicted class and to check targets against the real output shape). :func:`leaves_model_as_found`
wraps every ``attribute``: the caller's global random state and the model's buffers (batch norm
statistics of a model in training mode) are the same after the call as before it, even when the
call raises. :class:`PreparedCall` keeps the mixed-precision discipline in one place: masks,
references and losses are computed in the work dtype (float32 for half-precision inputs), the model
is called in the input's own dtype.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from captum.attr import PerturbationAttribution
from torch import Tensor, nn

from captum_masks._compat import _format_additional_forward_args, _format_output
from captum_masks._inputs import format_inputs, resolve_targets, run_forward
from captum_masks._optimize import ExampleRows
from captum_masks._warnings import warn_user


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
    are masks in [0, 1] with the input's shape (never multiplied by the input)."""

    def __init__(self, forward_func: Callable) -> None:
        if not callable(forward_func):
            raise TypeError(f"forward_func must be callable, got {type(forward_func).__name__}")
        super().__init__(forward_func)

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    def _prepare(
        self,
        inputs: Any,
        target: Any,
        additional_forward_args: Any,
        spatial_dims: int | tuple[int, ...] | None = None,
        masked: bool = True,
        formatted: tuple[Tensor, ...] | None = None,
    ) -> PreparedCall:
        """Validate the call and run the clean forward pass; ``formatted`` is
        :func:`format_inputs`'s result when the method already checked the inputs with it
        (to validate its own options before the model runs), so they are not checked twice."""
        is_inputs_tuple = isinstance(inputs, tuple)
        if formatted is None:
            formatted = format_inputs(inputs, spatial_dims, masked)
        additional_args = _format_additional_forward_args(additional_forward_args)
        with torch.no_grad():
            clean_output = run_forward(self.forward_func, formatted, additional_args)
        targets = resolve_targets(target, clean_output)
        return PreparedCall(
            self.forward_func, formatted, is_inputs_tuple, additional_args, targets, clean_output
        )


def modules_of(forward_func: Callable) -> list[nn.Module]:
    """The ``nn.Module`` objects behind ``forward_func``: the module itself, the module of a bound
    method (``model.forward``), of a ``functools.partial``, or held in a closure
    (``lambda x: model(x)`` inside a function)."""
    if isinstance(forward_func, nn.Module):
        return [forward_func]
    owner = getattr(forward_func, "__self__", None)
    if isinstance(owner, nn.Module):
        return [owner]
    if isinstance(forward_func, functools.partial):
        return modules_of(forward_func.func)
    cells = getattr(forward_func, "__closure__", None) or ()
    found = []
    for cell in cells:
        try:
            content = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if isinstance(content, nn.Module):
            found.append(content)
    return found


@contextlib.contextmanager
def restored_buffers(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Put every buffer of ``modules`` back as it was on exit, values and objects alike: a model in
    training mode updates its batch norm statistics on every forward pass."""
    saved = [
        (module, name, buffer, buffer.detach().clone())
        for model in modules
        for module in model.modules()
        for name, buffer in module._buffers.items()
        if buffer is not None
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for module, name, buffer, values in saved:
                module._buffers[name] = buffer
                buffer.copy_(values)


#: layers whose output depends on the training flag (a bare module that was never put in eval
#: mode, with none of these, computes the same either way and is not warned about)
MODE_DEPENDENT = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._NormBase)


def warn_if_training(modules: Sequence[nn.Module], what: str) -> None:
    """One warning when a dropout or batch norm layer of ``modules`` is in training mode."""
    layers = (m for model in modules for m in model.modules())
    if any(m.training and isinstance(m, MODE_DEPENDENT) for m in layers):
        warn_user(
            f"{what} is in training mode: dropout makes every step's objective random and batch "
            "norm normalises with the perturbed batch's statistics. Its buffers are restored "
            "after the call; call model.eval() first unless this is what you want."
        )


@contextlib.contextmanager
def preserved_rng_state(device: torch.device) -> Iterator[None]:
    """Restore the global CPU (and, for accelerator inputs, device) RNG state on exit."""
    devices = [device.index if device.index is not None else 0] if device.type != "cpu" else []
    device_type = device.type if device.type != "cpu" else "cuda"
    with torch.random.fork_rng(devices=devices, device_type=device_type):
        yield


@contextlib.contextmanager
def seeded_global_rng(seed: int, cuda_devices: Sequence[int] = ()) -> Iterator[None]:
    """Run code that can only draw from the global RNG (module construction,
    ``reset_parameters``) from ``seed``, inside a fork: the caller's RNG state is left as it
    was."""
    with torch.random.fork_rng(devices=list(cuda_devices)):
        torch.manual_seed(seed)
        yield


def leaves_model_as_found(attribute: Callable) -> Callable:
    """Decorate an ``attribute`` method: warn once if the model is in training mode, and restore
    the model's buffers and the global RNG state when it returns or raises."""

    @functools.wraps(attribute)
    def guarded(self: MaskAttribution, inputs: Any = None, *args: Any, **kwargs: Any) -> Any:
        modules = modules_of(self.forward_func)
        warn_if_training(modules, "forward_func")
        with restored_buffers(modules), preserved_rng_state(_device_of(inputs)):
            return attribute(self, inputs, *args, **kwargs)

    return guarded


def _device_of(inputs: Any) -> torch.device:
    first = inputs[0] if isinstance(inputs, (tuple, list)) and inputs else inputs
    return first.device if isinstance(first, Tensor) else torch.device("cpu")


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A local generator on ``device``: the call's randomness never touches the global RNG.

    Every chunk of a batch starts its own generator from ``seed`` and draws one value for all of
    its examples, so each example sees the same random stream whatever batch it is in.
    """
    check_seed(seed)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def check_seed(seed: Any) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")


__all__ = [
    "MaskAttribution",
    "PreparedCall",
    "check_seed",
    "leaves_model_as_found",
    "make_generator",
    "modules_of",
    "preserved_rng_state",
    "restored_buffers",
    "seeded_global_rng",
    "warn_if_training",
    "work_dtype",
]
