"""Where the attribution points: the pointing game, relevance mass, IoU, boxes, the weakly
supervised localisation error and the Dabkowski & Gal saliency metric."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_masks._engine.checks import model_scores, resolve_targets
from captum_masks._engine.scores import select_scores
from captum_masks.metrics.maps import as_masks, min_max_normalise, to_heatmap
from captum_masks.perturbations import gaussian_blur

BoxesType = Tensor | Sequence[Tensor]


def pointing_game(
    attributions: Tensor, gt_masks: Tensor, tolerance: int = 15, sigma: float = 0.0
) -> Tensor:
    """Pointing game (Zhang et al., ECCV 2016): is the map's maximum on the object?

    A hit is a maximum within ``tolerance`` pixels (Euclidean) of a ground-truth pixel; the paper
    uses 15 px at ImageNet scale, so scale it with the image side. When several pixels share the
    maximum (masks saturate at 1), the point is the tied pixel nearest to the centroid of all tied
    pixels, so a saturated blob points at its middle rather than at its top-left corner.
    ``sigma`` > 0 smooths the map with a Gaussian first, so that the point is where relevance
    concentrates rather than one isolated pixel (pixel-level masks and gradients are speckled).

    Args:
        attributions (Tensor): any form accepted by :func:`to_heatmap` (signed sum).
        gt_masks (Tensor): (N, H, W) or (N, 1, H, W) object masks.
        tolerance (int): pixels.
        sigma (float): standard deviation in pixels of the smoothing; 0 points on the raw map.

    Returns:
        Tensor (N,) of 1.0 (hit) or 0.0 (miss); its mean is the accuracy.

    Examples::

        >>> accuracy = pointing_game(attributions, masks, tolerance=4).mean()
        >>> smoothed = pointing_game(attributions, masks, tolerance=15, sigma=4.0).mean()
    """
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    heat = to_heatmap(attributions)
    if sigma > 0:
        heat = gaussian_blur(heat.unsqueeze(1), sigma).squeeze(1)
    masks = as_masks(gt_masks, heat)
    _num, height, width = heat.shape
    grid_r = torch.arange(height, device=heat.device, dtype=heat.dtype).view(1, -1, 1)
    grid_c = torch.arange(width, device=heat.device, dtype=heat.dtype).view(1, 1, -1)
    tied = (heat == heat.amax(dim=(1, 2), keepdim=True)).to(heat.dtype)
    count = tied.sum(dim=(1, 2), keepdim=True)
    centre_r = (tied * grid_r).sum(dim=(1, 2), keepdim=True) / count
    centre_c = (tied * grid_c).sum(dim=(1, 2), keepdim=True) / count
    to_centre = (grid_r - centre_r) ** 2 + (grid_c - centre_c) ** 2
    index = torch.where(tied > 0, to_centre, torch.inf).flatten(1).argmin(dim=1)
    rows, cols = index // width, index % width
    distance2 = (grid_r - rows.view(-1, 1, 1)) ** 2 + (grid_c - cols.view(-1, 1, 1)) ** 2
    near = distance2 <= tolerance**2
    return (near & masks).flatten(1).any(dim=1).to(heat.dtype)


def relevance_mass(attributions: Tensor, gt_masks: Tensor) -> Tensor:
    """Share of the positive relevance that falls inside the ground truth (Arras et al. 2022).

    Args:
        attributions (Tensor): any form accepted by :func:`to_heatmap`; negative values of the
            channel-summed map are ignored.
        gt_masks (Tensor): (N, H, W) or (N, 1, H, W).

    Returns:
        Tensor (N,) in [0, 1]; 0 for a map with no positive relevance. A random map scores about
        the object's share of the image.

    Examples::

        >>> relevance_mass(attributions, masks).mean()
    """
    heat = to_heatmap(attributions).clamp_min(0)
    masks = as_masks(gt_masks, heat)
    total = heat.flatten(1).sum(1)
    inside = (heat * masks).flatten(1).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(heat.dtype).tiny), 0.0)


def class_discrimination(attributions: Tensor, own_masks: Tensor, other_masks: Tensor) -> Tensor:
    """Whether an explanation of one object's class puts more positive relevance on that object
    than on another object of a different class in the same image.

    Args:
        attributions (Tensor): any form accepted by :func:`to_heatmap`; negative values of the
            channel-summed map are ignored.
        own_masks (Tensor): (N, H, W) or (N, 1, H, W), the object of the explained class.
        other_masks (Tensor): the same for the other object.

    Returns:
        Tensor (N,) of 1.0 where the relevance on the explained object is strictly larger, else
        0.0 (ties, such as an empty map, count as failures).

    Examples::

        >>> cat = GuidedFeatureInversion(model, layer).attribute(pair, target=cat_class)
        >>> class_discrimination(cat, cat_masks, coffee_masks).mean()
    """
    heat = to_heatmap(attributions).clamp_min(0)
    own = (heat * as_masks(own_masks, heat)).flatten(1).sum(1)
    other = (heat * as_masks(other_masks, heat)).flatten(1).sum(1)
    return (own > other).to(heat.dtype)


def _scaled_positive(attributions: Tensor) -> Tensor:
    heat = to_heatmap(attributions).clamp_min(0)
    peak = heat.flatten(1).max(dim=1).values.clamp_min(torch.finfo(heat.dtype).tiny)
    return heat / peak.view(-1, 1, 1)


def map_mean(attributions: Tensor) -> Tensor:
    """Sparseness: the mean of the positive map scaled so that its maximum is 1.

    A mask method's [0, 1] mask that keeps a fraction a of the image scores about a; a map with
    one bright pixel scores about 1 / (H·W).

    Args:
        attributions (Tensor): any form accepted by :func:`to_heatmap`.

    Returns:
        Tensor (N,) in [0, 1] (0 for a map with no positive relevance).

    Examples::

        >>> map_mean(NeuroMaskAttr(model).attribute(x)).mean()
    """
    return _scaled_positive(attributions).flatten(1).mean(dim=1)


def map_total_variation(attributions: Tensor) -> Tensor:
    """Roughness: the mean absolute difference between horizontally and vertically adjacent
    pixels of the positive map scaled to a maximum of 1, summed over the two directions.

    Args:
        attributions (Tensor): any form accepted by :func:`to_heatmap`.

    Returns:
        Tensor (N,) in [0, 2]; 0 for a constant map, lower is smoother.

    Examples::

        >>> map_total_variation(Saliency(model).attribute(x, target=3))
    """
    heat = _scaled_positive(attributions)
    vertical = heat.diff(dim=1).abs().flatten(1).mean(dim=1)
    horizontal = heat.diff(dim=2).abs().flatten(1).mean(dim=1)
    return vertical + horizontal


def mask_iou(attributions: Tensor, gt_masks: Tensor, threshold: float = 0.5) -> Tensor:
    """IoU of the map thresholded at ``threshold`` (after min-max normalisation) with the truth.

    Returns:
        Tensor (N,) in [0, 1].

    Examples::

        >>> mask_iou(attributions, masks, threshold=0.5)
    """
    predicted = min_max_normalise(to_heatmap(attributions)) >= threshold
    masks = as_masks(gt_masks, predicted)
    intersection = (predicted & masks).flatten(1).sum(1)
    union = (predicted | masks).flatten(1).sum(1)
    return intersection.double() / union.clamp_min(1).double()


def threshold_heatmap(heat: Tensor, method: str, alpha: float) -> Tensor:
    """Binarise (N, H, W) maps the three ways of Fong & Vedaldi §5.2.

    - ``"value"``: normalise to [0, 1], keep pixels ≥ α;
    - ``"energy"``: keep the most relevant pixels that hold a fraction α of the total (positive)
      relevance;
    - ``"mean"``: keep pixels ≥ α · mean of the map.
    """
    if method == "value":
        return min_max_normalise(heat) >= alpha
    if method == "mean":
        return heat >= alpha * heat.flatten(1).mean(1).view(-1, 1, 1)
    if method == "energy":
        flat = heat.clamp_min(0).flatten(1)
        values, order = flat.sort(dim=1, descending=True)
        cumulative = values.cumsum(1) / values.sum(1, keepdim=True).clamp_min(
            torch.finfo(heat.dtype).tiny
        )
        # keep every pixel up to and including the one that reaches the energy fraction
        keep_sorted = torch.cat(
            [torch.ones_like(cumulative[:, :1], dtype=torch.bool), cumulative[:, :-1] < alpha], 1
        )
        keep = torch.zeros_like(keep_sorted).scatter_(1, order, keep_sorted)
        return keep.view_as(heat) & (heat > 0)
    raise ValueError(f"method must be 'value', 'energy' or 'mean', got {method!r}")


def tightest_box(binary: Tensor) -> Tensor:
    """(N, 4) tightest (top, left, bottom, right) boxes around the True pixels of (N, H, W) masks;
    an empty mask gives the empty box (0, 0, 0, 0)."""
    rows, cols = binary.any(dim=2), binary.any(dim=1)

    def span(hits: Tensor) -> tuple[Tensor, Tensor]:
        size = hits.shape[1]
        index = torch.arange(size, device=hits.device).expand_as(hits)
        first = torch.where(hits, index, size).min(1).values
        last = torch.where(hits, index, -1).max(1).values + 1
        empty = ~hits.any(1)
        return first.masked_fill(empty, 0), last.masked_fill(empty, 0)

    top, bottom = span(rows)
    left, right = span(cols)
    return torch.stack([top, left, bottom, right], dim=1)


def box_iou(boxes: Tensor, other: Tensor) -> Tensor:
    """IoU of (N, 4) boxes with (N, K, 4) or (N, 4) boxes → (N, K) or (N,)."""
    squeeze = other.dim() == 2
    other = other.unsqueeze(1) if squeeze else other
    boxes = boxes.unsqueeze(1).to(other.dtype)
    top = torch.maximum(boxes[..., 0], other[..., 0])
    left = torch.maximum(boxes[..., 1], other[..., 1])
    bottom = torch.minimum(boxes[..., 2], other[..., 2])
    right = torch.minimum(boxes[..., 3], other[..., 3])
    intersection = (bottom - top).clamp_min(0) * (right - left).clamp_min(0)

    def area(b: Tensor) -> Tensor:
        return (b[..., 2] - b[..., 0]).clamp_min(0) * (b[..., 3] - b[..., 1]).clamp_min(0)

    union = area(boxes) + area(other) - intersection
    iou = intersection / union.clamp_min(1e-12)
    return iou[:, 0] if squeeze else iou


def localization_error(
    attributions: Tensor,
    gt_boxes: BoxesType,
    method: str = "value",
    alpha: float = 0.5,
) -> Tensor:
    """Weakly supervised localisation (Fong & Vedaldi §5.2; Du et al. §4.3): threshold the map,
    fit the tightest box, count it correct when its IoU with a ground-truth box is ≥ 0.5.

    Args:
        attributions (Tensor): any form accepted by :func:`to_heatmap`.
        gt_boxes (Tensor or sequence of Tensor): (N, 4) boxes, or one (K_i, 4) tensor per
            example when an image has several objects (any one may be matched).
        method (str): ``"value"``, ``"energy"`` or ``"mean"`` (see :func:`threshold_heatmap`).
        alpha (float): the threshold parameter; the papers pick it on held-out images
            (value and energy: α ∈ [0, 0.95]; mean: α ∈ [0, 10]).

    Returns:
        Tensor (N,) of 1.0 (error) or 0.0 (correct); its mean is the localisation error.

    Examples::

        >>> error = localization_error(attributions, boxes, method="energy", alpha=0.5).mean()
    """
    heat = to_heatmap(attributions)
    predicted = tightest_box(threshold_heatmap(heat, method, alpha))
    if isinstance(gt_boxes, Tensor) and gt_boxes.dim() == 2:
        gt_boxes = [box.view(1, 4) for box in gt_boxes]
    if len(gt_boxes) != heat.shape[0]:
        raise ValueError(f"gt_boxes must have one entry per example, got {len(gt_boxes)}")
    correct = torch.stack(
        [
            (
                box_iou(box.view(1, 4), torch.as_tensor(truth, device=heat.device).view(1, -1, 4))
                >= 0.5
            ).any()
            for box, truth in zip(predicted, gt_boxes)
        ]
    )
    return (~correct).to(heat.dtype)


def saliency_metric(
    forward_func: Callable,
    inputs: Tensor,
    attributions: Tensor,
    target: Any = None,
    threshold: float = 0.5,
) -> Tensor:
    r"""Dabkowski & Gal's saliency metric: log(max(a, 0.05)) − log(p); lower is better.

    The map (min-max normalised) is thresholded at ``threshold``; a is the area fraction of the
    tightest box around it, and p the target's probability when the classifier sees only that
    box, cropped and resized to the input size (bilinear).

    Returns:
        Tensor (N,).

    Examples::

        >>> saliency_metric(model, x, attributions, target=3).mean()
    """
    heat = to_heatmap(attributions)
    _num, _, height, width = inputs.shape
    boxes = tightest_box(min_max_normalise(heat) >= threshold).tolist()
    with torch.no_grad():
        targets = resolve_targets(target, model_scores(forward_func(inputs)))
        crops = []
        for image, (top, left, bottom, right) in zip(inputs, boxes):
            if bottom <= top or right <= left:
                top, left, bottom, right = 0, 0, height, width
            crop = image[:, top:bottom, left:right].unsqueeze(0)
            crops.append(
                F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)
            )
        probability = select_scores(
            model_scores(forward_func(torch.cat(crops))), targets, apply_softmax=True
        )
    area = inputs.new_tensor(
        [max(b - t, 0) * max(r - left, 0) / (height * width) for t, left, b, r in boxes]
    )
    return torch.log(area.clamp_min(0.05)) - torch.log(probability.clamp_min(1e-12))


__all__ = [
    "box_iou",
    "class_discrimination",
    "localization_error",
    "map_mean",
    "map_total_variation",
    "mask_iou",
    "pointing_game",
    "relevance_mass",
    "saliency_metric",
    "threshold_heatmap",
    "tightest_box",
]
