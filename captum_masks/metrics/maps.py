"""Attribution maps as one (N, H, W) heat map, ground-truth masks and normalisation: what every
metric starts from."""

from __future__ import annotations

import torch
from torch import Tensor


def to_heatmap(attributions: Tensor | tuple, absolute: bool = False) -> Tensor:
    """Reduce attributions to one (N, H, W) map per example.

    Args:
        attributions (Tensor or 1-tuple): (N, C, H, W), (N, 1, H, W) or (N, H, W).
        absolute (bool): sum absolute values over channels instead of signed values.

    Returns:
        Tensor (N, H, W), detached, in the attributions' dtype.

    Examples::

        >>> heat = to_heatmap(IntegratedGradients(model).attribute(x, target=3))
    """
    if isinstance(attributions, tuple):
        if len(attributions) != 1:
            raise ValueError("attributions must be one tensor (or a 1-tuple) for image metrics")
        attributions = attributions[0]
    assert isinstance(attributions, Tensor)
    attributions = attributions.detach()
    if attributions.dim() == 3:
        return attributions.abs() if absolute else attributions
    if attributions.dim() != 4:
        raise ValueError(
            "attributions must be (N, C, H, W), (N, 1, H, W) or (N, H, W), "
            f"got shape {tuple(attributions.shape)}"
        )
    return (attributions.abs() if absolute else attributions).sum(dim=1)


def as_masks(gt_masks: Tensor, like: Tensor) -> Tensor:
    masks = gt_masks[:, 0] if gt_masks.dim() == 4 else gt_masks
    if masks.shape != like.shape:
        raise ValueError(
            f"gt_masks of shape {tuple(gt_masks.shape)} do not match the attribution maps "
            f"{tuple(like.shape)}"
        )
    return masks.to(device=like.device) != 0


def min_max_normalise(heat: Tensor) -> Tensor:
    """Min-max normalise each map to [0, 1] (a constant map becomes 0)."""
    flat = heat.flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    scale = (high - low).clamp_min(torch.finfo(heat.dtype).tiny)
    return (heat - low.view(-1, 1, 1)) / scale.view(-1, 1, 1)


__all__ = ["as_masks", "min_max_normalise", "to_heatmap"]
