"""Validation and normalisation of the arguments every mask method shares.

Each check raises before any work is done and never modifies what it is given, so a bad call leaves
the caller's tensors and model exactly as they were.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor


def format_inputs(
    inputs: Any, spatial_dims: int | tuple[int, ...] | None = None, masked: bool = True
) -> tuple[Tensor, ...]:
    """Return ``inputs`` as a tuple of tensors after checking type, dtype, batch and values.

    ``spatial_dims`` (if given) is the number of axes after (batch, channel) each tensor must have,
    or a tuple of the allowed numbers. ``masked=False`` is for inputs that only go to the model
    (the Layer methods mask a layer's output): any dtype, token ids included.
    """
    allowed = (spatial_dims,) if isinstance(spatial_dims, int) else spatial_dims
    if isinstance(inputs, Tensor):
        inputs = (inputs,)
    if not isinstance(inputs, tuple) or len(inputs) == 0:
        raise TypeError(
            f"inputs must be a tensor or a non-empty tuple of tensors, got {type(inputs).__name__}"
        )
    for index, tensor in enumerate(inputs):
        where = "inputs" if len(inputs) == 1 else f"inputs[{index}]"
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{where} must be a torch.Tensor, got {type(tensor).__name__}")
        if masked and not tensor.is_floating_point():
            raise TypeError(
                f"{where} must have a floating-point dtype to be blended with a mask, got "
                f"{tensor.dtype}. Token ids are explained through their embedding: "
                "LayerMeaningfulPerturbation(model, model.embedding) or LayerNeuroMask mask the "
                "embedding's output; other integer features: convert them first, e.g. "
                "inputs.float()"
            )
        if tensor.dim() == 0 or tensor.shape[0] == 0:
            raise ValueError(
                f"{where} must hold at least one example, got shape {tuple(tensor.shape)}"
            )
        if allowed is not None and tensor.dim() - 2 not in allowed:
            names = {1: "(N, C, L)", 2: "(N, C, H, W)", 3: "(N, C, D, H, W)"}
            expected = " or ".join(
                f"{2 + d} dimensions {names.get(d, '')}".rstrip() for d in allowed
            )
            raise ValueError(f"{where} must have {expected}, got shape {tuple(tensor.shape)}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"{where} contains NaN or Inf values")
        if tensor.shape[0] != inputs[0].shape[0]:
            raise ValueError(
                f"every input tensor must have the same batch size: inputs[0] has "
                f"{inputs[0].shape[0]} examples, {where} has {tensor.shape[0]}"
            )
    return inputs


def model_scores(output: Any) -> Tensor:
    """The scores in a model's output: the tensor itself, or the ``logits`` tensor of an output
    that carries one (a Hugging Face ``ModelOutput``, a dict or a dataclass), as transformers'
    classifiers return them."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping):
        logits = output.get("logits")
    else:
        logits = getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    raise TypeError(
        "forward_func must return a tensor of scores, or an output whose 'logits' is one (a "
        f"Hugging Face ModelOutput, a dict or a dataclass), got {type(output).__name__}"
    )


def run_forward(
    forward_func: Callable, inputs: Sequence[Tensor], additional_args: tuple | None
) -> Tensor:
    output = model_scores(forward_func(*inputs, *(additional_args or ())))
    if output.dim() < 2 or output.shape[0] != inputs[0].shape[0]:
        raise ValueError(
            "forward_func must return scores of shape (N, num_classes, ...) with one row per "
            f"example; got {tuple(output.shape)} for {inputs[0].shape[0]} examples"
        )
    return output


class TargetError(ValueError, AssertionError):
    """A ``target`` that does not fit the model's output. A ``ValueError`` like every bad
    argument here, and an ``AssertionError`` too, because Captum's own methods assert their
    targets: code (and Captum's tests) written to catch Captum's error keep working."""


def resolve_targets(target: Any, output: Tensor) -> Tensor:
    """Turn any Captum target form into a (N, K) long tensor of output indices.

    ``output`` is the model's output on the clean inputs, (N, D1, ..., Dk). ``target=None`` picks
    each example's top class (2-D outputs only). An int or tuple applies to every example; a 1-D
    tensor or a list holds one int or tuple per example.
    """
    num_examples = output.shape[0]
    if target is None:
        if output.dim() != 2:
            raise TargetError(
                f"target=None explains the predicted class, which needs (N, num_classes) outputs; "
                f"the model returned shape {tuple(output.shape)}, so pass target explicitly"
            )
        return output.argmax(dim=1, keepdim=True)

    per_example: list[Any]
    if isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"target tensor must hold integers, got dtype {target.dtype}")
        if target.numel() == 1:
            per_example = [int(target.item())] * num_examples
        elif target.dim() == 1:
            per_example = target.tolist()
        else:
            raise TargetError(
                f"target tensor must be 0-d or 1-d with one entry per example, "
                f"got shape {tuple(target.shape)}"
            )
    elif isinstance(target, (numbers.Integral, tuple)) and not isinstance(target, bool):
        per_example = [target] * num_examples
    elif isinstance(target, list):
        per_example = list(target)
    else:
        raise TypeError(
            "target must be None, an int, a tuple of ints, a 0-d/1-d integer tensor, or a list "
            f"of ints or tuples, got {type(target).__name__}"
        )
    if len(per_example) != num_examples:
        raise TargetError(
            f"target must have one entry per example: got {len(per_example)} targets for "
            f"{num_examples} examples"
        )

    rows = []
    for entry in per_example:
        indices = entry if isinstance(entry, tuple) else (entry,)
        if not all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in indices):
            raise TypeError(f"target entries must be ints or tuples of ints, got {entry!r}")
        if len(indices) != output.dim() - 1:
            raise TargetError(
                f"target {entry!r} has {len(indices)} index(es) but the model output "
                f"{tuple(output.shape)} needs {output.dim() - 1} per example"
            )
        for axis, index in enumerate(indices, start=1):
            if not 0 <= index < output.shape[axis]:
                raise TargetError(
                    f"target {entry!r} is out of range for model output of shape "
                    f"{tuple(output.shape)} (axis {axis} has size {output.shape[axis]})"
                )
        rows.append([int(i) for i in indices])
    return torch.tensor(rows, dtype=torch.long, device=output.device)


