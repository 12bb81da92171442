"""Captum's ``feature_mask``: which input elements share one mask value, as a mask whose
cells are groups.

A feature mask holds an integer group id per element, broadcastable to its input (batch axis of
size 1 for one grouping shared by the batch, or N for one per example). The same id in several
tensors of a tuple is one group, as in Captum 0.9. Inputs without spatial axes, (N,) or (N, F)
rows, are grouped per feature when no ``feature_mask`` is given: their features have no order, so
a mask upsampled or smoothed along them would mean nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from captum_masks._engine.layout import MaskLayout
from captum_masks.masks.base import CellMask, Mask

#: the most spatial axes a mask can span on its own (volumes); more need a feature_mask
MAX_SPATIAL_AXES = 3


class FeatureGroups:
    """Group ids relabelled 0 … G − 1, one index tensor per input.

    Attributes:
        count (int): G, the number of groups over all inputs and examples.
        index (list of Tensor): per input, long ids with the input's rank and a batch axis of
            1 or N, broadcastable to the input.
        sizes (Tensor): (N, G) how many input elements each group covers in each example (0 for a
            group an example does not use).
    """

    def __init__(self, index: Sequence[Tensor], inputs: Sequence[Tensor]) -> None:
        ids = torch.unique(torch.cat([i.flatten() for i in index]))
        self.count = ids.numel()
        self.index = [torch.searchsorted(ids, i) for i in index]
        num_examples = inputs[0].shape[0]
        sizes = inputs[0].new_zeros(num_examples, self.count)
        for groups, x in zip(self.index, inputs):
            expanded = groups.expand(x.shape).reshape(num_examples, -1)
            sizes.scatter_add_(1, expanded, torch.ones_like(expanded, dtype=sizes.dtype))
        self.sizes = sizes

    @classmethod
    def per_feature(cls, inputs: Sequence[Tensor]) -> FeatureGroups:
        """Every element of each example is its own group (distinct across the tensors)."""
        index, offset = [], 0
        for x in inputs:
            count = x[0].numel()
            ids = torch.arange(offset, offset + count, device=x.device)
            index.append(ids.view(1, *x.shape[1:]))
            offset += count
        return cls(index, inputs)

    @classmethod
    def from_feature_mask(cls, feature_mask: Any, inputs: Sequence[Tensor]) -> FeatureGroups:
        """Validate Captum's ``feature_mask`` against ``inputs`` (a tensor or a tuple with one
        tensor per input) and relabel its ids."""
        masks = (feature_mask,) if isinstance(feature_mask, Tensor) else feature_mask
        if not isinstance(masks, tuple) or len(masks) != len(inputs):
            raise TypeError(
                "feature_mask must be a tensor (one input) or a tuple with one integer tensor per "
                f"input tensor ({len(inputs)}), got {_describe(feature_mask)}"
            )
        index = []
        for position, (groups, x) in enumerate(zip(masks, inputs)):
            where = "feature_mask" if len(masks) == 1 else f"feature_mask[{position}]"
            if not isinstance(groups, Tensor):
                raise TypeError(f"{where} must be a torch.Tensor, got {type(groups).__name__}")
            if groups.is_floating_point() or groups.is_complex() or groups.dtype == torch.bool:
                raise TypeError(f"{where} must hold integer group ids, got dtype {groups.dtype}")
            if groups.device != x.device:
                raise ValueError(f"{where} is on {groups.device}, its input on {x.device}")
            full = groups.reshape((1,) * (x.dim() - groups.dim()) + tuple(groups.shape))
            fits = full.dim() == x.dim() and all(g in (1, n) for g, n in zip(full.shape, x.shape))
            if not fits:
                raise ValueError(
                    f"{where} of shape {tuple(groups.shape)} must be broadcastable to its input "
                    f"{tuple(x.shape)}, with a batch axis of 1 (one grouping for every example) "
                    f"or {x.shape[0]} (one per example)"
                )
            index.append(full.long())
        return cls(index, inputs)

    def rows(self, index: Tensor, examples: Tensor) -> Tensor:
        """The ids of ``index`` for the examples at batch positions ``examples``."""
        return index if index.shape[0] == 1 else index[examples]

    def expand(self, values: Tensor, examples: Tensor) -> list[Tensor]:
        """Per input, ``values`` (n, G) of the examples at ``examples`` put on their elements:
        one (n, …) tensor with the feature mask's shape, broadcastable to the input."""
        masks = []
        for index in self.index:
            ids = self.rows(index, examples)
            flat = ids.reshape(ids.shape[0], -1).expand(values.shape[0], -1)
            masks.append(values.gather(1, flat).view(values.shape[0], *ids.shape[1:]))
        return masks

    def weighted_mean(self, values: Tensor, examples: Tensor) -> Tensor:
        """Σ_g size_g · values_g / Σ_g size_g per example: the mean over the input's elements of
        ``values`` (n, G) put on them."""
        sizes = self.sizes[examples]
        return (sizes * values).sum(dim=1) / sizes.sum(dim=1)

    def used(self, examples: Tensor) -> Tensor:
        """How many groups each example at ``examples`` covers."""
        return (self.sizes[examples] > 0).sum(dim=1)


