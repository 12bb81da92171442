"""Guided Feature Inversion's mask: a combination of a layer's feature maps (Du et al.,
Eq. 6-7)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from captum_masks.masks.interpolation import upsample_linearly
from captum_masks.masks.low_resolution import LowResolutionMask


class ChannelCombinationMask:
    r"""A mask built from a layer's feature maps (Du et al., Eq. 6–7): m = Σ_i ω_i·f_i(x),
    min-max normalised per example and bilinearly upsampled to the input: Guided Feature
    Inversion's mask, an implementation of :class:`~captum_masks.masks.Mask`.

    The parameters are the weights ω, one per channel, kept ≥ 0 after every step. The feature
    maps are those of the clean input and stay fixed during the optimisation.

    Args:
        features (Tensor): (N, K, h, w) feature maps of the clean input, for every example of
            the call.
        size (tuple of int): the input's (H, W).
        init_value (float): ω's initial value for every channel. Default: 0.1

    Examples::

        >>> mask = ChannelCombinationMask(features, images.shape[2:])
        >>> (omega,) = mask.init([images], generator)                 # (N, K)
        >>> (m,) = mask.render([omega], [images], torch.arange(N))    # (N, 1, H, W) in [0, 1]
    """

    def __init__(self, features: Tensor, size: Sequence[int], init_value: float = 0.1) -> None:
        self.features = features.detach()
        self.size = tuple(size)
        self.init_value = float(init_value)

    def init(self, inputs: Sequence[Tensor], generator: torch.Generator) -> list[Tensor]:
        shape = (inputs[0].shape[0], self.features.shape[1])
        return [self.features.new_full(shape, self.init_value)]

    def render(
        self,
        params: Sequence[Tensor],
        inputs: Sequence[Tensor],
        rows: Tensor,
        generator: torch.Generator | None = None,
    ) -> list[Tensor]:
        return [upsample_linearly(self.at_layer_resolution(params[0], rows), self.size)]

    def at_layer_resolution(self, weights: Tensor, rows: Tensor | None = None) -> Tensor:
        """The normalised combination (n, 1, h, w) at the layer's resolution, before upsampling,
        for the examples at ``rows`` (all of them for None)."""
        features = self.features if rows is None else self.features[rows]
        combined = torch.einsum("nk,nkhw->nhw", weights, features).unsqueeze(1)
        flat = combined.flatten(1)
        low = flat.min(dim=1).values.view(-1, 1, 1, 1)
        high = flat.max(dim=1).values.view(-1, 1, 1, 1)
        # Eq. 7 (the paper divides by max − min; the authors' code by max)
        return (combined - low) / (high - low).clamp_min(torch.finfo(combined.dtype).eps)

    def project_(self, params: Sequence[Tensor]) -> None:
        """ω ≥ 0 after every step (Algorithms 1–2, line "Clip")."""
        for param in params:
            param.clamp_(min=0.0)

    def grids(self, params: Sequence[Tensor]) -> list[Tensor]:
        return []  # channels have no neighbours

    # ω ≥ 0 after every step, so its plain mean is its L1 norm, with the subgradient 1 at 0
    # that Algorithms 1–2 use (abs would stop pulling a channel at 0)
    def mean(self, values: Sequence[Tensor], rows: Tensor) -> Tensor:
        return values[0].mean(dim=1)

    def total(self, values: Sequence[Tensor], rows: Tensor) -> Tensor:
        return values[0].sum(dim=1)

    def low_resolution(
        self, params: Sequence[Tensor], inputs: Sequence[Tensor]
    ) -> tuple[LowResolutionMask, ...]:
        return (LowResolutionMask(self.at_layer_resolution(params[0])),)


__all__ = ["ChannelCombinationMask"]
