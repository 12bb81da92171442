"""Where the feature axis is: masks are always (N, K, *mask_axes) inside this package."""

from __future__ import annotations

from typing import Any

from torch import Tensor


class MaskLayout:
    """Moves the feature axis of channels-last inputs to position 1 and back (views only), so
    masks are always (N, 1, *mask_axes) internally."""

    def __init__(self, channels_last: bool) -> None:
        if not isinstance(channels_last, bool):
            raise TypeError(f"channels_last must be a bool, got {type(channels_last).__name__}")
        self.channels_last = channels_last

    def to_channels_first(self, x: Tensor) -> Tensor:
        return x.movedim(-1, 1) if self.channels_last else x

    def to_caller(self, x: Tensor) -> Tensor:
        return x.movedim(1, -1) if self.channels_last else x

    def baseline_to_channels_first(self, baseline: Any, x: Tensor) -> Any:
        """None becomes 0 (the paper's x̄ = m·x); a full tensor in the caller's layout is moved
        like the input; scalars and per-channel values pass through."""
        if baseline is None:
            return 0.0
        if isinstance(baseline, Tensor) and baseline.dim() == x.dim():
            return self.to_channels_first(baseline)
        return baseline


__all__ = ["MaskLayout"]
