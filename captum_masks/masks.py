"""Mask parametrisations: how optimised parameters θ become a mask m(θ) at input resolution.

A parametrisation is a small stateless object: ``init`` builds the parameters for a batch and
``__call__`` maps parameters to a ``(N, 1, *spatial)`` mask in [0, 1] that broadcasts over channels.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_masks._inputs import check_at_least, check_positive_int
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
    names = [f"{f}{l}" for f, l in zip(full, low)]
    equation = ",".join([names[0], f"n{low}", *names[1:]]) + f"->n{full}"
    return torch.einsum(equation, operators[0], values, *operators[1:])


def clamp_to_unit_interval_(params: Sequence[Tensor]) -> None:
    """Project mask parameters back onto [0, 1] after an optimiser step (in place)."""
    for param in params:
        param.clamp_(0.0, 1.0)


class UpsampledMask:
    r"""A low-resolution mask, upsampled by ``factor`` and smoothed (Fong & Vedaldi, Eq. 4).

    The parameters are the low-resolution mask itself, kept in [0, 1] by :meth:`clamp_`. The
    full-resolution mask is M = g_σ ∗ upsample(m) (linear/bilinear upsampling, Gaussian smoothing
    with reflected borders), optionally shifted by a random integer jitter τ ∈ [0, jitter) per axis
    (edges replicated; every example of a batch gets the same shift at a step): the paper's
    expectation over shifts E_τ, taken on the mask instead of the image.

    Upsampling, shift and smoothing are linear and separable, so each axis is one small
    (side × low-res side) matrix, built once per input shape; a mask is then two matrix products,
    far cheaper than convolving the full-resolution mask at every step.

    Args:
        factor (int): upsampling factor δ; the low-resolution side is ⌈side / factor⌉.
        smooth_sigma (float): σ of the Gaussian applied to the upsampled mask (0: none).
        jitter (int): shifts are drawn from {0, …, jitter − 1} pixels; 0 or 1 disables it.

    Examples::

        >>> parametrisation = UpsampledMask(factor=8, smooth_sigma=5.0)
        >>> theta = parametrisation.init(images, fill=0.5)    # (N, 1, 28, 28) for 224 px
        >>> mask = parametrisation(theta, images.shape[2:])   # (N, 1, 224, 224)
    """

    def __init__(self, factor: int = 8, smooth_sigma: float = 5.0, jitter: int = 0) -> None:
        check_positive_int("mask_factor", factor)
        if not isinstance(jitter, int) or jitter < 0:
            raise ValueError(f"jitter must be an int >= 0, got {jitter!r}")
        if smooth_sigma < 0:
            raise ValueError(f"mask_sigma must be >= 0, got {smooth_sigma!r}")
        self.factor = factor
        self.smooth_sigma = smooth_sigma
        self.jitter = jitter
        self._operators: dict[tuple, Tensor] = {}

    def init(self, inputs: Tensor, fill: float) -> Tensor:
        low_res = [math.ceil(side / self.factor) for side in inputs.shape[2:]]
        return torch.full(
            (inputs.shape[0], 1, *low_res), float(fill), device=inputs.device, dtype=inputs.dtype
        )

    def __call__(
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

    def _axis_operators(self, low: int, side: int, like: Tensor) -> Tensor:
        """(max(jitter, 1), side, low): the linear map low-res → full-res for each shift."""
        key = (low, side, like.device, like.dtype)
        if key not in self._operators:
            basis = torch.eye(low, device=like.device, dtype=like.dtype).unsqueeze(1)
            upsampled = F.interpolate(
                basis, scale_factor=self.factor, mode="linear", align_corners=False
            )
            pad = max(self.jitter, 1)
            padded = F.pad(upsampled, (pad, 0), mode="replicate")
            shifted = torch.cat([padded[..., pad - s : pad - s + side] for s in range(pad)], dim=1)
            smoothed = gaussian_blur(shifted, self.smooth_sigma)
            self._operators[key] = smoothed.permute(1, 2, 0).contiguous()
        return self._operators[key]

    clamp_ = staticmethod(clamp_to_unit_interval_)

    def __repr__(self) -> str:
        return (
            f"UpsampledMask(factor={self.factor}, smooth_sigma={self.smooth_sigma}, "
            f"jitter={self.jitter})"
        )


MIN_TEMPERATURE = 1e-6


class SigmoidMask:
    r"""A mask m = σ(W / temperature) over unconstrained weights W (NeuroMask), one weight per
    position or per block of ``block`` positions along each spatial axis.

    Args:
        temperature (float): divides W before the sigmoid; lower is sharper; at least 1e-6.
        init_range (tuple of float): W starts uniform in [low, high), drawn from the call's
            generator so a seed fixes it.
        block (int): positions per weight along each spatial axis; the mask is W's sigmoid
            repeated over each block (nearest upsampling), and the last block of an axis whose
            length ``block`` does not divide is cut short. 1: one weight per position.

    Examples::

        >>> parametrisation = SigmoidMask(temperature=0.3, init_range=(-1.0, 1.0), block=4)
        >>> weights = parametrisation.init(images, generator)   # (N, 1, ⌈H/4⌉, ⌈W/4⌉)
        >>> mask = parametrisation(weights, images.shape[2:])   # (N, 1, H, W)
    """

    def __init__(
        self,
        temperature: float = 1.0,
        init_range: tuple[float, float] = (-1.0, 1.0),
        block: int = 1,
    ):
        check_at_least(
            "temperature", temperature, MIN_TEMPERATURE, "below it W / T overflows to NaN"
        )
        check_positive_int("block", block)
        low, high = init_range
        if not low < high:
            raise ValueError(f"init_range must be (low, high) with low < high, got {init_range!r}")
        self.temperature = temperature
        self.init_range = (float(low), float(high))
        self.block = block

    def blocked(self, block: int) -> SigmoidMask:
        """The same mask with ``block`` positions per weight along each spatial axis."""
        return SigmoidMask(self.temperature, self.init_range, block)

    def init(self, inputs: Tensor, generator: torch.Generator) -> Tensor:
        """Weights ``(N, 1, *⌈spatial / block⌉)`` for ``(N, C, *spatial)`` inputs, uniform in
        ``init_range``."""
        blocks = [math.ceil(side / self.block) for side in inputs.shape[2:]]
        return self.draw((inputs.shape[0], 1, *blocks), generator, inputs)

    def draw(self, shape: Sequence[int], generator: torch.Generator, like: Tensor) -> Tensor:
        """Weights of any ``shape`` (e.g. one per feature group), uniform in ``init_range``, on
        the device and dtype of ``like``."""
        low, high = self.init_range
        uniform = torch.rand(
            tuple(shape), generator=generator, device=like.device, dtype=like.dtype
        )
        return low + (high - low) * uniform

    def __call__(self, weights: Tensor, spatial_shape: Sequence[int] | None = None) -> Tensor:
        """σ(W / T), each weight repeated over its block of ``spatial_shape`` (the trailing
        axes of W); None keeps W's own shape."""
        mask = torch.sigmoid(weights / self.temperature)
        if spatial_shape is None or self.block == 1:
            return mask
        for axis, side in enumerate(spatial_shape, start=2):
            mask = mask.repeat_interleave(self.block, dim=axis).narrow(axis, 0, side)
        return mask

    def __repr__(self) -> str:
        return (
            f"SigmoidMask(temperature={self.temperature}, init_range={self.init_range}, "
            f"block={self.block})"
        )


