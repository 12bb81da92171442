"""Metrics for judging attribution maps, from any Captum method.

Every function is batched torch code. Attributions may be input-shaped (N, C, H, W), single-channel
(N, 1, H, W) or already reduced (N, H, W); :func:`to_heatmap` reduces them to one (N, H, W) map
by summing over channels (signed; ``absolute=True`` sums absolute values instead). Ground-truth
masks are (N, H, W) or (N, 1, H, W), non-zero on the object; boxes are (top, left, bottom,
right) in pixels with exclusive bottom/right.

Metrics that need the model take ``forward_func`` and ``target`` in Captum's forms and score the
target by its softmax probability.
"""

from captum_masks.metrics.curves import deletion_insertion_curve
from captum_masks.metrics.localisation import (
    box_iou,
    class_discrimination,
    localization_error,
    map_mean,
    map_total_variation,
    mask_iou,
    pointing_game,
    relevance_mass,
    saliency_metric,
    threshold_heatmap,
    tightest_box,
)
from captum_masks.metrics.maps import to_heatmap
from captum_masks.metrics.masking import class_specific_masking, salient_object_scores
from captum_masks.metrics.sanity import (
    model_randomization_check,
    spearman_rank_correlation,
)

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
