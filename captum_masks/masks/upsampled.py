"""Fong & Vedaldi's upsampled and smoothed low-resolution mask (ICCV 2017, Eq. 4)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from captum_masks._engine.checks import check_at_least, check_positive_int
from captum_masks._engine.scale import whole_scaled_to_input
from captum_masks.masks.base import UnitIntervalMask
from captum_masks.masks.interpolation import _apply_per_axis, smooth_upsampling
from captum_masks.masks.low_resolution import LowResolutionMask

#: the paper's upsampling factor δ at 224 px (28 cells along the side)
PAPER_FACTOR = 8
#: the smoothing σ per unit of factor when it is derived: the paper's 5 px at δ = 8
SIGMA_PER_FACTOR = 0.625


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

    Left at None, the three sizes follow from the input, so that the mask covers a volume, a
    sequence or a 32-px image as the paper's covers a 224-px photo: the factor is the paper's
    δ = 8 at 224 px scaled to the shortest masked side (side ÷ 28), rounded, at least 1, the
    same on every axis; σ is ``0.625 · factor`` and the jitter ``factor // 2``. At 224 px that
    is the paper's δ = 8, σ = 5, τ < 4.

    Args:
        factor (int or None): upsampling factor δ; the low-resolution side is
            ⌈side / factor⌉. None derives it from the input (above). Default: None
        smooth_sigma (float or None): σ in pixels of the Gaussian applied to the upsampled mask
            (0: none). None is ``0.625 · factor``. Default: None
        jitter (int or None): shifts are drawn from {0, …, jitter − 1} pixels; 0 or 1 disables
            it. None is ``factor // 2``. Default: None
        init_value (float): the value every cell starts at, in [0, 1]. Default: 0.5

    Examples::

        >>> mask = UpsampledMask(factor=4, smooth_sigma=2.0, jitter=0)
        >>> attribution = MeaningfulPerturbation(model).attribute(images, target=3, mask=mask)
        >>> theta = mask.init([images], generator)[0]          # (N, 1, 56, 56) for 224 px
        >>> UpsampledMask().sizes_for((32, 32))                # (factor, σ, jitter) at 32 px
        (1, 0.625, 0)
        >>> full = mask.expand(theta, images.shape[2:], None)   # (N, 1, 224, 224)
    """

    def __init__(
        self,
        factor: int | None = None,
        smooth_sigma: float | None = None,
        jitter: int | None = None,
        init_value: float = 0.5,
    ) -> None:
        check_positive_int("factor", factor, allow_none=True)
        if jitter is not None and (
            not isinstance(jitter, int) or isinstance(jitter, bool) or jitter < 0
        ):
            raise ValueError(f"jitter must be an int >= 0 or None, got {jitter!r}")
        if smooth_sigma is not None:
            check_at_least("smooth_sigma", smooth_sigma, 0.0, "σ of the smoothing, in pixels")
        super().__init__(init_value)
        self.factor = factor
        self.smooth_sigma = smooth_sigma
        self.jitter = jitter
        self._operators: dict[tuple, Tensor] = {}

    def sizes_for(self, spatial_shape: Sequence[int]) -> tuple[int, float, int]:
        """``(factor, smooth_sigma, jitter)`` for an input with ``spatial_shape``: the given
        values, and the rule above for those left at None."""
        factor = self.factor
        if factor is None:
            factor = whole_scaled_to_input(PAPER_FACTOR, spatial_shape)
        sigma = SIGMA_PER_FACTOR * factor if self.smooth_sigma is None else self.smooth_sigma
        jitter = factor // 2 if self.jitter is None else self.jitter
        return factor, float(sigma), jitter

    def cell_shape(self, spatial_shape: Sequence[int]) -> list[int]:
        factor = self.sizes_for(spatial_shape)[0]
        return [math.ceil(side / factor) for side in spatial_shape]

    def expand(
        self,
        params: Tensor,
        spatial_shape: Sequence[int],
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Full-resolution ``(N, 1, *spatial_shape)`` mask; jittered when a generator is given."""
        factor, sigma, jitter = self.sizes_for(spatial_shape)
        operators = [
            self._axis_operators(low, side, (factor, sigma, jitter), params)
            for low, side in zip(params.shape[2:], spatial_shape)
        ]
        # one shift per axis for the whole batch: an example is shifted alike in any batch
        if generator is not None and jitter > 1:
            shifts = torch.randint(
                jitter, (len(operators),), generator=generator, device=params.device
            )
        else:
            shifts = torch.zeros(len(operators), dtype=torch.long, device=params.device)
        shifted = [ops[shift] for ops, shift in zip(operators, shifts)]
        return _apply_per_axis(shifted, params[:, 0]).unsqueeze(1)

    def low_resolution_of(self, params: Tensor, spatial_shape: Sequence[int]) -> LowResolutionMask:
        factor, sigma, _ = self.sizes_for(spatial_shape)
        return LowResolutionMask(params, "smooth", factor, sigma)

    def _axis_operators(
        self, low: int, side: int, sizes: tuple[int, float, int], like: Tensor
    ) -> Tensor:
        key = (low, side, sizes, like.device, like.dtype)
        if key not in self._operators:
            factor, sigma, jitter = sizes
            self._operators[key] = smooth_upsampling(
                low, side, factor, sigma, max(jitter, 1), like
            )
        return self._operators[key]

    def __repr__(self) -> str:
        return (
            f"UpsampledMask(factor={self.factor}, smooth_sigma={self.smooth_sigma}, "
            f"jitter={self.jitter}, init_value={self.init_value})"
        )


__all__ = ["UpsampledMask"]
