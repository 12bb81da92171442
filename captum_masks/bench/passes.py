"""Counting a model's passes: how many inputs went forward through it, and how many of them a
gradient came back through, while a method explains (the cost a method adds is its passes times
the model's own)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from torch import Tensor, nn

from captum_masks._engine.checks import model_scores


@dataclass
class PassCount:
    """Inputs (rows of a batch) the model ran on.

    Attributes:
        forward (int): rows of every forward pass that reached the model's output (a pass that
            stops at an inner layer, as Guided Feature Inversion's first stage does, is not
            counted).
        backward (int): rows of every backward pass through the model's output.
    """

    forward: int = 0
    backward: int = 0

    def per_input(self, inputs: int) -> tuple[float, float]:
        """(forward, backward) passes per explained input."""
        return self.forward / inputs, self.backward / inputs


@contextlib.contextmanager
def counting_passes(model: nn.Module) -> Iterator[PassCount]:
    """Count the rows of every forward pass of ``model`` and of every gradient that comes back
    through its output, inside the ``with`` block; the hook is removed on exit.

    Examples::

        >>> with counting_passes(model) as passes:
        ...     MeaningfulPerturbation(model).attribute(images, target=3)
        >>> passes.per_input(len(images))
    """
    count = PassCount()

    def backward(rows: int) -> None:
        count.backward += rows

    def hook(module: nn.Module, args: tuple, output: object) -> None:
        scores = model_scores(output)
        rows = scores.shape[0]
        count.forward += rows
        if isinstance(scores, Tensor) and scores.requires_grad:
            scores.register_hook(lambda gradient: backward(rows))

    handle = model.register_forward_hook(hook)
    try:
        yield count
    finally:
        handle.remove()


__all__ = ["PassCount", "counting_passes"]
