"""Perturbation operators Φ: what a masked-out region of the input is replaced with.

Every reference lives in the caller's input space (normalised or not) and on the input's device and
dtype. ``blend(x, m, reference) = m·x + (1 − m)·reference`` keeps the input where ``m = 1`` and
shows the reference where ``m = 0`` (Fong & Vedaldi 2017, Eq. 2).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

BaselineType = float | Sequence[float] | Tensor | None

PERTURBATIONS = ("blur", "constant", "noise")


#: σ below which the Gaussian's neighbours weigh exp(−0.5 / σ²) = 0 in any float dtype (and a
#: σ that underflows to 0 in float32 would give 0 / 0 at the centre)
NEGLIGIBLE_SIGMA = 1e-2


def gaussian_kernel1d(sigma: float, like: Tensor) -> Tensor:
    """Normalised 1-D Gaussian kernel with radius ⌈3σ⌉.

    Args:
        sigma (float): standard deviation in samples, > 0.
        like (Tensor): the kernel takes this tensor's device and dtype.

    Returns:
        1-D Tensor of length 2⌈3σ⌉ + 1 summing to 1.
    """
    sigma = max(sigma, NEGLIGIBLE_SIGMA)  # a delta either way, without 0 / 0
    radius = max(1, math.ceil(3.0 * sigma))
    offsets = torch.arange(-radius, radius + 1, device=like.device, dtype=like.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(inputs: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of every channel of a (N, C, L) or (N, C, H, W) tensor.

    Args:
        inputs (Tensor): batch-first, channel-second signal with 1 or 2 spatial axes.
        sigma (float): standard deviation of the kernel in pixels; below 0.01 (where the
            kernel is a delta to float precision) ``inputs`` is returned as it is.

    Returns:
        Tensor of the same shape, device and dtype. Borders are reflected (replicated when the
        signal is shorter than the kernel radius), so a constant image stays constant.

    Examples::

        >>> blurred = gaussian_blur(torch.rand(2, 3, 64, 64), sigma=10.0)
    """
    if sigma < NEGLIGIBLE_SIGMA:
        return inputs
    spatial_dims = inputs.dim() - 2
    if spatial_dims not in (1, 2):
        raise ValueError(
            f"gaussian_blur needs (N, C, L) or (N, C, H, W) input, got shape {tuple(inputs.shape)}"
        )
    kernel = gaussian_kernel1d(sigma, inputs)
    radius = kernel.numel() // 2
    channels = inputs.shape[1]
    out = inputs
    for axis in range(spatial_dims):
        size = out.shape[2 + axis]
        mode = "reflect" if radius < size else "replicate"
        if spatial_dims == 1:
            padded = F.pad(out, (radius, radius), mode=mode)
            weight = kernel.view(1, 1, -1).expand(channels, 1, -1)
            out = F.conv1d(padded, weight, groups=channels)
        else:
            pad = (0, 0, radius, radius) if axis == 0 else (radius, radius, 0, 0)
            shape = (1, 1, -1, 1) if axis == 0 else (1, 1, 1, -1)
            padded = F.pad(out, pad, mode=mode)
            weight = kernel.view(shape).expand(channels, 1, *kernel.view(shape).shape[2:])
            out = F.conv2d(padded, weight, groups=channels)
    return out


def constant_reference(inputs: Tensor, value: BaselineType = None) -> Tensor:
    """A constant replacement for ``inputs``: a scalar, one value per channel, or a tensor.

    Args:
        inputs (Tensor): (N, C, ...) input the reference replaces.
        value (float, sequence of float, Tensor or None): a scalar; C per-channel values; or a
            tensor broadcastable to ``inputs`` (a Captum ``baselines`` tensor, (C,) per channel
            included). None uses each example's mean colour per channel (the paper's µ0).

    Returns:
        Tensor with the shape, device and dtype of ``inputs``.
    """
    if value is None:
        spatial = tuple(range(2, inputs.dim()))
        return inputs.mean(dim=spatial, keepdim=True).expand_as(inputs)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return torch.full_like(inputs, float(value))
    if isinstance(value, (list, tuple)):
        value = torch.tensor([float(v) for v in value], device=inputs.device, dtype=inputs.dtype)
    if not isinstance(value, Tensor):
        raise TypeError(
            "baselines must be a number, a sequence of per-channel numbers or a tensor, "
            f"got {type(value).__name__}"
        )
    value = value.to(device=inputs.device, dtype=inputs.dtype)
    if value.dim() == 1 and inputs.dim() > 2 and value.numel() == inputs.shape[1]:
        value = value.view(1, -1, *([1] * (inputs.dim() - 2)))
    try:
        reference = torch.broadcast_to(value, inputs.shape)
    except RuntimeError:
        raise ValueError(
            f"baselines of shape {tuple(value.shape)} cannot be broadcast to the input shape "
            f"{tuple(inputs.shape)}; give a scalar, {inputs.shape[1]} per-channel values, or a "
            "tensor with the input's shape"
        ) from None
    if not torch.isfinite(reference).all():
        raise ValueError("baselines contains NaN or Inf values")
    return reference


