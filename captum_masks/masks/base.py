"""The one interface every mask parametrisation implements, and the base of those with a grid.

A method never asks which parametrisation it holds: it creates the parameters for a batch
(:meth:`Mask.init`), renders the masks at its inputs' shapes (:meth:`Mask.render`), lets the loop
project the parameters after each step (:meth:`Mask.project_`), takes its regularisers on the
cells (:meth:`Mask.mean`, :meth:`Mask.total`, :meth:`Mask.grids`) and reads the low-resolution
result (:meth:`Mask.low_resolution`). A grid over each input's spatial axes
(:class:`CellMask`: :class:`~captum_masks.UpsampledMask`, :class:`~captum_masks.SigmoidMask`,
:class:`~captum_masks.SmoothMaxMask`) and Captum's feature groups (:class:`GroupedMask`) are two
implementations of it.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

if TYPE_CHECKING:
    from captum_masks.masks.low_resolution import LowResolutionMask


class Mask(Protocol):
    """A mask parametrisation over a call's inputs (channels first, batch first).

    ``params`` are a list of batch-first tensors, optimised by the loop; ``rows`` are the batch
    positions of the examples they belong to (a chunk of the call, or the examples still
    running).
    """

    def init(self, inputs: Sequence[Tensor], generator: torch.Generator) -> list[Tensor]:
        """The initial parameters for the examples of ``inputs``."""
        ...

    def render(
        self,
        params: Sequence[Tensor],
        inputs: Sequence[Tensor],
        rows: Tensor,
        generator: torch.Generator | None = None,
    ) -> list[Tensor]:
        """One mask per input, in [0, 1], broadcastable to it: (n, 1 or C, \\*spatial). A
        ``generator`` draws this step's random shifts where the parametrisation has them."""
        ...

    def project_(self, params: Sequence[Tensor]) -> None:
        """Put the parameters back in their domain after an optimiser step (in place)."""
        ...

    def cell_values(self, params: Sequence[Tensor]) -> Tensor:
        """(n, K): each example's mask values in [0, 1], one per cell or group, flattened."""
        ...

    def grids(self, params: Sequence[Tensor]) -> list[Tensor]:
        """The low-resolution grids (n, 1, \\*cells) a smoothness term acts on; none for a
        mask without neighbouring cells."""
        ...

    def mean(self, values: Sequence[Tensor], rows: Tensor) -> Tensor:
        """Per example, the mean of ``|values|`` (one tensor shaped like each parameter) over
        the mask's cells, each cell weighed by its share of the input; summed over inputs."""
        ...

    def total(self, values: Sequence[Tensor], rows: Tensor) -> Tensor:
        """Per example, the sum of ``|values|`` over the mask's cells (a cell covering k times
        the input of another counts k times as much); summed over inputs."""
        ...

    def low_resolution(
        self, params: Sequence[Tensor], inputs: Sequence[Tensor]
    ) -> tuple[LowResolutionMask, ...] | None:
        """The final masks of ``inputs`` in the compact form they were optimised in, or
        None."""
        ...


