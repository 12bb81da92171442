"""Metrics for judging attribution maps, from any Captum method.

Every function is batched torch code. Attributions may be input-shaped (N, C, H, W), single-channel
(N, 1, H, W) or already reduced (N, H, W); :func:`to_heatmap` reduces them to one (N, H, W) map
by summing over channels (signed; ``absolute=True`` sums absolute values instead). Ground-truth
masks are (N, H, W) or (N, 1, H, W), non-zero on the object; boxes are (top, left, bottom,
right) in pixels with exclusive bottom/right.

Metrics that need the model take ``forward_func`` and ``target`` in Captum's forms and score the
target by its softmax probability.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_masks._base import seeded_global_rng
from captum_masks._inputs import check_positive_int, resolve_targets, select_scores
from captum_masks.perturbations import gaussian_blur

BoxesType = Tensor | Sequence[Tensor]


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
    attributions = attributions.detach()
    if attributions.dim() == 3:
        return attributions.abs() if absolute else attributions
    if attributions.dim() != 4:
        raise ValueError(
            "attributions must be (N, C, H, W), (N, 1, H, W) or (N, H, W), "
            f"got shape {tuple(attributions.shape)}"
        )
    return (attributions.abs() if absolute else attributions).sum(dim=1)


def _masks(gt_masks: Tensor, like: Tensor) -> Tensor:
    masks = gt_masks[:, 0] if gt_masks.dim() == 4 else gt_masks
    if masks.shape != like.shape:
        raise ValueError(
            f"gt_masks of shape {tuple(gt_masks.shape)} do not match the attribution maps "
            f"{tuple(like.shape)}"
        )
    return masks.to(device=like.device) != 0


def _normalise(heat: Tensor) -> Tensor:
    """Min-max normalise each map to [0, 1] (a constant map becomes 0)."""
    flat = heat.flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    scale = (high - low).clamp_min(torch.finfo(heat.dtype).tiny)
    return (heat - low.view(-1, 1, 1)) / scale.view(-1, 1, 1)


# ---------------------------------------------------------------- deletion / insertion
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
        targets = resolve_targets(target, forward_func(inputs))
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
                    forward_func(chunk), chunk_targets, apply_softmax=True
                )
    auc = torch.trapezoid(curve, dx=1.0 / n_steps, dim=1)
    return auc, curve


# ---------------------------------------------------------------- localisation
def pointing_game(attributions: Tensor, gt_masks: Tensor, tolerance: int = 15) -> Tensor:
    """Pointing game (Zhang et al., ECCV 2016): is the map's maximum on the object?

    A hit is a maximum within ``tolerance`` pixels (Euclidean) of a ground-truth pixel; the paper
    uses 15 px at ImageNet scale, so scale it with the image side. When several pixels share the
    maximum (masks saturate at 1), the point is the tied pixel nearest to the centroid of all tied
    pixels, so a saturated blob points at its middle rather than at its top-left corner.

    Args:
        attributions (Tensor): any form accepted by :func:`to_heatmap` (signed sum).
        gt_masks (Tensor): (N, H, W) or (N, 1, H, W) object masks.
        tolerance (int): pixels.

    Returns:
        Tensor (N,) of 1.0 (hit) or 0.0 (miss); its mean is the accuracy.

    Examples::

        >>> accuracy = pointing_game(attributions, masks, tolerance=4).mean()
    """
    heat = to_heatmap(attributions)
    masks = _masks(gt_masks, heat)
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
    masks = _masks(gt_masks, heat)
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
    own = (heat * _masks(own_masks, heat)).flatten(1).sum(1)
    other = (heat * _masks(other_masks, heat)).flatten(1).sum(1)
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
    predicted = _normalise(to_heatmap(attributions)) >= threshold
    masks = _masks(gt_masks, predicted)
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
        return _normalise(heat) >= alpha
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
    boxes = tightest_box(_normalise(heat) >= threshold).tolist()
    with torch.no_grad():
        targets = resolve_targets(target, forward_func(inputs))
        crops = []
        for image, (top, left, bottom, right) in zip(inputs, boxes):
            if bottom <= top or right <= left:
                top, left, bottom, right = 0, 0, height, width
            crop = image[:, top:bottom, left:right].unsqueeze(0)
            crops.append(
                F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)
            )
        probability = select_scores(forward_func(torch.cat(crops)), targets, apply_softmax=True)
    area = inputs.new_tensor(
        [max(b - t, 0) * max(r - l, 0) / (height * width) for t, l, b, r in boxes]
    )
    return torch.log(area.clamp_min(0.05)) - torch.log(probability.clamp_min(1e-12))


# ---------------------------------------------------------------- class-specific masks
def class_specific_masking(
    forward_func: Callable,
    inputs: Tensor,
    class_masks: Tensor,
    labels: Tensor,
    thresholds: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    multilabel: bool = False,
) -> dict[str, Tensor]:
    r"""Stalder et al.'s class-specific masking test (NeurIPS 2022, Table 1).

    For every image and every class i present in it, and every class j, the image is multiplied by
    class j's mask binarised at each threshold, and the probability of class i is read. Right
    masks (j = i) should keep it; masks of other classes should remove it.

    Args:
        forward_func (Callable): the model.
        inputs (Tensor): (N, C, H, W) images.
        class_masks (Tensor): (N, K, H, W) one mask per class in [0, 1].
        labels (Tensor): (N,) class indices, or (N, K) multi-hot labels.
        thresholds (sequence of float): binarisation thresholds averaged over.
        multilabel (bool): probabilities are sigmoids (multi-label model) instead of softmax.

    Returns:
        dict with ``"table"`` (K, K): mean probability of class i (row) under class j's mask
        (column), NaN where no image holds class i; ``"unmasked"`` (K,): mean probability of class
        i on the unmasked images that hold it; ``"same"`` and ``"other"``: the means of the
        diagonal and of the off-diagonal entries; ``"co_occurring_table"`` and
        ``"other_co_occurring"``: the same over only the images that hold both class i and class
        j, i.e. masks of objects that are really in the image (a mask of an absent class should
        be empty, and the probability left on an emptied image is the model's, not the mask's);
        ``"same_relative"``, ``"other_relative"`` and ``"other_co_occurring_relative"``: the
        entries divided by the row's unmasked probability before averaging.

    Examples::

        >>> result = class_specific_masking(model, x, explainer.explain_all(x), labels)
        >>> result["same"], result["other"]
    """
    num_classes = class_masks.shape[1]
    if labels.dim() == 1:
        present = F.one_hot(labels.long(), num_classes).bool()
    else:
        present = labels.bool()
    present = present.to(inputs.device)

    def probabilities(images: Tensor) -> Tensor:
        logits = forward_func(images)
        return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)

    present_float = present.to(inputs.dtype)
    with torch.no_grad():
        sums = inputs.new_zeros(num_classes, num_classes)
        co_occurring_sums = inputs.new_zeros(num_classes, num_classes)
        for mask_class in range(num_classes):
            for threshold in thresholds:
                keep = (class_masks[:, mask_class : mask_class + 1] >= threshold).to(inputs.dtype)
                p = probabilities(inputs * keep) * present_float
                sums[:, mask_class] += p.sum(0)
                co_occurring_sums[:, mask_class] += p.T @ present_float[:, mask_class]
        counts = present_float.sum(0)
        table = sums / (counts[:, None] * len(thresholds))
        co_occurring_table = co_occurring_sums / (
            (present_float.T @ present_float) * len(thresholds)
        )
        unmasked = (probabilities(inputs) * present_float).sum(0) / counts
    off_diagonal = ~torch.eye(num_classes, dtype=torch.bool, device=inputs.device)

    def mean_of(entries: Tensor, where: Tensor) -> Tensor:
        return entries[where & ~torch.isnan(entries)].mean()

    relative = table / unmasked[:, None]
    return {
        "table": table,
        "unmasked": unmasked,
        "same": mean_of(table, ~off_diagonal),
        "other": mean_of(table, off_diagonal),
        "co_occurring_table": co_occurring_table,
        "other_co_occurring": mean_of(co_occurring_table, off_diagonal),
        "same_relative": mean_of(relative, ~off_diagonal),
        "other_relative": mean_of(relative, off_diagonal),
        "other_co_occurring_relative": mean_of(
            co_occurring_table / unmasked[:, None], off_diagonal
        ),
    }


# ---------------------------------------------------------------- salient objects
def salient_object_scores(
    saliency: Tensor, gt_masks: Tensor, beta2: float = 0.3
) -> dict[str, Tensor]:
    """F-measure and MAE of salient-object detection (Du et al. §4.4).

    The positive part of the map (negative relevance counts as none, as in
    :func:`relevance_mass`) is min-max normalised to [0, 1] and binarised at twice its mean;
    precision, recall and F_β = (1 + β²)·P·R / (β²·P + R) with β² = 0.3 compare it with the
    ground truth; MAE is the mean |s − g| of the normalised map.

    Returns:
        dict of (N,) tensors: ``"precision"``, ``"recall"``, ``"f_measure"``, ``"mae"``.

    Examples::

        >>> salient_object_scores(stage1_masks, masks)["f_measure"].mean()
    """
    heat = _normalise(to_heatmap(saliency).clamp_min(0))
    masks = _masks(gt_masks, heat)
    predicted = heat >= 2 * heat.flatten(1).mean(1).view(-1, 1, 1)
    true_positive = (predicted & masks).flatten(1).sum(1).to(heat.dtype)
    precision = true_positive / predicted.flatten(1).sum(1).clamp_min(1)
    recall = true_positive / masks.flatten(1).sum(1).clamp_min(1)
    denominator = beta2 * precision + recall
    f_measure = torch.where(
        denominator > 0, (1 + beta2) * precision * recall / denominator.clamp_min(1e-12), 0.0
    )
    mae = (heat - masks.to(heat.dtype)).abs().flatten(1).mean(1)
    return {"precision": precision, "recall": recall, "f_measure": f_measure, "mae": mae}


# ---------------------------------------------------------------- sanity check
def spearman_rank_correlation(first: Tensor, second: Tensor) -> Tensor:
    """Spearman's ρ between matching rows of two (N, ...) tensors, ties averaged.

    Uses ``scipy.stats.spearmanr`` (``pip install 'captum_masks[metrics]'``).
    """
    try:
        from scipy.stats import spearmanr
    except ImportError as error:
        raise ImportError(
            "spearman_rank_correlation needs scipy: pip install 'captum_masks[metrics]'"
        ) from error

    a = first.detach().flatten(1).double().cpu().numpy()
    b = second.detach().flatten(1).double().cpu().numpy()
    values = [spearmanr(x, y).statistic for x, y in zip(a, b)]
    return torch.tensor(values, dtype=first.dtype, device=first.device)


def model_randomization_check(
    explain: Callable[[nn.Module], Tensor],
    model: nn.Module,
    layers: Sequence[str],
    absolute: bool = True,
    seed: int = 0,
) -> Tensor:
    """Adebayo et al.'s model-randomisation sanity check (NeurIPS 2018).

    Explains with ``model``, then with a copy whose named ``layers`` (the top ones, typically)
    are re-initialised, and returns the Spearman rank correlation of the two maps per example.
    A method that really depends on the learned weights gives a low correlation. ``model`` itself
    is never modified (the copy is made with ``copy.deepcopy``; the global RNG is restored).

    Args:
        explain (Callable): ``model -> attributions`` for a fixed batch.
        model (nn.Module): the trained model.
        layers (sequence of str): names from ``model.named_modules()`` to re-initialise with their
            own ``reset_parameters``.
        absolute (bool): compare absolute maps (Adebayo et al.'s default for signed methods).
        seed (int): seed of the re-initialisation.

    Returns:
        Tensor (N,) of rank correlations.

    Examples::

        >>> explain = lambda m: Saliency(m).attribute(x, target=3)
        >>> model_randomization_check(explain, model, ["fc"])
    """
    modules = dict(model.named_modules())
    missing = [name for name in layers if name not in modules]
    if missing:
        raise ValueError(f"layers {missing} are not modules of the model")
    randomized = copy.deepcopy(model)
    randomized_modules = dict(randomized.named_modules())
    cuda = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    # reset_parameters draws from the global RNG: seed it inside a fork so the caller's is kept
    with seeded_global_rng(seed, cuda):
        for name in layers:
            for module in randomized_modules[name].modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
    original = to_heatmap(explain(model), absolute=absolute)
    shuffled = to_heatmap(explain(randomized), absolute=absolute)
    return spearman_rank_correlation(original, shuffled)


__all__ = [
    "box_iou",
    "class_discrimination",
    "class_specific_masking",
    "deletion_insertion_curve",
    "localization_error",
    "map_mean",
    "map_total_variation",
    "mask_iou",
    "model_randomization_check",
    "pointing_game",
    "relevance_mass",
    "saliency_metric",
    "salient_object_scores",
    "spearman_rank_correlation",
    "threshold_heatmap",
    "tightest_box",
    "to_heatmap",
]