class ChannelCombinationMask:
    r"""A mask built from a layer's feature maps (Du et al., Eq. 6–7): m = Σ_i ω_i·f_i(x),
    min-max normalised per example and bilinearly upsampled to the input.

    The parameters are the weights ω, one per channel, kept ≥ 0 by :meth:`clamp_`. The feature
    maps are those of the clean input and stay fixed during the optimisation.

    Args:
        features (Tensor): (N, K, h, w) feature maps of the clean input.
        size (tuple of int): the input's (H, W).

    Examples::

        >>> parametrisation = ChannelCombinationMask(features, images.shape[2:])
        >>> omega = parametrisation.init(0.1)           # (N, K)
        >>> mask = parametrisation(omega)                # (N, 1, H, W) in [0, 1]
    """

    def __init__(self, features: Tensor, size: Sequence[int]) -> None:
        self.features = features.detach()
        self.size = tuple(size)

    def init(self, value: float) -> Tensor:
        """ω = ``value`` for every channel of every example."""
        return torch.full(
            self.features.shape[:2],
            float(value),
            device=self.features.device,
            dtype=self.features.dtype,
        )

    def __call__(self, weights: Tensor, batch: slice | Tensor | None = None) -> Tensor:
        return upsample_linearly(self.at_layer_resolution(weights, batch), self.size)

    def at_layer_resolution(self, weights: Tensor, batch: slice | Tensor | None = None) -> Tensor:
        """The normalised combination (N, 1, h, w) at the layer's resolution, before upsampling."""
        features = self.features if batch is None else self.features[batch]
        combined = torch.einsum("nk,nkhw->nhw", weights, features).unsqueeze(1)
        flat = combined.flatten(1)
        low = flat.min(dim=1).values.view(-1, 1, 1, 1)
        high = flat.max(dim=1).values.view(-1, 1, 1, 1)
        # Eq. 7 (the paper divides by max − min; the authors' code by max)
        return (combined - low) / (high - low).clamp_min(torch.finfo(combined.dtype).eps)

    @staticmethod
    def clamp_(params: Sequence[Tensor]) -> None:
        """ω ≥ 0 after every step (Algorithms 1–2, line "Clip")."""
        for param in params:
            param.clamp_(min=0.0)


__all__ = [
    "ChannelCombinationMask",
    "SigmoidMask",
    "UpsampledMask",
    "upsample_linearly",
]
