"""Mask regularisers. Each returns one value per example, shape (N,), so examples never mix.

Masks are ``(N, 1, *spatial)`` with one, two or three spatial axes (sequences, images, volumes).
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass

import torch
from torch import Tensor

from captum_masks._engine.checks import check_bool


def _flat(mask: Tensor) -> Tensor:
    return mask.reshape(mask.shape[0], -1)


def l1(mask: Tensor) -> Tensor:
    """‖m‖₁ per example: the sum of absolute values over all non-batch axes.

    Args:
        mask (Tensor): (N, ...) batch-first tensor.

    Returns:
        Tensor (N,).

    Examples::

        >>> l1(1 - mask)        # Fong & Vedaldi's deletion-area term ‖1 − m‖₁
    """
    return _flat(mask).abs().sum(dim=1)


def total_variation(mask: Tensor, beta: float = 1.0) -> Tensor:
    r"""``Σ_u Σ_axis |∂_axis m(u)|^β`` per example (Fong & Vedaldi's TV_β, anisotropic).

    Args:
        mask (Tensor): ``(N, 1, *spatial)``, any number of spatial axes.
        beta (float): exponent β ≥ 1 (below 1 the gradient is infinite where m is flat); 1 is
            the usual anisotropic TV, 3 the paper's setting.

    Returns:
        Tensor (N,).

    Examples::

        >>> total_variation(mask, beta=3.0)
    """
    total = mask.new_zeros(mask.shape[0])
    for axis in range(2, mask.dim()):
        total = total + _flat(torch.diff(mask, dim=axis).abs().pow(beta)).sum(dim=1)
    return total


def _window_sum(mask: Tensor, size: int, axis: int) -> Tensor:
    """Sum of ``size`` consecutive values along ``axis`` (valid positions only)."""
    length = mask.shape[axis] - size + 1
    windows = [mask.narrow(axis, offset, length) for offset in range(size)]
    return functools.reduce(operator.add, windows)


def laplacian(mask: Tensor, kernel_size: int = 3, squared: bool = False) -> Tensor:
    r"""‖m ⊛ Δ‖₁ (or Σ(m ⊛ Δ)² if ``squared``) per example, over valid positions only (a mask
    with a side shorter than the kernel has none: the term is 0).

    The kernel is a k × … × k block of ones whose centre is 1 − k^d, for d spatial axes: [1, −2, 1]
    for sequences, centre −8 (k = 3) or −24 (k = 5, NeuroMask's ImageNet choice) for images,
    centre −26 (k = 3) for volumes.

    Args:
        mask (Tensor): ``(N, 1, *spatial)`` with one, two or three spatial axes.
        kernel_size (int): 3 or 5.
        squared (bool): sum of squares instead of absolute values.

    Returns:
        Tensor (N,).

    Examples::

        >>> laplacian(weights, kernel_size=5, squared=True)   # NeuroMask authors' smoothness
    """
    if kernel_size not in (3, 5):
        raise ValueError(f"kernel_size must be 3 or 5, got {kernel_size!r}")
    # shifted slices instead of a convolution: a 1-channel conv2d takes PyTorch's slow path on
    # the CPU and costs ten times more, forward and backward
    if any(side < kernel_size for side in mask.shape[2:]):
        return mask.new_zeros(mask.shape[0])
    window = mask
    centre = mask
    border = kernel_size // 2
    for axis in range(2, mask.dim()):
        window = _window_sum(window, kernel_size, axis)
        centre = centre.narrow(axis, border, mask.shape[axis] - 2 * border)
    response = window - kernel_size ** (mask.dim() - 2) * centre
    return _flat(response.square() if squared else response.abs()).sum(dim=1)


@dataclass(frozen=True)
class Laplacian:
    """A smoothness term: :func:`laplacian` with its settings, per example (NeuroMask's
    ‖W ⊛ ∇²‖₁).

    Args:
        kernel_size (int): 3 or 5 (images only; 5 is the NeuroMask authors' ImageNet kernel).
            Default: 3
        squared (bool): the sum of squared responses (the authors' code) instead of their
            absolute values (the paper's L1). Default: False

    Examples::

        >>> smoothness = Laplacian(kernel_size=5, squared=True)
        >>> neuromask.attribute(images, target=3, smoothness=smoothness)
    """

    kernel_size: int = 3
    squared: bool = False

    def __post_init__(self) -> None:
        if self.kernel_size not in (3, 5):
            raise ValueError(f"kernel_size must be 3 or 5, got {self.kernel_size!r}")
        check_bool("squared", self.squared)

    def __call__(self, mask: Tensor) -> Tensor:
        """The term for ``(N, 1, *spatial)`` masks: (N,)."""
        return laplacian(mask, self.kernel_size, self.squared)


def area(mask: Tensor, fraction: float | Tensor) -> Tensor:
    r"""Area constraint of Fong, Patrick & Vedaldi (2019, Eq. 8): ``‖sort(m) − r_a‖² / |Λ|`` per
    example.

    ``r_a`` is the sorted vector of a mask whose ``fraction`` of pixels is 1 and the rest 0, so the
    term is zero exactly when the mask keeps that fraction of the input and is binary.

    Args:
        mask (Tensor): (N, ...) mask in [0, 1].
        fraction (float or Tensor): target area a in [0, 1], one for every example or (N,)
            one each.

    Returns:
        Tensor (N,).

    Examples::

        >>> area(mask, fraction=0.1)     # pull the mask towards keeping 10 % of the image
    """
    fractions = torch.as_tensor(fraction, dtype=mask.dtype, device=mask.device)
    if not bool(((fractions >= 0) & (fractions <= 1)).all()):
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
    values = _flat(mask).sort(dim=1, stable=True).values  # ties: the same order in any batch
    size = values.shape[1]
    ones = torch.round(fractions * size).view(-1, 1)
    rank = torch.arange(size, device=mask.device, dtype=mask.dtype)
    reference = (rank >= size - ones).to(mask.dtype)  # the last ``ones`` sorted values are 1
    return (values - reference).square().mean(dim=1)


def area_bounds(mask: Tensor, lower: float, upper: float, sizes: Tensor | None = None) -> Tensor:
    r"""Stalder et al.'s area bounds B (Eq. 4–5) per example: zero while the mask keeps between
    ``lower`` and ``upper`` of the input with values at 0 or 1.

    With q the mask's values sorted in descending order, the first ⌊Z·lower⌋ values are pulled
    up to 1 and the values past the first ⌊Z·upper⌋ down to 0:
    B = mean(max(q_min − q, 0)) + mean(max(q − q_max, 0)).

    Args:
        mask (Tensor): (N, ...) mask in [0, 1].
        lower (float): the least area a, in [0, 1].
        upper (float): the largest area b, in [lower, 1].
        sizes (Tensor, optional): (N,) the number Z of positions each example has, when fewer
            than the mask's (padding, whose mask values must be 0). Default: all of them

    Returns:
        Tensor (N,).

    Examples::

        >>> area_bounds(class_masks, lower=0.05, upper=0.3)
    """
    if not 0.0 <= lower <= upper <= 1.0:
        raise ValueError(f"need 0 <= lower <= upper <= 1, got lower={lower!r}, upper={upper!r}")
    values = _flat(mask).sort(dim=1, descending=True, stable=True).values
    rank = torch.arange(values.shape[1], device=mask.device)
    if sizes is None:
        sizes = torch.full((values.shape[0],), values.shape[1], device=mask.device)
    size = sizes.view(-1, 1)
    below_lower = (rank < (size * lower).floor()).to(mask.dtype)
    within_upper = (rank < (size * upper).floor()).to(mask.dtype)
    outside = (below_lower - values).clamp_min(0) + (values - within_upper).clamp_min(0)
    return outside.sum(dim=1) / sizes.to(mask.dtype)


__all__ = ["area", "area_bounds", "l1", "laplacian", "total_variation"]
