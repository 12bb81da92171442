"""What every per-example mask method shares around the optimisation loop.

:class:`MaskAttribution` validates the call, runs the clean forward pass once (to pick the
predicted class and to check targets against the real output shape), and makes sure the caller's
global random state is the same after the call as before it, even when the model itself draws
random numbers (dropout in training mode) or the call raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from captum.attr import PerturbationAttribution
from torch import Tensor

from captum_masks._inputs import format_additional_args, format_inputs, resolve_targets, run_forward


@dataclass
class PreparedCall:
    """A validated call: inputs as a tuple, formatted extra arguments and (N, K) target indices."""

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


class MaskAttribution(PerturbationAttribution):
    """Base class of the mask-optimisation methods: a Captum ``PerturbationAttribution`` whose
    attributions are masks in [0, 1] with the input's shape (never multiplied by the input)."""

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
    ) -> PreparedCall:
        is_inputs_tuple = isinstance(inputs, tuple)
        formatted = format_inputs(inputs, spatial_dims)
        additional_args = format_additional_args(additional_forward_args)
        with torch.no_grad(), preserved_rng_state(formatted[0].device):
            clean_output = run_forward(self.forward_func, formatted, additional_args)
        targets = resolve_targets(target, clean_output)
        return PreparedCall(formatted, is_inputs_tuple, additional_args, targets, clean_output)


@contextlib.contextmanager
def preserved_rng_state(device: torch.device) -> Iterator[None]:
    """Restore the global CPU (and, for accelerator inputs, device) RNG state on exit."""
    devices = [device.index if device.index is not None else 0] if device.type != "cpu" else []
    device_type = device.type if device.type != "cpu" else "cuda"
    with torch.random.fork_rng(devices=devices, device_type=device_type):
        yield


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A local generator on ``device``: the call's randomness never touches the global RNG."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


__all__ = ["MaskAttribution", "PreparedCall", "make_generator", "preserved_rng_state"]
