"""Turn tensors into what ``captum.attr.visualization.visualize_image_attr`` expects."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor


def attribution_to_image(attribution: Tensor, index: int = 0) -> np.ndarray:
    """One example's attribution as a float numpy (H, W, C) array for Captum's visualiser.

    Args:
        attribution (Tensor): (N, C, H, W) attributions from any Captum method, or one (C, H, W).
        index (int): which example of the batch.

    Returns:
        ``np.ndarray`` of shape (H, W, C), float64, on the CPU.

    Note:
        ``visualize_image_attr`` raises on an all-zero map (its normaliser divides by the
        maximum), and may raise with ``outlier_perc=0``; mask attributions are in [0, 1], so
        ``sign="positive"`` is the natural choice.

    Examples::

        >>> from captum.attr import visualization as viz
        >>> viz.visualize_image_attr(attribution_to_image(attr), image_to_numpy(x, mean, std),
        ...                          method="blended_heat_map", sign="positive")
    """
    if attribution.dim() == 4:
        attribution = attribution[index]
    if attribution.dim() != 3:
        raise ValueError(
            f"attribution must be (N, C, H, W) or (C, H, W), got shape {tuple(attribution.shape)}"
        )
    return attribution.detach().permute(1, 2, 0).cpu().double().numpy()


def image_to_numpy(
    image: Tensor,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    index: int = 0,
) -> np.ndarray:
    """A (normalised) image tensor as an (H, W, C) numpy array in [0, 1] for display.

    Args:
        image (Tensor): (N, C, H, W) or (C, H, W).
        mean, std (sequence of float, optional): the normalisation to undo, x·std + mean.
        index (int): which example of the batch.

    Returns:
        ``np.ndarray`` (H, W, C), float64, clipped to [0, 1].
    """
    array = attribution_to_image(image, index)
    if std is not None:
        array = array * np.asarray(std, dtype=np.float64)
    if mean is not None:
        array = array + np.asarray(mean, dtype=np.float64)
    return np.clip(array, 0.0, 1.0)


__all__ = ["attribution_to_image", "image_to_numpy"]