def map_batch(
    args: tuple | None, batch_size: int, function: Callable[[Tensor], Tensor]
) -> tuple | None:
    """Apply ``function`` to the batch-first tensors of ``args`` (the additional forward
    arguments); pass everything else through unchanged."""
    if args is None:
        return None
    return tuple(
        function(arg)
        if isinstance(arg, Tensor) and arg.dim() > 0 and arg.shape[0] == batch_size
        else arg
        for arg in args
    )


def per_input_baselines(baselines: Any, num_inputs: int) -> list:
    """Captum's ``baselines`` as one entry per input tensor (a tuple gives one each; anything
    else is shared by all)."""
    if isinstance(baselines, tuple) and num_inputs > 1:
        if len(baselines) != num_inputs:
            raise ValueError(
                f"baselines must have one entry per input tensor: got {len(baselines)} for "
                f"{num_inputs} inputs"
            )
        return list(baselines)
    if isinstance(baselines, tuple) and len(baselines) == 1 and not _is_number(baselines[0]):
        return list(baselines)
    return [baselines] * num_inputs


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_one_tensor(inputs: Any, kind: str = "tensor") -> None:
    """Methods that explain one tensor accept it bare or as a 1-tuple."""
    if isinstance(inputs, tuple) and len(inputs) != 1:
        raise ValueError(f"inputs must be one {kind} (or a 1-tuple), got {len(inputs)} tensors")


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def check_positive(name: str, value: Any, allow_zero: bool = False) -> None:
    ok = (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and (float(value) >= 0 if allow_zero else float(value) > 0)
    )
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a number {bound}, got {value!r}")


def check_positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    if allow_none and value is None:
        return
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        expected = "a positive int or None" if allow_none else "a positive int"
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def check_non_negative(**values: Any) -> None:
    """Each keyword's value must be a real number ≥ 0; the error names the first that is not."""
    for name, value in values.items():
        check_positive(name, value, allow_zero=True)


def check_positive_ints(**values: Any) -> None:
    """Each keyword's value must be an int ≥ 1; the error names the first that is not."""
    for name, value in values.items():
        check_positive_int(name, value)


def check_instance(name: str, value: Any, kind: type, default: Any) -> Any:
    """``value`` when it is a ``kind``, ``default`` when it is None; a ``TypeError`` naming
    ``name`` otherwise."""
    if value is None:
        return default
    if not isinstance(value, kind):
        raise TypeError(f"{name} must be a {kind.__name__} or None, got {value!r}")
    return value


#: ``Optimization.start``'s maps by name
START_NAMES = ("auto", "gradcam")


def check_start(start: Any) -> None:
    """A warm start is None, a name of :data:`START_NAMES`, a tensor, or a fitted explainer (an
    object with an ``attribute`` method)."""
    if isinstance(start, str):
        check_choice("start", start, START_NAMES)
    elif not (
        start is None or isinstance(start, Tensor) or callable(getattr(start, "attribute", None))
    ):
        raise TypeError(
            "start must be None, 'auto', 'gradcam', a fitted AmortizedExplainer or a tensor, got "
            f"{type(start).__name__}"
        )


def check_seed(seed: Any) -> None:
    """A seed is an int (not a bool)."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")


def check_bool(name: str, value: Any) -> None:
    """A flag is a bool, not a truthy value."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")


def check_at_least(name: str, value: Any, lower: float, why: str) -> None:
    """``value`` must be a real number ≥ ``lower``; ``why`` ends the error message."""
    if not (
        isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value) >= lower
    ):
        raise ValueError(f"{name} must be a number >= {lower} ({why}), got {value!r}")


__all__ = [
    "TargetError",
    "check_at_least",
    "check_bool",
    "check_choice",
    "check_instance",
    "check_non_negative",
    "check_positive",
    "check_positive_int",
    "check_positive_ints",
    "check_seed",
    "format_inputs",
    "map_batch",
    "model_scores",
    "per_input_baselines",
    "resolve_targets",
    "run_forward",
]
