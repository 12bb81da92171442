"""Sizes the papers give in pixels of a 224-px photo, as the same fraction of any input's
shortest masked side: the rule every size-dependent default follows."""

from __future__ import annotations

from collections.abc import Sequence

#: the image side the papers' pixel sizes were chosen at
PAPER_SIDE = 224


def scaled_to_input(size_at_224: float, spatial_shape: Sequence[int]) -> float:
    """``size_at_224`` pixels of a 224-px image as the same fraction of the shortest side of
    ``spatial_shape`` (the input's masked axes: a sequence's length, a volume's depth...)."""
    return size_at_224 * min(spatial_shape) / PAPER_SIDE


def whole_scaled_to_input(size_at_224: int, spatial_shape: Sequence[int]) -> int:
    """:func:`scaled_to_input` rounded to whole positions, at least 1 (grid steps, blocks)."""
    return max(1, round(scaled_to_input(size_at_224, spatial_shape)))


__all__ = ["PAPER_SIDE", "scaled_to_input", "whole_scaled_to_input"]
