"""Deletion and insertion curves (Petsiuk et al., RISE): how fast the target's probability falls
or rises as pixels are removed or added in the attribution's order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from captum_masks._engine.checks import (
    check_positive_int,
    model_scores,
    resolve_targets,
)
from captum_masks._engine.scores import select_scores
from captum_masks.metrics.maps import to_heatmap
from captum_masks.perturbations import gaussian_blur


def deletion_insertion_curve(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Tensor,
    target: Any = None,
    mode: str = "deletion",
    n_steps: int = 16,
    substrate: str = "blur",
    blur_sigma: float = 10.0,
    batch_size: int = 64,
) -> tuple[Tensor, Tensor]:
    r"""Deletion or insertion curve and its area (Petsiuk et al., RISE, BMVC 2018).

    Pixels are visited in descending relevance (channel-summed map, ties in raster order). At step
    k of ``n_steps`` the first k/n_steps of them are *deleted* (replaced by the substrate) or
    *inserted* into the substrate image; the curve is the softmax probability of the target.
    Lower deletion AUC and higher insertion AUC are better.

    Args:
        forward_func (Callable): the model.
        inputs (Tensor): (N, C, H, W) images.
        attributions (Tensor): any form accepted by :func:`to_heatmap`.
        target: Captum target forms; None uses the predicted class.
        mode (str): ``"deletion"`` or ``"insertion"``.
        n_steps (int): number of steps; the curve has ``n_steps + 1`` points on x ∈ [0, 1].
        substrate (str): ``"blur"`` (Gaussian, ``blur_sigma``) or ``"zero"``.
        batch_size (int): perturbed images per forward pass.

    Returns:
        ``(auc, curve)``: (N,) trapezoid areas and (N, n_steps + 1) probabilities.

    Examples::

        >>> auc, curve = deletion_insertion_curve(model, x, attributions, target=3, n_steps=32)
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    if substrate not in ("blur", "zero"):
        raise ValueError(f"substrate must be 'blur' or 'zero', got {substrate!r}")
    check_positive_int("n_steps", n_steps)
    heat = to_heatmap(attributions)
    num, _, height, width = inputs.shape
    if heat.shape != (num, height, width):
        raise ValueError(
            f"attributions {tuple(heat.shape)} do not match inputs {tuple(inputs.shape)}"
        )
    with torch.no_grad():
        targets = resolve_targets(target, model_scores(forward_func(inputs)))
        background = (
            gaussian_blur(inputs, blur_sigma) if substrate == "blur" else torch.zeros_like(inputs)
        )
        order = torch.argsort(heat.flatten(1), dim=1, descending=True, stable=True)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
        rank = rank.view(num, 1, height, width)
        counts = [round(k * height * width / n_steps) for k in range(n_steps + 1)]
        curve = inputs.new_empty(num, n_steps + 1)
        for example in range(num):
            visited = torch.stack([rank[example] < count for count in counts]).to(inputs.dtype)
            keep = 1.0 - visited if mode == "deletion" else visited
            images = keep * inputs[example] + (1.0 - keep) * background[example]
            for start in range(0, len(counts), batch_size):
                chunk = images[start : start + batch_size]
                chunk_targets = targets[example].expand(chunk.shape[0], -1)
                curve[example, start : start + chunk.shape[0]] = select_scores(
                    model_scores(forward_func(chunk)), chunk_targets, apply_softmax=True
                )
    auc = torch.trapezoid(curve, dx=1.0 / n_steps, dim=1)
    return auc, curve


__all__ = [
    "deletion_insertion_curve",
]
