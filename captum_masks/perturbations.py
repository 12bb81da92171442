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
    """Separable Gaussian blur of every channel along every spatial axis of a
    ``(N, C, *spatial)`` tensor: (N, C, L) signals, (N, C, H, W) images, (N, C, D, H, W) volumes.

    Args:
        inputs (Tensor): batch-first, channel-second tensor with at least one spatial axis.
        sigma (float): standard deviation of the kernel in samples; below 0.01 (where the
            kernel is a delta to float precision) ``inputs`` is returned as it is.

    Returns:
        Tensor of the same shape, device and dtype. Borders are reflected (replicated when an
        axis is shorter than the kernel radius), so a constant input stays constant.

    Examples::

        >>> blurred = gaussian_blur(torch.rand(2, 3, 64, 64), sigma=10.0)
    """
    if inputs.dim() < 3:
        raise ValueError(
            "gaussian_blur needs inputs with spatial axes, (N, C, L), (N, C, H, W) or "
            f"(N, C, D, H, W); got shape {tuple(inputs.shape)}"
        )
    if sigma < NEGLIGIBLE_SIGMA:
        return inputs
    kernel = gaussian_kernel1d(sigma, inputs).view(1, 1, -1)
    radius = kernel.shape[-1] // 2
    out = inputs
    for axis in range(2, inputs.dim()):
        # every line along ``axis`` becomes one row of a single-channel 1-D convolution
        lines = out.movedim(axis, -1)
        shape = lines.shape
        flat = lines.reshape(-1, 1, shape[-1])
        mode = "reflect" if radius < shape[-1] else "replicate"
        blurred = F.conv1d(F.pad(flat, (radius, radius), mode=mode), kernel)
        out = blurred.reshape(shape).movedim(-1, axis)
    return out


def constant_reference(inputs: Tensor, value: BaselineType = None) -> Tensor:
    """A constant replacement for ``inputs``: a scalar, one value per channel, or a tensor.

    Args:
        inputs (Tensor): (N, C, ...) input the reference replaces.
        value (float, sequence of float, Tensor or None): a scalar; C per-channel values; or a
            tensor broadcastable to ``inputs`` (a Captum ``baselines`` tensor, (C,) per channel
            included). None uses each example's mean colour per channel (the paper's µ0), and 0
            (Captum's default baseline) for (N,) or (N, F) rows, whose features have no common
            scale to average over.

    Returns:
        Tensor with the shape, device and dtype of ``inputs``.
    """
    if value is None and inputs.dim() <= 2:
        return torch.zeros_like(inputs)
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
        has_spread = inputs.dim() > 2 and inputs[0, 0].numel() > 1
        scale = inputs.std(dim=spatial, keepdim=True) if has_spread else 1.0
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


def blur_pyramid(inputs: Tensor, levels: int = 8, max_sigma: float = 20.0) -> Tensor:
    """Increasingly sharp copies of ``inputs`` (Fong, Patrick & Vedaldi 2019): level l of L is
    blurred with σ_l = ``max_sigma``·(1 − l / (L − 1)), so level 0 is the most blurred and level
    L − 1 the input itself.

    Args:
        inputs (Tensor): ``(N, C, *spatial)`` with at least one spatial axis.
        levels (int): L, at least 2.
        max_sigma (float): σ of level 0, in pixels.

    Returns:
        Tensor ``(N, L, C, *spatial)`` on the input's device and dtype.

    Examples::

        >>> pyramid = blur_pyramid(images)                 # (N, 8, 3, H, W)
        >>> perturbed = pyramid_blend(pyramid, mask)       # the input where mask = 1
    """
    if levels < 2:
        raise ValueError(f"levels must be at least 2, got {levels!r}")
    sigmas = [max_sigma * (1 - level / (levels - 1)) for level in range(levels)]
    return torch.stack([gaussian_blur(inputs, sigma) for sigma in sigmas], dim=1)


def pyramid_blend(pyramid: Tensor, mask: Tensor) -> Tensor:
    """Each position shows the pyramid level its mask value points at, interpolated linearly
    between the two nearest levels: 1 keeps the input, 0 shows the most blurred copy.

    Args:
        pyramid (Tensor): ``(N, L, C, *spatial)`` from :func:`blur_pyramid`.
        mask (Tensor): ``(N, 1, *spatial)`` in [0, 1]; differentiable.

    Returns:
        Tensor ``(N, C, *spatial)``.
    """
    levels = pyramid.shape[1]
    position = mask.unsqueeze(1) * (levels - 1)  # (N, 1, 1, *spatial)
    lower = position.detach().floor().clamp(0, levels - 2)
    fraction = position - lower
    index = lower.long().expand(-1, 1, *pyramid.shape[2:])
    below = pyramid.gather(1, index)
    above = pyramid.gather(1, index + 1)
    return torch.lerp(below, above, fraction).squeeze(1)  # one pass, and one in backward


def choose_perturbation(
    perturbation: str | None, inputs: Sequence[Tensor], baselines: Sequence[BaselineType]
) -> str:
    """The perturbation a call uses: ``perturbation`` itself, or for None ``"blur"`` when every
    input has spatial axes and no ``baselines`` are given, ``"constant"`` (the baselines, as
    Captum's perturbation methods use them) otherwise. A blur of (N,) or (N, F) rows is refused:
    their features have no neighbours."""
    if perturbation is None:
        spatial = all(x.dim() > 2 for x in inputs)
        given = any(b is not None for b in baselines)
        return "blur" if spatial and not given else "constant"
    if perturbation not in PERTURBATIONS:
        raise ValueError(f"perturbation must be one of {PERTURBATIONS}, got {perturbation!r}")
    if perturbation == "blur" and any(x.dim() <= 2 for x in inputs):
        raise ValueError(
            "perturbation='blur' needs inputs with spatial axes to blur along; (N, F) rows have "
            "none: use perturbation='constant' (deleted features take baselines, default 0) or "
            "'noise'"
        )
    return perturbation


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
    "blur_pyramid",
    "choose_perturbation",
    "constant_reference",
    "gaussian_blur",
    "gaussian_kernel1d",
    "make_reference",
    "noise_reference",
    "pyramid_blend",
]
