"""NeuroMask's mask: the sigmoid of unconstrained weights (Alzantot et al., 2019)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from captum_masks._engine.checks import check_at_least, check_positive_int
from captum_masks._engine.scale import whole_scaled_to_input
from captum_masks.masks.base import CellMask

MIN_TEMPERATURE = 1e-6
#: positions per weight at 224 px when ``block`` is None, scaled to the input (56 weights along
#: the side; NeuroMaskAttr's docstring says why)
BLOCK_AT_224 = 4
#: how far a warm start's values are kept off 0 and 1, where W would be infinite: a start of 1
#: is W = 13.8·T, which the sparseness term pulls down for dozens of steps before the mask drops
#: (a start that the first, large RMSprop steps cross is lost)
WARM_START_MARGIN = 1e-6


class SigmoidMask(CellMask):
    r"""A mask m = σ(W / temperature) over unconstrained weights W: NeuroMask's mask, one weight
    per position or per block of ``block`` positions along each spatial axis.

    Args:
        temperature (float): T, divides W before the sigmoid; lower is sharper; at least 1e-6.
            Default: 1.5
        init_range (tuple of float): W starts uniform in [low, high), one draw from the call's
            generator shared by every example, so a batch gives one-by-one results.
            Default: (-1, 1)
        block (int or None): positions per weight along each spatial axis; the mask is W's
            sigmoid repeated over each block (nearest upsampling), and the last block of an axis
            whose length ``block`` does not divide is cut short. 1: one weight per position.
            None: on images and volumes the shortest spatial side ÷ 56, rounded, at least 1
            (4 × 4 blocks at 224 px, 1 up to 84 positions); 1 on sequences, whose positions may
            be tokens; a vision transformer's patch side when the model has one (NeuroMaskAttr
            reads it from the model). Default: None

    Examples::

        >>> mask = SigmoidMask(temperature=1.0, block=1)
        >>> attribution = NeuroMaskAttr(model).attribute(images, target=3, mask=mask)
        >>> weights = mask.init([images], generator)[0]      # (N, 1, H, W)
        >>> full = mask.expand(weights, images.shape[2:])    # σ(W / T): (N, 1, H, W)
    """

    def __init__(
        self,
        temperature: float = 1.5,
        init_range: tuple[float, float] = (-1.0, 1.0),
        block: int | None = None,
    ) -> None:
        check_at_least(
            "temperature", temperature, MIN_TEMPERATURE, "below it W / T overflows to NaN"
        )
        check_positive_int("block", block, allow_none=True)
        low, high = init_range
        if not low < high:
            raise ValueError(f"init_range must be (low, high) with low < high, got {init_range!r}")
        self.temperature = temperature
        self.init_range = (float(low), float(high))
        self.block = block

    def block_for(self, spatial_shape: Sequence[int]) -> int:
        """Positions per weight along each axis of an input with ``spatial_shape``."""
        if self.block is not None:
            return self.block
        if len(spatial_shape) < 2:
            return 1
        return whole_scaled_to_input(BLOCK_AT_224, spatial_shape)

    def cell_shape(self, spatial_shape: Sequence[int]) -> list[int]:
        block = self.block_for(spatial_shape)
        return [math.ceil(side / block) for side in spatial_shape]

    def init_cells(self, shape: Sequence[int], like: Tensor, generator: torch.Generator) -> Tensor:
        low, high = self.init_range
        one = (1, *shape[1:])  # one draw for every example: a batch gives one-by-one results
        uniform = torch.rand(one, generator=generator, device=like.device, dtype=like.dtype)
        return (low + (high - low) * uniform).expand(*shape).clone()

    def values(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params / self.temperature)

    def params_for(self, values: Tensor) -> Tensor:
        return self.temperature * torch.logit(values, eps=WARM_START_MARGIN)

    def expand(
        self,
        params: Tensor,
        spatial_shape: Sequence[int],
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """σ(W / T), each weight repeated over its block of ``spatial_shape``."""
        mask = self.values(params)
        block = self.block_for(spatial_shape)
        if block == 1:
            return mask
        for axis, side in enumerate(spatial_shape, start=2):
            mask = mask.repeat_interleave(block, dim=axis).narrow(axis, 0, side)
        return mask

    def __repr__(self) -> str:
        return (
            f"SigmoidMask(temperature={self.temperature}, init_range={self.init_range}, "
            f"block={self.block})"
        )


__all__ = ["SigmoidMask"]
