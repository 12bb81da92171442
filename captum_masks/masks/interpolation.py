"""Linear interpolation of low-resolution masks, one small matrix per axis."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_masks.perturbations import gaussian_blur


def upsample_linearly(values: Tensor, spatial_shape: Sequence[int]) -> Tensor:
    """``(N, C, *low)`` values linearly interpolated to ``spatial_shape`` (``align_corners``
    False, as ``F.interpolate``); values already at that shape are returned as they are. Each
    axis is one small matrix, whose products (and their gradients) cost a fraction of
    ``F.interpolate``'s bilinear backward on the CPU."""
    if tuple(values.shape[2:]) == tuple(spatial_shape):
        return values
    operators = [
        _linear_operator(low, side, values.device, values.dtype)
        for low, side in zip(values.shape[2:], spatial_shape)
    ]
    resized = _apply_per_axis(operators, values.flatten(0, 1))
    return resized.view(*values.shape[:2], *resized.shape[1:])


@functools.lru_cache(maxsize=64)
def _linear_operator(low: int, side: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(side, low): linear interpolation of ``low`` samples to ``side`` (``align_corners``
    False)."""
    basis = torch.eye(low, device=device, dtype=dtype).unsqueeze(1)
    return F.interpolate(basis, size=side, mode="linear", align_corners=False)[:, 0].T.contiguous()


def _apply_per_axis(operators: Sequence[Tensor], values: Tensor) -> Tensor:
    """``(N, *low)`` values mapped by one ``(side, low)`` matrix per axis to ``(N, *sides)``:
    ``"ia,nab,jb->nij"`` for images, likewise in 1-D and 3-D."""
    full, low = "ijk"[: len(operators)], "abc"[: len(operators)]
    names = [f"{outer}{inner}" for outer, inner in zip(full, low)]
    equation = ",".join([names[0], f"n{low}", *names[1:]]) + f"->n{full}"
    return torch.einsum(equation, operators[0], values, *operators[1:])


def smooth_upsampling(
    low: int, side: int, factor: int, sigma: float, shifts: int, like: Tensor
) -> Tensor:
    """(shifts, side, low): ``low`` cells upsampled linearly by ``factor``, shifted by 0 … shifts
    − 1 positions (edges replicated), cut to ``side`` and smoothed with a Gaussian of ``sigma``:
    :class:`~captum_masks.UpsampledMask`'s map along one axis, on ``like``'s device and dtype."""
    basis = torch.eye(low, device=like.device, dtype=like.dtype).unsqueeze(1)
    upsampled = F.interpolate(basis, scale_factor=factor, mode="linear", align_corners=False)
    padded = F.pad(upsampled, (shifts, 0), mode="replicate")
    shifted = torch.cat(
        [padded[..., shifts - s : shifts - s + side] for s in range(shifts)], dim=1
    )
    return gaussian_blur(shifted, sigma).permute(1, 2, 0).contiguous()


def upsample_smoothly(
    values: Tensor, spatial_shape: Sequence[int], factor: int, sigma: float
) -> Tensor:
    """``(N, 1, *low)`` cells upsampled by ``factor`` and smoothed with ``sigma`` to
    ``(N, 1, *spatial_shape)``, without a shift."""
    operators = [
        smooth_upsampling(low, side, factor, sigma, 1, values)[0]
        for low, side in zip(values.shape[2:], spatial_shape)
    ]
    return _apply_per_axis(operators, values[:, 0]).unsqueeze(1)


__all__ = ["smooth_upsampling", "upsample_linearly", "upsample_smoothly"]
