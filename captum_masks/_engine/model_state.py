"""The model-state guard: a call leaves the caller's model and random state as it found them."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from captum_masks._engine.checks import check_seed
from captum_masks._engine.user_warnings import warn_user


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


def in_training_mode(modules: Sequence[nn.Module]) -> bool:
    """Whether a dropout or batch norm layer of ``modules`` is in training mode."""
    layers = (m for model in modules for m in model.modules())
    return any(m.training and isinstance(m, MODE_DEPENDENT) for m in layers)


def warn_if_training(modules: Sequence[nn.Module], what: str) -> None:
    """One warning when a dropout or batch norm layer of ``modules`` is in training mode."""
    if in_training_mode(modules):
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
    def guarded(self: Any, inputs: Any = None, *args: Any, **kwargs: Any) -> Any:
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


__all__ = [
    "leaves_model_as_found",
    "make_generator",
    "modules_of",
    "preserved_rng_state",
    "restored_buffers",
    "seeded_global_rng",
    "warn_if_training",
]