class CellMask(ABC):
    """A mask with one parameter per cell of a grid over each input's spatial axes.

    A subclass says how many cells an input gets (:meth:`cell_shape`), how the cells start
    (:meth:`init_cells`), how a cell's parameter becomes its value in [0, 1] (:meth:`values`),
    and how the grid becomes the full-resolution mask (:meth:`expand`). The same subclass, with
    Captum's feature groups in place of the grid, is a :class:`GroupedMask`: its cells are the
    groups.
    """

    @abstractmethod
    def cell_shape(self, spatial_shape: Sequence[int]) -> list[int]:
        """The grid's shape for an input with ``spatial_shape``."""

    @abstractmethod
    def init_cells(self, shape: Sequence[int], like: Tensor, generator: torch.Generator) -> Tensor:
        """Initial parameters of ``shape`` (batch first) on ``like``'s device and dtype."""

    @abstractmethod
    def expand(
        self, params: Tensor, spatial_shape: Sequence[int], generator: torch.Generator | None
    ) -> Tensor:
        """The ``(n, 1, *spatial_shape)`` mask of the grid ``params``."""

    #: per-example starting values of the cells, (N, 1, \*cells) in [0, 1]; None starts the
    #: parametrisation's own way
    start: Tensor | None = None

    def values(self, params: Tensor) -> Tensor:
        """A cell's mask value from its parameter; the parameter itself by default."""
        return params

    def params_for(self, values: Tensor) -> Tensor:
        """Parameters whose cells take ``values`` in [0, 1]; the values themselves by default."""
        return values.clone()

    def starting_at(self, values: Tensor) -> CellMask:
        r"""A copy of this parametrisation whose cells start at ``values`` (N, 1, \*cells) in
        [0, 1], one row per example, instead of its own start: a warm start."""
        started = copy.copy(self)
        started.start = values
        return started

    def project_cells_(self, params: Tensor) -> None:  # noqa: B027 (a default, not abstract)
        """The projection after a step; none by default."""

    def low_resolution_of(
        self, params: Tensor, spatial_shape: Sequence[int]
    ) -> LowResolutionMask | None:
        """The compact form of one input's final grid; None by default."""
        return None

    def init(self, inputs: Sequence[Tensor], generator: torch.Generator) -> list[Tensor]:
        shapes = [(x.shape[0], 1, *self.cell_shape(x.shape[2:])) for x in inputs]
        if self.start is None:
            return [self.init_cells(shape, x, generator) for shape, x in zip(shapes, inputs)]
        if len(inputs) != 1 or tuple(self.start.shape) != shapes[0]:
            raise ValueError(
                f"a mask's start must have one row per example and one value per cell, "
                f"{shapes[0]} here; got {tuple(self.start.shape)}"
            )
        return [self.params_for(self.start.to(inputs[0]))]

    def render(
        self,
        params: Sequence[Tensor],
        inputs: Sequence[Tensor],
        rows: Tensor,
        generator: torch.Generator | None = None,
    ) -> list[Tensor]:
        return [self.expand(p, x.shape[2:], generator) for p, x in zip(params, inputs)]

    def project_(self, params: Sequence[Tensor]) -> None:
        for param in params:
            self.project_cells_(param)

    def cell_values(self, params: Sequence[Tensor]) -> Tensor:
        return torch.cat([self.values(p).flatten(1) for p in params], dim=1)

    def grids(self, params: Sequence[Tensor]) -> list[Tensor]:
        return list(params)

    def mean(self, values: Sequence[Tensor], rows: Tensor) -> Tensor:
        return sum((_abs_sum(v) / v[0].numel() for v in values), values[0].new_zeros(()))

    def total(self, values: Sequence[Tensor], rows: Tensor) -> Tensor:
        return sum((_abs_sum(v) for v in values), values[0].new_zeros(()))

    def low_resolution(
        self, params: Sequence[Tensor], inputs: Sequence[Tensor]
    ) -> tuple[LowResolutionMask, ...] | None:
        compact = [self.low_resolution_of(p, x.shape[2:]) for p, x in zip(params, inputs)]
        return None if any(c is None for c in compact) else tuple(c for c in compact if c)


class UnitIntervalMask(CellMask):
    """A :class:`CellMask` whose parameters are the cells' values themselves, in [0, 1]: they
    start at ``init_value`` and are clamped back onto [0, 1] after every step."""

    def __init__(self, init_value: float) -> None:
        if not (isinstance(init_value, (int, float)) and 0.0 <= init_value <= 1.0):
            raise ValueError(f"init_value must be in [0, 1], got {init_value!r}")
        self.init_value = float(init_value)

    def init_cells(self, shape: Sequence[int], like: Tensor, generator: torch.Generator) -> Tensor:
        return like.new_full(tuple(shape), self.init_value)

    def project_cells_(self, params: Tensor) -> None:
        params.clamp_(0.0, 1.0)


def _abs_sum(values: Tensor) -> Tensor:
    return values.reshape(values.shape[0], -1).abs().sum(dim=1)


__all__ = ["CellMask", "Mask", "UnitIntervalMask"]