def noise_reference(
    inputs: Tensor,
    generator: torch.Generator,
    mean: BaselineType = None,
    std: float | None = None,
) -> Tensor:
    """I.i.d. Gaussian noise η(u) drawn from ``generator`` (Fong & Vedaldi, Eq. 2, second case).

    The noise is drawn once and shared by the examples of the batch (each centred and scaled on
    its own), so an example's reference does not depend on the other examples.

    Args:
        inputs (Tensor): (N, C, ...) input the reference replaces.
        generator (torch.Generator): seeded generator on the input's device.
        mean: centre of the noise, as ``constant_reference``'s ``value`` (default: each
            example's mean colour per channel).
        std (float or None): noise standard deviation; None uses each example's per-channel
            standard deviation, so the noise has the image's own contrast whatever its scaling.

    Returns:
        Tensor with the shape, device and dtype of ``inputs``.
    """
    centre = constant_reference(inputs, mean)
    if std is None:
        spatial = tuple(range(2, inputs.dim()))
        scale = inputs.std(dim=spatial, keepdim=True) if inputs[0, 0].numel() > 1 else 1.0
    else:
        scale = std
    # one draw for the whole batch: an example gets the same noise alone as in any batch
    noise = torch.randn(
        (1, *inputs.shape[1:]), generator=generator, device=inputs.device, dtype=inputs.dtype
    )
    return centre + scale * noise


def make_reference(
    inputs: Tensor,
    perturbation: str,
    generator: torch.Generator,
    baselines: BaselineType = None,
    blur_sigma: float = 10.0,
    noise_std: float | None = None,
) -> Tensor:
    """The reference that Φ shows where the mask is 0.

    Args:
        inputs (Tensor): (N, C, ...) input.
        perturbation (str): ``"blur"`` (:func:`gaussian_blur` with ``blur_sigma``),
            ``"constant"`` (:func:`constant_reference` of ``baselines``) or ``"noise"``
            (:func:`noise_reference` centred on ``baselines`` with ``noise_std``).
        generator (torch.Generator): the call's generator, used by ``"noise"``.
        baselines: see :func:`constant_reference`; must be None for ``"blur"``.
        blur_sigma (float): σ₀ of the blur in pixels.
        noise_std (float or None): see :func:`noise_reference`.

    Returns:
        Tensor with the shape, device and dtype of ``inputs``.

    Examples::

        >>> reference = make_reference(images, "blur", torch.Generator(), blur_sigma=10.0)
        >>> perturbed = blend(images, mask, reference)
    """
    if perturbation == "blur":
        if baselines is not None:
            raise ValueError(
                "baselines is only used by perturbation='constant' or 'noise'; "
                "the blur perturbation replaces content by a blurred copy of the input"
            )
        return gaussian_blur(inputs, blur_sigma)
    if perturbation == "constant":
        return constant_reference(inputs, baselines)
    if perturbation == "noise":
        return noise_reference(inputs, generator, baselines, noise_std)
    raise ValueError(f"perturbation must be one of {PERTURBATIONS}, got {perturbation!r}")


def blend(inputs: Tensor, mask: Tensor, reference: Tensor) -> Tensor:
    """Φ(x, m) = m·x + (1 − m)·reference: keep the input where m = 1, show the reference at 0.

    Args:
        inputs (Tensor): (N, C, ...) input.
        mask (Tensor): (N, 1, ...) mask in [0, 1], broadcast over channels.
        reference (Tensor): what replaces the input, shaped like ``inputs``.

    Returns:
        Tensor shaped like ``inputs``; differentiable in ``mask``.

    Examples::

        >>> perturbed = blend(images, torch.zeros_like(images[:, :1]), reference)  # = reference
    """
    return mask * inputs + (1.0 - mask) * reference


__all__ = [
    "PERTURBATIONS",
    "blend",
    "constant_reference",
    "gaussian_blur",
    "gaussian_kernel1d",
    "make_reference",
    "noise_reference",
]
