"""Fong & Vedaldi's upsampled and smoothed low-resolution mask (ICCV 2017, Eq. 4)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from captum_masks._engine.checks import check_at_least, check_positive_int
from captum_masks.masks.base import UnitIntervalMask
from captum_masks.masks.interpolation import _apply_per_axis, smooth_upsampling
from captum_masks.masks.low_resolution import LowResolutionMask


class UpsampledMask(UnitIntervalMask):
    r"""A low-resolution mask, upsampled by ``factor`` and smoothed (Fong & Vedaldi, Eq. 4):
    Meaningful Perturbation's mask.

    The parameters are the low-resolution mask m itself, kept in [0, 1] after every step. The
    full-resolution mask is M = g_σ ∗ upsample(m) (linear/bilinear upsampling, Gaussian smoothing
    with reflected borders), shifted by a random integer jitter τ ∈ [0, jitter) per axis at every
    step (edges replicated; every example of a batch gets the same shift at a step): the paper's
    expectation over shifts E_τ, taken on the mask instead of the image.

    Upsampling, shift and smoothing are linear and separable, so each axis is one small
    (side × low-res side) matrix, built once per input shape; a mask is then two matrix products,
    far cheaper than convolving the full-resolution mask at every step.

    Args:
        factor (int): upsampling factor δ; the low-resolution side is ⌈side / factor⌉
            (28 × 28 cells for 224 px). Default: 8
        smooth_sigma (float): σ in pixels of the Gaussian applied to the upsampled mask (0:
            none). Default: 5
        jitter (int): shifts are drawn from {0, …, jitter − 1} pixels; 0 or 1 disables it.
            Default: 4
        init_value (float): the value every cell starts at, in [0, 1]. Default: 0.5

    Examples::

        >>> mask = UpsampledMask(factor=4, smooth_sigma=2.0, jitter=0)
        >>> attribution = MeaningfulPerturbation(model).attribute(images, target=3, mask=mask)
        >>> theta = mask.init([images], generator)[0]          # (N, 1, 56, 56) for 224 px
        >>> full = mask.expand(theta, images.shape[2:], None)   # (N, 1, 224, 224)
    """

    def __init__(
        self,
        factor: int = 8,
        smooth_sigma: float = 5.0,
        jitter: int = 4,
        init_value: float = 0.5,
    ) -> None:
        check_positive_int("factor", factor)
        if not isinstance(jitter, int) or isinstance(jitter, bool) or jitter < 0:
            raise ValueError(f"jitter must be an int >= 0, got {jitter!r}")
        check_at_least("smooth_sigma", smooth_sigma, 0.0, "σ of the smoothing, in pixels")
        super().__init__(init_value)
        self.factor = factor
        self.smooth_sigma = smooth_sigma
        self.jitter = jitter
        self._operators: dict[tuple, Tensor] = {}

    def cell_shape(self, spatial_shape: Sequence[int]) -> list[int]:
        return [math.ceil(side / self.factor) for side in spatial_shape]

    def expand(
        self,
        params: Tensor,
        spatial_shape: Sequence[int],
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Full-resolution ``(N, 1, *spatial_shape)`` mask; jittered when a generator is given."""
        operators = [
            self._axis_operators(low, side, params)
            for low, side in zip(params.shape[2:], spatial_shape)
        ]
        # one shift per axis for the whole batch: an example is shifted alike in any batch
        if generator is not None and self.jitter > 1:
            shifts = torch.randint(
                self.jitter, (len(operators),), generator=generator, device=params.device
            )
        else:
            shifts = torch.zeros(len(operators), dtype=torch.long, device=params.device)
        shifted = [ops[shift] for ops, shift in zip(operators, shifts)]
        return _apply_per_axis(shifted, params[:, 0]).unsqueeze(1)

    def low_resolution_of(self, params: Tensor) -> LowResolutionMask:
        return LowResolutionMask(params, "smooth", self.factor, self.smooth_sigma)

    def _axis_operators(self, low: int, side: int, like: Tensor) -> Tensor:
        key = (low, side, like.device, like.dtype)
        if key not in self._operators:
            self._operators[key] = smooth_upsampling(
                low, side, self.factor, self.smooth_sigma, max(self.jitter, 1), like
            )
        return self._operators[key]

    def __repr__(self) -> str:
        return (
            f"UpsampledMask(factor={self.factor}, smooth_sigma={self.smooth_sigma}, "
            f"jitter={self.jitter}, init_value={self.init_value})"
        )


__all__ = ["UpsampledMask"]
