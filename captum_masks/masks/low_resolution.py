"""A method's final mask in the low-resolution form it optimised it in: a few hundred or
thousand values that give back its full-resolution attribution."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from captum_masks.masks.interpolation import upsample_linearly, upsample_smoothly

UPSAMPLINGS = ("linear", "smooth")


@dataclass
class LowResolutionMask:
    r"""A method's final masks in the low-resolution form it optimised them in, and the recipe
    that makes them its attributions: :meth:`expand` recomputes the attribution's channel
    (to rounding) from ``values``, which are a small fraction of its size (a 28 × 28 grid for
    Meaningful Perturbation at 224 px, 56 × 56 for Extremal Perturbation, the mask layer's
    7 × 7 or 14 × 14 for Guided Feature Inversion).

    Methods that have one return it as ``history.low_resolution``;
    :func:`captum_masks.explain_dataset` stores it instead of the attributions with
    ``low_resolution=True``.

    Attributes:
        values (Tensor): (N, 1, \*low-resolution spatial axes).
        upsampling (str): ``"linear"`` ((bi/tri)linear interpolation, ``align_corners=False``)
            or ``"smooth"`` (:class:`UpsampledMask`'s upsampling and Gaussian smoothing).
        factor (int): :class:`UpsampledMask`'s factor (``"smooth"`` only).
        sigma (float): :class:`UpsampledMask`'s smoothing σ (``"smooth"`` only).
        complement (bool): the attribution is 1 − the upsampled mask (a deletion game's
            importance).

    Examples::

        >>> attribution, history = mp.attribute(images, return_history=True)
        >>> (low_resolution,) = history.low_resolution         # values: (N, 1, 28, 28)
        >>> torch.allclose(low_resolution.expand(images.shape[2:]), attribution[:, :1])
        True
    """

    values: Tensor
    upsampling: str = "linear"
    factor: int = 1
    sigma: float = 0.0
    complement: bool = False

    def __post_init__(self) -> None:
        if self.upsampling not in UPSAMPLINGS:
            raise ValueError(f"upsampling must be one of {UPSAMPLINGS}, got {self.upsampling!r}")

    def expand(self, spatial_shape: Sequence[int]) -> Tensor:
        """The attribution's channel, ``(N, 1, *spatial_shape)`` in [0, 1]."""
        if self.upsampling == "smooth":
            mask = upsample_smoothly(self.values, spatial_shape, self.factor, self.sigma)
        else:
            mask = upsample_linearly(self.values, spatial_shape)
        return (1.0 - mask if self.complement else mask).clamp(0.0, 1.0)

    def recipe(self) -> dict:
        """Everything but ``values``, as plain JSON types."""
        return {
            "upsampling": self.upsampling,
            "factor": self.factor,
            "sigma": self.sigma,
            "complement": self.complement,
        }


__all__ = ["LowResolutionMask"]
