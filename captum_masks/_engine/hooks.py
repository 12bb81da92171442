"""Intermediate activations with gradients, through forward hooks that are always removed.

Captum's ``LayerActivation`` runs under ``no_grad``; guided feature inversion needs the
activations of a layer *as a function of the mask*, so it records them with its own hooks.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn


class _StopForward(Exception):
    """Raised by the hook once every wanted layer has run: the rest of the model is skipped."""


def check_layers(
    forward_func: Callable, layers: Sequence[nn.Module], names: Sequence[str]
) -> None:
    """Each layer must be an ``nn.Module`` that takes forward hooks (not TorchScript) and, when
    ``forward_func`` is a module, one of its submodules."""
    scripted = (torch.jit.ScriptModule, torch.jit.ScriptFunction)
    if isinstance(forward_func, scripted) or any(isinstance(m, scripted) for m in layers):
        raise TypeError(
            f"{names[0]} must be a module of an eager (not TorchScript) model: the layer's output "
            "is recorded with a forward hook, which torch.jit.script and torch.jit.trace models "
            "do not support; pass the model before scripting or tracing it"
        )
    for layer, name in zip(layers, names):
        if not isinstance(layer, nn.Module):
            raise TypeError(
                f"{name} must be an nn.Module of the model, got {type(layer).__name__}"
            )
        if isinstance(forward_func, nn.Module) and not any(
            module is layer for module in forward_func.modules()
        ):
            raise ValueError(
                f"{name} ({type(layer).__name__}) is not a submodule of the model; pass a module "
                "of forward_func, e.g. model.features[-1]"
            )


@contextlib.contextmanager
def recording(
    layers: Sequence[nn.Module], stop_after: bool = False
) -> Iterator[dict[nn.Module, list[Tensor]]]:
    """Record the output of each layer on the next forward pass.

    Args:
        layers: the modules to record (a module hooked twice is recorded once).
        stop_after: stop the forward pass as soon as every layer has run (the model's output is
            then not computed; use :func:`run_recording`).

    Yields:
        dict from module to a list of its outputs, one per call, filled during the forward pass.
    """
    outputs: dict[nn.Module, list[Tensor]] = {}
    wanted = {id(layer) for layer in layers}

    def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
        if isinstance(output, tuple):
            output = output[0]
        # a copy: a later in-place activation (ReLU(inplace=True)) must not change it
        outputs.setdefault(module, []).append(output.clone())
        if stop_after and wanted <= {id(m) for m in outputs}:
            raise _StopForward

    handles = [layer.register_forward_hook(hook) for layer in dict.fromkeys(layers)]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def run_recording(
    forward: Callable[[], object], layers: Sequence[nn.Module], stop_after: bool = False
) -> list[Tensor]:
    """Run ``forward()`` and return the output of each layer, in the order given.

    Raises:
        ValueError: as :func:`single_outputs`. With ``stop_after`` the pass ends before a second
            call can be seen, so check once without it.
    """
    with recording(layers, stop_after) as outputs:
        try:
            forward()
        except _StopForward:
            pass
    return single_outputs(outputs, layers)


def last_feature_map(
    model: nn.Module, forward: Callable[[], object], spatial: Sequence[int], max_channels: int
) -> nn.Module | None:
    """The submodule of ``model`` whose output is the last feature map of one forward pass.

    A feature map is a floating-point ``(N, C, *s)`` output with as many spatial axes as the
    input (``spatial``), each longer than 1 and no longer than the input's, and at most
    ``max_channels`` channels, from a module that runs once (a shared activation has no single
    output). Only shapes are kept; the hooks are removed on return, also when ``forward`` raises.

    Returns:
        the module, or None when no module's output is such a map (e.g. a tabular model).
    """
    if isinstance(model, torch.jit.ScriptModule):
        return None
    shapes: dict[nn.Module, list] = {}

    def hook(module: nn.Module, args: tuple, output: object) -> None:
        floating = isinstance(output, Tensor) and output.is_floating_point()
        shapes.setdefault(module, []).append(
            tuple(output.shape) if isinstance(output, Tensor) and floating else None
        )

    handles = [module.register_forward_hook(hook) for module in model.modules()]
    try:
        with torch.no_grad():
            forward()
    finally:
        for handle in handles:
            handle.remove()
    chosen = None
    for module, calls in shapes.items():  # in the order the modules finished
        shape = calls[0]
        if (
            len(calls) == 1
            and shape is not None
            and len(shape) == len(spatial) + 2
            and shape[1] <= max_channels
            and all(1 < size <= limit for size, limit in zip(shape[2:], spatial))
        ):
            chosen = module
    return chosen


def single_outputs(outputs: dict[nn.Module, list[Tensor]], layers: Sequence[nn.Module]) -> list:
    """The one output of each layer from a :func:`recording`, in the order given.

    Raises:
        ValueError: a layer did not run, or ran more than once (a module the model calls in
            several places, such as a shared activation, has no single output to record).
    """
    missing = [type(layer).__name__ for layer in layers if layer not in outputs]
    if missing:
        raise ValueError(
            f"layer {', '.join(missing)} did not run during the forward pass; pass a module that "
            "forward_func calls"
        )
    repeated = [type(layer).__name__ for layer in layers if len(outputs[layer]) > 1]
    if repeated:
        raise ValueError(
            f"layer {', '.join(repeated)} runs more than once in one forward pass (a module the "
            "model reuses); pass a module that runs once, e.g. the batch norm before a shared "
            "activation"
        )
    return [outputs[layer][0] for layer in layers]


def layer_gradient(
    forward: Callable[[], Tensor], layer: nn.Module, score: Callable[[Tensor], Tensor]
) -> Tensor:
    """The gradient of ``score(forward())``, summed over the examples, with respect to the
    output of ``layer`` (as Captum's layer gradients); no parameter's ``.grad`` is touched and
    the hook is removed on return, also when the model raises."""
    outputs: list[Tensor] = []

    def hook(module: nn.Module, args: tuple, output: object) -> None:
        output = output[0] if isinstance(output, tuple) else output
        assert isinstance(output, Tensor), "the layer's output is checked by check_layers"
        if not output.requires_grad:  # frozen parameters and inputs: a leaf of its own
            output.requires_grad_()
        outputs.append(output)

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            total = score(forward()).sum()
    finally:
        handle.remove()
    (gradient,) = torch.autograd.grad(total, outputs[0])
    return gradient


@contextlib.contextmanager
def replacing_output(layer: nn.Module, value: Tensor) -> Iterator[None]:
    """Make ``layer`` return ``value`` instead of its output during the forward passes inside
    the block (the hook is removed on exit, also when the model raises)."""

    def hook(module: nn.Module, args: tuple, output: object) -> Tensor:
        if not isinstance(output, Tensor) or output.shape != value.shape:
            shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise ValueError(
                f"layer {type(layer).__name__} returned {shape} where its masked output has shape "
                f"{tuple(value.shape)}; the layer must return one tensor, once per forward pass"
            )
        return value

    handle = layer.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


#: the most leading tokens (a class token, registers) a vision transformer's layer is read with
MAX_LEADING_TOKENS = 16


def token_grid(
    tokens: int, image_shape: Sequence[int], patch: int | None
) -> tuple[int, int] | None:
    """The (rows, columns) grid of the patch tokens among a vision transformer's ``tokens``:
    the image's sides over the ``patch`` side when it is known, else the largest square grid
    that leaves at most :data:`MAX_LEADING_TOKENS` tokens before it. None if neither fits."""
    if patch is not None:
        rows, columns = (side // patch for side in image_shape[-2:])
        if 0 <= tokens - rows * columns <= MAX_LEADING_TOKENS:
            return rows, columns
        return None
    for leading in range(min(tokens, MAX_LEADING_TOKENS + 1)):
        side = math.isqrt(tokens - leading)
        if side * side == tokens - leading and side > 0:
            return side, side
    return None


def image_feature_maps(
    features: Tensor,
    name: str,
    num_examples: int,
    image_shape: Sequence[int],
    patch: int | None = None,
) -> Tensor:
    """The layer's output as (N, C, h, w) feature maps a mask can be made of: a CNN layer's as
    it is; a vision transformer's (N, T, D) tokens without their leading class and register
    tokens, the patch tokens laid on their grid (:func:`token_grid`) with D channels."""
    if features.dim() == 3 and features.shape[0] == num_examples:
        grid = token_grid(features.shape[1], image_shape, patch)
        if grid is not None:
            patches = features[:, features.shape[1] - grid[0] * grid[1] :]
            return patches.transpose(1, 2).reshape(num_examples, features.shape[2], *grid)
    if features.dim() != 4 or features.shape[0] != num_examples:
        raise ValueError(
            f"{name} must output (N, C, h, w) feature maps for (N, C, H, W) images, or a vision "
            f"transformer's (N, T, D) tokens; it returned shape {tuple(features.shape)} for "
            f"{num_examples} images. Pass a convolutional layer (e.g. model.features[-1]) or a "
            "transformer block (e.g. model.blocks[-1]), not a linear or pooled one"
        )
    return features


__all__ = [
    "MAX_LEADING_TOKENS",
    "check_layers",
    "image_feature_maps",
    "last_feature_map",
    "layer_gradient",
    "recording",
    "replacing_output",
    "run_recording",
    "single_outputs",
    "token_grid",
]
