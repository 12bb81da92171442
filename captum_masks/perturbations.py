"""Perturbation operators Φ: what a masked-out region of the input is replaced with.

Every reference lives in the caller's input space (normalised or not) and on the input's device and
dtype. ``blend(x, m, reference) = m·x + (1 − m)·reference`` keeps the input where ``m = 1`` and
shows the reference where ``m = 0`` (Fong & Vedaldi 2017, Eq. 2).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_masks._engine.checks import (
    check_at_least,
    check_non_negative,
    check_positive_int,
)
from captum_masks._engine.scale import scaled_to_input

BaselineValue = float | Sequence[float] | Tensor | None


#: σ below which the Gaussian's neighbours weigh exp(−0.5 / σ²) = 0 in any float dtype (and a
#: σ that underflows to 0 in float32 would give 0 / 0 at the centre)
NEGLIGIBLE_SIGMA = 1e-2
#: the paper's blur σ₀ in pixels at 224 px, scaled to the input when derived
PAPER_BLUR_SIGMA = 10.0


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


def constant_reference(inputs: Tensor, value: BaselineValue = None) -> Tensor:
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
    mean: BaselineValue = None,
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


def blend(inputs: Tensor, mask: Tensor, reference: Tensor | float) -> Tensor:
    """Φ(x, m) = m·x + (1 − m)·reference: keep the input where m = 1, show the reference at 0.

    Args:
        inputs (Tensor): (N, C, ...) input.
        mask (Tensor): (N, 1, ...) mask in [0, 1], broadcast over channels.
        reference (Tensor or float): what replaces the input, shaped like ``inputs`` or one
            value.

    Returns:
        Tensor shaped like ``inputs``; differentiable in ``mask``.

    Examples::

        >>> perturbed = blend(images, torch.zeros_like(images[:, :1]), reference)  # = reference
    """
    return mask * inputs + (1.0 - mask) * reference


class Perturbation(Protocol):
    """Φ: what a method shows where its mask is 0. ``reference`` is computed once per call;
    ``apply`` blends it with the input under a mask at every step."""

    def reference(
        self, inputs: Tensor, baselines: BaselineValue, generator: torch.Generator
    ) -> Tensor:
        """The reference for ``(N, C, *spatial)`` inputs (``baselines`` as Captum's)."""
        ...

    def apply(self, inputs: Tensor, mask: Tensor, reference: Tensor) -> Tensor:
        """Φ(x, m): the input where ``mask`` is 1, the reference where it is 0."""
        ...


class _Blended:
    """A reference of the input's shape, shown through :func:`blend`."""

    def apply(self, inputs: Tensor, mask: Tensor, reference: Tensor) -> Tensor:
        return blend(inputs, mask, reference)


@dataclass(frozen=True)
class Blur(_Blended):
    """A Gaussian blur of the input along its spatial axes (Fong & Vedaldi, Eq. 2, third case).

    Args:
        sigma (float or None): σ₀ of the blur, in pixels, ≥ 0. None follows the input: its
            shortest spatial side ÷ 22.4, the paper's σ₀ = 10 px at 224 px scaled to the
            input, and at least the patch side of a vision transformer the method explains.
            Default: None

    Examples::

        >>> mp.attribute(images, target=3, perturbation=Blur(sigma=5.0))
        >>> Blur().sigma_for((32, 32))
        1.4285714285714286
    """

    sigma: float | None = None

    def __post_init__(self) -> None:
        if self.sigma is not None:
            check_non_negative(sigma=self.sigma)

    def sigma_for(self, spatial_shape: Sequence[int]) -> float:
        """σ₀ in pixels for an input with ``spatial_shape``."""
        if self.sigma is not None:
            return self.sigma
        return scaled_to_input(PAPER_BLUR_SIGMA, spatial_shape)

    def reference(
        self, inputs: Tensor, baselines: BaselineValue, generator: torch.Generator
    ) -> Tensor:
        _check_no_baselines([baselines])
        return gaussian_blur(inputs, self.sigma_for(inputs.shape[2:]))


@dataclass(frozen=True)
class Constant(_Blended):
    """The ``baselines`` (Fong & Vedaldi, Eq. 2, first case; Captum's baselines): a scalar, one
    value per channel or a tensor broadcastable to the input; None is each example's mean
    colour (0 for rows), unless the method says otherwise.

    Examples::

        >>> mp.attribute(images, target=3, perturbation=Constant(), baselines=0.0)
    """

    def reference(
        self, inputs: Tensor, baselines: BaselineValue, generator: torch.Generator
    ) -> Tensor:
        return constant_reference(inputs, baselines)


@dataclass(frozen=True)
class Noise(_Blended):
    """I.i.d. Gaussian noise around the ``baselines`` (Fong & Vedaldi, Eq. 2, second case),
    drawn once per call from its seed.

    Args:
        std (float or None): the noise's standard deviation; None is each example's
            per-channel standard deviation. Default: None

    Examples::

        >>> mp.attribute(images, target=3, perturbation=Noise(std=0.5))
    """

    std: float | None = None

    def __post_init__(self) -> None:
        if self.std is not None:
            check_non_negative(std=self.std)

    def reference(
        self, inputs: Tensor, baselines: BaselineValue, generator: torch.Generator
    ) -> Tensor:
        return noise_reference(inputs, generator, baselines, self.std)


@dataclass(frozen=True)
class BlurPyramid:
    """Increasingly blurred copies of the input, a mask value picking between them (Fong,
    Patrick & Vedaldi, 2019): 1 shows the input, 0 the most blurred copy.

    Args:
        levels (int): copies in the pyramid, at least 2. Default: 8
        max_sigma (float or None): σ of the most blurred copy, in pixels. None follows the
            input: its shortest spatial side ÷ 11.2, the paper's 20 px at 224 px, and at least
            twice the patch side of a vision transformer the method explains. Default: None

    Examples::

        >>> ep.attribute(images, target=3, perturbation=BlurPyramid(levels=4, max_sigma=10.0))
    """

    levels: int = 8
    max_sigma: float | None = None

    def __post_init__(self) -> None:
        check_positive_int("levels", self.levels)
        if self.levels < 2:
            raise ValueError(f"levels must be at least 2, got {self.levels!r}")
        if self.max_sigma is not None:
            check_at_least("max_sigma", self.max_sigma, 0.0, "σ of the most blurred copy")

    def max_sigma_for(self, spatial_shape: Sequence[int]) -> float:
        """σ of the most blurred copy, in pixels, for an input with ``spatial_shape``."""
        if self.max_sigma is not None:
            return self.max_sigma
        return scaled_to_input(2 * PAPER_BLUR_SIGMA, spatial_shape)

    def reference(
        self, inputs: Tensor, baselines: BaselineValue, generator: torch.Generator
    ) -> Tensor:
        _check_no_baselines([baselines])
        return blur_pyramid(inputs, self.levels, self.max_sigma_for(inputs.shape[2:]))

    def apply(self, inputs: Tensor, mask: Tensor, reference: Tensor) -> Tensor:
        return pyramid_blend(reference, mask)


def resolve_perturbation(
    perturbation: str | Perturbation | None,
    inputs: Sequence[Tensor],
    baselines: Sequence[BaselineValue],
    by_name: Mapping[str, Perturbation],
    patch: int | None = None,
) -> Perturbation:
    """The perturbation a call uses: an object as given, a name from the method's ``by_name``
    (its defaults), or for None ``"blur"`` when every input has spatial axes and no
    ``baselines`` are given, ``"constant"`` (the baselines, as Captum's perturbation methods use
    them) otherwise. A blur of (N,) or (N, F) rows is refused: their features have no
    neighbours. ``patch``, a vision transformer's patch side, sets a lower bound on the σ of
    a blur left at its default (:func:`_at_least_a_patch`)."""
    if perturbation is None:
        spatial = all(x.dim() > 2 for x in inputs)
        given = any(b is not None for b in baselines)
        perturbation = "blur" if spatial and not given else "constant"
    if isinstance(perturbation, str):
        if perturbation not in by_name:
            names = ", ".join(map(repr, by_name))
            raise ValueError(
                f"perturbation must be one of {names} or a perturbation object, "
                f"got {perturbation!r}"
            )
        perturbation = by_name[perturbation]
    allowed = tuple(type(p) for p in by_name.values())
    if not isinstance(perturbation, allowed):
        kinds = ", ".join(kind.__name__ for kind in allowed)
        raise TypeError(f"perturbation must be a name or one of {kinds}, got {perturbation!r}")
    if isinstance(perturbation, (Blur, BlurPyramid)):
        _check_no_baselines(baselines)
    if isinstance(perturbation, (Blur, BlurPyramid)) and any(x.dim() <= 2 for x in inputs):
        raise ValueError(
            "perturbation='blur' needs inputs with spatial axes to blur along; (N, F) rows have "
            "none: use perturbation='constant' (deleted features take baselines, default 0) or "
            "'noise'"
        )
    if patch is not None:
        perturbation = _at_least_a_patch(perturbation, patch, inputs[0].shape[2:])
    return perturbation


def _at_least_a_patch(
    perturbation: Perturbation, patch: int, spatial_shape: Sequence[int]
) -> Perturbation:
    """A blur left at its default σ, with σ₀ raised to at least ``patch`` pixels (a pyramid's
    most blurred copy to twice that): a vision transformer reads each patch as one token, and a
    patch blurred by one patch side keeps about 15 % of its own content (a 2-D Gaussian of σ
    equal to the side puts 0.38² of its weight on the patch it is centred on), where the
    paper's 10 px at 224 px, scaled down to a small input, leaves a flat patch (one colour) as
    it was. Any other perturbation, or one with its σ given, is returned as it is."""
    if isinstance(perturbation, Blur) and perturbation.sigma is None:
        return Blur(sigma=max(perturbation.sigma_for(spatial_shape), float(patch)))
    if isinstance(perturbation, BlurPyramid) and perturbation.max_sigma is None:
        widest = max(perturbation.max_sigma_for(spatial_shape), 2.0 * patch)
        return BlurPyramid(levels=perturbation.levels, max_sigma=widest)
    return perturbation


def _check_no_baselines(baselines: Sequence[BaselineValue]) -> None:
    """A blur shows blurred copies of the input: ``baselines`` would be ignored."""
    if any(b is not None for b in baselines):
        raise ValueError(
            "baselines is only used by the constant and noise perturbations; the blur "
            "perturbation replaces content by blurred copies of the input"
        )


__all__ = [
    "Blur",
    "BlurPyramid",
    "Constant",
    "Noise",
    "Perturbation",
    "blend",
    "blur_pyramid",
    "constant_reference",
    "gaussian_blur",
    "gaussian_kernel1d",
    "noise_reference",
    "pyramid_blend",
    "resolve_perturbation",
]