class GroupedMask:
    """A :class:`~captum_masks.masks.CellMask` whose cells are Captum's feature groups instead of
    a grid: one parameter per group, turned into its mask value by ``cells`` and put on every
    element of the group. The :class:`~captum_masks.masks.Mask` of a call with a
    ``feature_mask``, or of (N, F) rows.

    Args:
        cells (CellMask): gives the parameters' start, their values and their projection.
        groups (FeatureGroups): the groups, relabelled.
        layout (MaskLayout): where the caller's inputs keep their channels; the rendered masks
            are channels first.
    """

    def __init__(self, cells: CellMask, groups: FeatureGroups, layout: MaskLayout) -> None:
        self.cells, self.groups, self.layout = cells, groups, layout

    def init(self, inputs: Sequence[Tensor], generator: torch.Generator) -> list[Tensor]:
        shape = (inputs[0].shape[0], self.groups.count)
        return [self.cells.init_cells(shape, inputs[0], generator)]

    def render(
        self,
        params: Sequence[Tensor],
        inputs: Sequence[Tensor],
        rows: Tensor,
        generator: torch.Generator | None = None,
    ) -> list[Tensor]:
        expanded = self.groups.expand(self.cells.values(params[0]), rows)
        return [self.layout.to_channels_first(m) for m in expanded]

    def project_(self, params: Sequence[Tensor]) -> None:
        self.cells.project_cells_(params[0])

    def cell_values(self, params: Sequence[Tensor]) -> Tensor:
        return self.cells.values(params[0]).flatten(1)

    def grids(self, params: Sequence[Tensor]) -> list[Tensor]:
        return []  # groups have no neighbours: no smoothness term

    def mean(self, values: Sequence[Tensor], rows: Tensor) -> Tensor:
        return self.groups.weighted_mean(values[0].abs(), rows)

    def total(self, values: Sequence[Tensor], rows: Tensor) -> Tensor:
        return self.mean(values, rows) * self.groups.used(rows)

    def low_resolution(self, params: Sequence[Tensor], inputs: Sequence[Tensor]) -> None:
        return None


def mask_over_inputs(
    cells: CellMask,
    feature_mask: Any,
    inputs: Sequence[Tensor],
    layout: MaskLayout,
    method: str,
) -> Mask:
    """The call's :class:`~captum_masks.masks.Mask`: ``cells`` on a grid over each input's
    spatial axes, or on the feature groups :func:`resolve_groups` finds. ``inputs`` are in the
    caller's layout."""
    groups = resolve_groups(feature_mask, inputs, method)
    return cells if groups is None else GroupedMask(cells, groups, layout)


def resolve_groups(
    feature_mask: Any, inputs: Sequence[Tensor], method: str
) -> FeatureGroups | None:
    """The call's grouping: from ``feature_mask``; per feature when every input is (N,) or
    (N, F) rows (their features have no order, so a mask upsampled or smoothed along them would
    mean nothing); None (the mask spans the spatial axes of each input) otherwise."""
    if feature_mask is not None:
        return FeatureGroups.from_feature_mask(feature_mask, inputs)
    rows = [x.dim() <= 2 for x in inputs]
    if all(rows):
        return FeatureGroups.per_feature(inputs)
    if any(rows):
        raise ValueError(
            f"{method} got a tuple mixing (N, F) rows with inputs that have spatial axes; pass a "
            "feature_mask (one integer tensor per input) to say which elements share a mask value"
        )
    deepest = max(x.dim() - 2 for x in inputs)
    if deepest > MAX_SPATIAL_AXES:
        raise ValueError(
            f"{method} spans masks over at most {MAX_SPATIAL_AXES} spatial axes (N, C, D, H, W); "
            f"an input has {deepest}: pass a feature_mask to group its elements"
        )
    return None


def _describe(value: Any) -> str:
    if isinstance(value, tuple):
        return f"a tuple of {len(value)}"
    return type(value).__name__


__all__ = [
    "MAX_SPATIAL_AXES",
    "FeatureGroups",
    "GroupedMask",
    "mask_over_inputs",
    "resolve_groups",
]
