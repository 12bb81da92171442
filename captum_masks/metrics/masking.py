"""Class-specific masks (Stalder et al.) and salient-object scores (Du et al.)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_masks._engine.checks import model_scores
from captum_masks.metrics.maps import as_masks, min_max_normalise, to_heatmap


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
        logits = model_scores(forward_func(images))
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


def salient_object_scores(
    saliency: Tensor, gt_masks: Tensor, beta2: float = 0.3
) -> dict[str, Tensor]:
    """F-measure and MAE of salient-object detection (Du et al. §4.4).

    The positive part of the map (negative relevance counts as none, as in
    :func:`relevance_mass`) is min-max normalised to [0, 1] and binarised at twice its mean;
    precision, recall and F_β = (1 + β²)·P·R / (β²·P + R) with β² = 0.3 compare it with the
    ground truth; MAE is the mean ``|s − g|`` of the normalised map.

    Returns:
        dict of (N,) tensors: ``"precision"``, ``"recall"``, ``"f_measure"``, ``"mae"``.

    Examples::

        >>> salient_object_scores(stage1_masks, masks)["f_measure"].mean()
    """
    heat = min_max_normalise(to_heatmap(saliency).clamp_min(0))
    masks = as_masks(gt_masks, heat)
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


__all__ = [
    "class_specific_masking",
    "salient_object_scores",
]
