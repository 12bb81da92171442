"""Where the feature axis is: masks are always (N, K, *mask_axes) inside this package."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from captum_masks._engine.user_warnings import warn_user


class MaskLayout:
    """Moves the feature axis of channels-last inputs to position 1 and back (views only), so
    masks are always (N, 1, *mask_axes) internally.

    ``channels_last=None`` means channels first, with a warning for 3-D inputs: (N, C, L) signals
    and (N, L, D) token embeddings have the same rank, and masking embeddings channels first
    would mask their embedding dimensions instead of their tokens.
    """

    def __init__(self, channels_last: bool | None) -> None:
        if channels_last is not None and not isinstance(channels_last, bool):
            raise TypeError(
                f"channels_last must be a bool or None, got {type(channels_last).__name__}"
            )
        self.explicit = channels_last is not None
        self.channels_last = bool(channels_last)

    def check(self, inputs: Sequence[Tensor], method: str) -> None:
        """Warn about 3-D inputs when ``channels_last`` was left to its default."""
        if self.explicit:
            return
        for x in inputs:
            if x.dim() == 3:
                warn_user(
                    f"{method} masks the last axis of the 3-D input {tuple(x.shape)} as "
                    "positions, reading it as (N, C, L). If it is (N, L, D), e.g. token "
                    "embeddings, pass channels_last=True to mask its positions (axis 1); pass "
                    "channels_last=False to confirm (N, C, L) and silence this warning."
                )
                return

    def to_channels_first(self, x: Tensor) -> Tensor:
        return x.movedim(-1, 1) if self.channels_last and x.dim() > 2 else x

    def to_caller(self, x: Tensor) -> Tensor:
        return x.movedim(1, -1) if self.channels_last and x.dim() > 2 else x

    def baseline_to_channels_first(self, baseline: Any, x: Tensor) -> Any:
        """A full baseline tensor in the caller's layout is moved like the input; None, scalars
        and per-channel values pass through."""
        if isinstance(baseline, Tensor) and baseline.dim() == x.dim():
            return self.to_channels_first(baseline)
        return baseline


__all__ = ["MaskLayout"]
