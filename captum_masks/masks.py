"""Mask parametrisations: how optimised parameters θ become a mask m(θ) at input resolution.

A parametrisation is a small stateless object: ``init`` builds the parameters for a batch and
``__call__`` maps parameters to a ``(N, 1, *spatial)`` mask in [0, 1] that broadcasts over channels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_masks._inputs import check_at_least, check_positive_int
from captum_masks.perturbations import gaussian_blur


#: F.interpolate's linear mode for masks of 1, 2 and 3 spatial axes
LINEAR_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def upsample_linearly(values: Tensor, spatial_shape: Sequence[int]) -> Tensor:
    """``(N, 1, *low)`` values linearly interpolated to ``spatial_shape`` (``align_corners``
    False); values already at that shape are returned as they are."""
    if tuple(values.shape[2:]) == tuple(spatial_shape):
        return values
    mode = LINEAR_MODES[values.dim() - 2]
    return F.interpolate(values, size=tuple(spatial_shape), mode=mode, align_corners=False)


def clamp_to_unit_interval_(params: Sequence[Tensor]) -> None:
    """Project mask parameters back onto [0, 1] after an optimiser step (in place)."""
    for param in params:
        param.clamp_(0.0, 1.0)


class UpsampledMask:
    r"""A low-resolution mask, upsampled by ``factor`` and smoothed (Fong & Vedaldi, Eq. 4).

    The parameters are the low-resolution mask itself, kept in [0, 1] by :meth:`clamp_`. The
    full-resolution mask is M = g_σ ∗ upsample(m) (linear/bilinear upsampling, Gaussian smoothing
    with reflected borders), optionally shifted by a random integer jitter τ ∈ [0, jitter) per axis
    (edges replicated; every example of a batch gets the same shift at a step): the paper's expectation over shifts E_τ, taken on the mask
    instead of the image.

    Upsampling, shift and smoothing are linear and separable, so each axis is one small
    (side × low-res side) matrix, built once per input shape; a mask is then two matrix products,
    far cheaper than convolving the full-resolution mask at every step.

    Args:
        factor (int): upsampling factor δ; the low-resolution side is ⌈side / factor⌉.
        smooth_sigma (float): σ of the Gaussian applied to the upsampled mask (0: none).
        jitter (int): shifts are drawn from {0, …, jitter − 1} pixels; 0 or 1 disables it.

    Examples::

        >>> parametrisation = UpsampledMask(factor=8, smooth_sigma=5.0)
        >>> theta = parametrisation.init(images, fill=0.5)    # (N, 1, 28, 28) for 224 px
        >>> mask = parametrisation(theta, images.shape[2:])   # (N, 1, 224, 224)
    """

    def __init__(self, factor: int = 8, smooth_sigma: float = 5.0, jitter: int = 0) -> None:
        check_positive_int("mask_factor", factor)
        if not isinstance(jitter, int) or jitter < 0:
            raise ValueError(f"jitter must be an int >= 0, got {jitter!r}")
        if smooth_sigma < 0:
            raise ValueError(f"mask_sigma must be >= 0, got {smooth_sigma!r}")
        self.factor = factor
        self.smooth_sigma = smooth_sigma
        self.jitter = jitter
        self._operators: dict[tuple, Tensor] = {}

    def init(self, inputs: Tensor, fill: float) -> Tensor:
        low_res = [math.ceil(side / self.factor) for side in inputs.shape[2:]]
        return torch.full(
            (inputs.shape[0], 1, *low_res), float(fill), device=inputs.device, dtype=inputs.dtype
        )

    def __call__(
        self,
        params: Tensor,
        spatial_shape: Sequence[int],
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Full-resolution ``(N, 1, *spatial_shape)`` mask; jittered when a generator is given."""
        operators = [
            self._axis_operators(low, side, params)
            for low, side in zip(params.shape[2:], spatial_shape)
        ]
        # one shift per axis for the whole batch: an example is shifted alike in any batch
        if generator is not None and self.jitter > 1:
            shifts = torch.randint(
                self.jitter, (len(operators),), generator=generator, device=params.device
            )
        else:
            shifts = torch.zeros(len(operators), dtype=torch.long, device=params.device)
        shifted = [ops[shift] for ops, shift in zip(operators, shifts)]
        # one (side × low) matrix per axis: "ia,nab,jb->nij" for images, likewise in 1-D and
        # 3-D; in this operand order an example rounds alike alone and in a batch (the contract
        # tests compare the two)
        full, low = "ijk"[: len(shifted)], "abc"[: len(shifted)]
        operators = [f"{f}{l}" for f, l in zip(full, low)]
        equation = ",".join([operators[0], f"n{low}", *operators[1:]]) + f"->n{full}"
        return torch.einsum(equation, shifted[0], params[:, 0], *shifted[1:]).unsqueeze(1)

    def _axis_operators(self, low: int, side: int, like: Tensor) -> Tensor:
        """(max(jitter, 1), side, low): the linear map low-res → full-res for each shift."""
        key = (low, side, like.device, like.dtype)
        if key not in self._operators:
            basis = torch.eye(low, device=like.device, dtype=like.dtype).unsqueeze(1)
            upsampled = F.interpolate(
                basis, scale_factor=self.factor, mode="linear", align_corners=False
            )
            pad = max(self.jitter, 1)
            padded = F.pad(upsampled, (pad, 0), mode="replicate")
            shifted = torch.cat([padded[..., pad - s : pad - s + side] for s in range(pad)], dim=1)
            smoothed = gaussian_blur(shifted, self.smooth_sigma)
            self._operators[key] = smoothed.permute(1, 2, 0).contiguous()
        return self._operators[key]

    clamp_ = staticmethod(clamp_to_unit_interval_)

    def __repr__(self) -> str:
        return (
            f"UpsampledMask(factor={self.factor}, smooth_sigma={self.smooth_sigma}, "
            f"jitter={self.jitter})"
        )


class SmoothMaxMask:
    r"""Fong, Patrick & Vedaldi's smooth mask (ICCV 2019, Section 3.3): parameters m̄ on a grid
    of ``step`` pixels in [0, 1]; the mask at pixel u is a smooth maximum, over the grid points
    v near u, of k(u − v)·m̄(v), with the kernel k(z) = exp(−2·max(‖z‖/σ − ½, 0)²) (flat out to
    σ/2, then a Gaussian fall-off) and the smooth maximum Σ_v a_v·softmax(T·a)_v at
    temperature T = 20. Unlike a blur of an upsampled grid, the mask stays at 1 across a region
    whose parameters are all 1, so a mask of a given area can be exactly binary.

    Each point's neighbours are the grid points within 1 + ⌈σ / step⌉ cells of its own. The
    mask is smooth at the scale of σ, so it is evaluated every ``stride`` pixels and bilinearly
    upsampled: at 224 px and the defaults that is 81 neighbours at 56 × 56 points instead of
    224 × 224, a sixteenth of the cost (``stride=1`` evaluates every pixel).

    With a ``margin``, the mask is also evaluated in a band of that width around the image
    (the grid has no parameters there: the band holds the fall-off of a region that touches
    the border), so an area term on :meth:`evaluated` also counts what a region spills over
    the border, as the authors' code does with a margin of σ.

    Args:
        step (int): grid spacing in pixels (the paper's 7 px at 224 px).
        sigma (float): kernel width σ in pixels (the paper's 21).
        temperature (float): T of the smooth maximum (the paper's 20).
        stride (int): pixels between the points where the mask is evaluated.
        margin (float): width in pixels of the band around the image where the mask is also
            evaluated (rounded to whole strides).

    Examples::

        >>> parametrisation = SmoothMaxMask(step=7, sigma=21.0)
        >>> theta = parametrisation.init(images, fill=1.0)      # (N, 1, 32, 32) for 224 px
        >>> mask = parametrisation(theta, images.shape[2:])     # (N, 1, 224, 224)
    """

    def __init__(
        self,
        step: int = 7,
        sigma: float = 21.0,
        temperature: float = 20.0,
        stride: int = 4,
        margin: float = 0.0,
    ) -> None:
        check_positive_int("step", step)
        check_positive_int("stride", stride)
        check_at_least("sigma", sigma, 1e-3, "the kernel's width in pixels")
        check_at_least("temperature", temperature, 0.0, "0 is a plain mean")
        check_at_least("margin", margin, 0.0, "the band around the image, in pixels")
        self.step = step
        self.stride = stride
        self.sigma = float(sigma)
        self.temperature = float(temperature)
        self.margin = float(margin)
        self.radius = 1 + math.ceil(self.sigma / step)
        self.band = round(self.margin / stride)  # evaluated points outside the image, per side
        # grid cells a neighbour of an evaluated point can be from the image's grid
        self.padding = self.radius + math.ceil(self.margin / step) + 1
        self._geometry: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}

    def init(self, inputs: Tensor, fill: float) -> Tensor:
        """Grid parameters ``(N, 1, ⌈H / step⌉, ⌈W / step⌉)`` all equal to ``fill``."""
        grid = [math.ceil(side / self.step) for side in inputs.shape[2:]]
        return torch.full(
            (inputs.shape[0], 1, *grid), float(fill), device=inputs.device, dtype=inputs.dtype
        )

    def __call__(self, params: Tensor, spatial_shape: Sequence[int]) -> Tensor:
        """The ``(N, 1, H, W)`` mask of grid parameters ``(N, 1, h, w)``, in [0, 1]."""
        return self.upsample(self.evaluated(params, spatial_shape), spatial_shape)

    def evaluated(self, params: Tensor, spatial_shape: Sequence[int]) -> Tensor:
        """The mask at the evaluated points only, ``(N, 1, ⌈H / stride⌉ + 2·band,
        ⌈W / stride⌉ + 2·band)`` with the margin's band of points on each side: the same
        distribution of values as the full mask, at a fraction of the size (an area term can
        sort it instead)."""
        rows, cols, kernel = self._neighbourhood(params, spatial_shape)
        padded = F.pad(params[:, 0], (self.padding,) * 4)  # no grid point outside: 0
        # (N, h', K, w', K): each evaluated point's neighbouring grid values, selected by rows
        # then by columns (two plain selections: their gradients are cheap sums)
        neighbours = padded.index_select(1, rows.T.flatten()).index_select(2, cols.T.flatten())
        weighted = neighbours.view(len(params), *kernel.shape[1:]) * kernel
        pooled = _SmoothMaximum.apply(weighted, self.temperature)
        return pooled.view(len(params), 1, rows.shape[1], cols.shape[1]).clamp(0.0, 1.0)

    def upsample(self, evaluated: Tensor, spatial_shape: Sequence[int]) -> Tensor:
        """The full ``(N, 1, H, W)`` mask from :meth:`evaluated`'s."""
        return upsample_linearly(self.inside(evaluated), spatial_shape).clamp(0.0, 1.0)

    def inside(self, evaluated: Tensor) -> Tensor:
        """:meth:`evaluated`'s points inside the image (without the margin's band)."""
        if self.band == 0:
            return evaluated
        return evaluated[..., self.band : -self.band, self.band : -self.band]

    def inside_fraction(self, evaluated: Tensor) -> float:
        """The share of :meth:`evaluated`'s points that are inside the image."""
        return self.inside(evaluated)[0].numel() / evaluated[0].numel()

    def _neighbourhood(
        self, like: Tensor, spatial_shape: Sequence[int]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """For the evaluated points: the padded grid rows and columns of their neighbours,
        (K, h') and (K, w'), and the kernel k(u − v), (1, h', K, w', K); built once per
        shape."""
        key = (tuple(spatial_shape), like.device, like.dtype)
        if key not in self._geometry:
            offsets = torch.arange(-self.radius, self.radius + 1, device=like.device)

            def axis(side: int) -> tuple[Tensor, Tensor]:
                count = math.ceil(side / self.stride)
                # the evaluated points, at the centres of stride × stride blocks (bilinear
                # upsampling with align_corners=False puts its samples there), and the band's
                positions = torch.arange(-self.band, count + self.band, device=like.device)
                points = (positions + 0.5) * side / count - 0.5
                cells = torch.div(points, self.step, rounding_mode="floor").long()
                neighbours = cells + offsets.view(-1, 1)
                centres = neighbours * self.step + (self.step - 1) / 2
                return neighbours + self.padding, points - centres

            (rows, row_distance), (cols, col_distance) = map(axis, spatial_shape)
            distance = torch.sqrt(
                row_distance.T[:, :, None, None] ** 2 + col_distance.T[None, None, :, :] ** 2
            )
            kernel = torch.exp(-2 * (distance / self.sigma - 0.5).clamp_min(0) ** 2)
            kernel = kernel.unsqueeze(0).to(like.dtype)
            self._geometry[key] = (rows, cols, kernel)
        return self._geometry[key]

    clamp_ = staticmethod(clamp_to_unit_interval_)

    def __repr__(self) -> str:
        return (
            f"SmoothMaxMask(step={self.step}, sigma={self.sigma}, "
            f"temperature={self.temperature}, stride={self.stride}, margin={self.margin})"
        )


#: below it exp(T·(a − 1)) stays a normal float32 for every a in [0, 1]
MAX_SHIFTED_TEMPERATURE = 80.0


class _SmoothMaximum(torch.autograd.Function):
    """Σ_k a_k·softmax(T·a)_k over the neighbours k, axes 2 and 4 of (N, h', K, w', K), with
    its gradient written out, softmax(T·a)_j·(1 + T·(a_j − pooled)): autograd's softmax and
    products take twice as long on the mask's largest tensor.

    The values are in [0, 1] (parameters in [0, 1] times a kernel ≤ 1), so the softmax is
    shifted by T, the largest T·a can be, instead of by each point's maximum, which costs as
    much as the rest; above :data:`MAX_SHIFTED_TEMPERATURE` that could underflow, and the
    maximum is used."""

    @staticmethod
    def forward(ctx, values: Tensor, temperature: float) -> Tensor:
        neighbours = (2, 4)
        if temperature <= MAX_SHIFTED_TEMPERATURE:
            shifted = temperature * values - temperature
        else:
            shifted = temperature * (values - values.amax(dim=neighbours, keepdim=True))
        weights = shifted.exp_()
        total = weights.sum(dim=neighbours, keepdim=True)
        pooled = (values * weights).sum(dim=neighbours, keepdim=True) / total
        ctx.save_for_backward(values, weights, total, pooled)
        ctx.temperature = temperature
        return pooled

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        values, weights, total, pooled = ctx.saved_tensors
        slope = (values - pooled).mul_(ctx.temperature).add_(1.0).mul_(weights)
        return slope.mul_(grad / total), None


MIN_TEMPERATURE = 1e-6


class SigmoidMask:
    r"""A full-resolution mask m = σ(W / temperature) over unconstrained weights W (NeuroMask).

    Args:
        temperature (float): divides W before the sigmoid; lower is sharper; at least 1e-6.
        init_range (tuple of float): W starts uniform in [low, high), drawn from the call's
            generator so a seed fixes it.

    Examples::

        >>> parametrisation = SigmoidMask(temperature=0.3, init_range=(-1.0, 1.0))
        >>> weights = parametrisation.init(images, generator)   # (N, 1, H, W)
        >>> mask = parametrisation(weights)
    """

    def __init__(self, temperature: float = 1.0, init_range: tuple[float, float] = (-1.0, 1.0)):
        check_at_least(
            "temperature", temperature, MIN_TEMPERATURE, "below it W / T overflows to NaN"
        )
        low, high = init_range
        if not low < high:
            raise ValueError(f"init_range must be (low, high) with low < high, got {init_range!r}")
        self.temperature = temperature
        self.init_range = (float(low), float(high))

    def init(self, inputs: Tensor, generator: torch.Generator) -> Tensor:
        """Weights ``(N, 1, *spatial)`` for ``(N, C, *spatial)`` inputs, uniform in ``init_range``."""
        return self.draw((inputs.shape[0], 1, *inputs.shape[2:]), generator, inputs)

    def draw(self, shape: Sequence[int], generator: torch.Generator, like: Tensor) -> Tensor:
        """Weights of any ``shape`` (e.g. one per feature group), uniform in ``init_range``, on
        the device and dtype of ``like``."""
        low, high = self.init_range
        uniform = torch.rand(
            tuple(shape), generator=generator, device=like.device, dtype=like.dtype
        )
        return low + (high - low) * uniform

    def __call__(self, weights: Tensor) -> Tensor:
        return torch.sigmoid(weights / self.temperature)

    def __repr__(self) -> str:
        return f"SigmoidMask(temperature={self.temperature}, init_range={self.init_range})"


class ChannelCombinationMask:
    r"""A mask built from a layer's feature maps (Du et al., Eq. 6–7): m = Σ_i ω_i·f_i(x),
    min-max normalised per example and bilinearly upsampled to the input.

    The parameters are the weights ω, one per channel, kept ≥ 0 by :meth:`clamp_`. The feature
    maps are those of the clean input and stay fixed during the optimisation.

    Args:
        features (Tensor): (N, K, h, w) feature maps of the clean input.
        size (tuple of int): the input's (H, W).

    Examples::

        >>> parametrisation = ChannelCombinationMask(features, images.shape[2:])
        >>> omega = parametrisation.init(0.1)           # (N, K)
        >>> mask = parametrisation(omega)                # (N, 1, H, W) in [0, 1]
    """

    def __init__(self, features: Tensor, size: Sequence[int]) -> None:
        self.features = features.detach()
        self.size = tuple(size)

    def init(self, value: float) -> Tensor:
        """ω = ``value`` for every channel of every example."""
        return torch.full(
            self.features.shape[:2],
            float(value),
            device=self.features.device,
            dtype=self.features.dtype,
        )

    def __call__(self, weights: Tensor, batch: slice | Tensor | None = None) -> Tensor:
        return upsample_linearly(self.at_layer_resolution(weights, batch), self.size)

    def at_layer_resolution(self, weights: Tensor, batch: slice | Tensor | None = None) -> Tensor:
        """The normalised combination (N, 1, h, w) at the layer's resolution, before upsampling."""
        features = self.features if batch is None else self.features[batch]
        combined = torch.einsum("nk,nkhw->nhw", weights, features).unsqueeze(1)
        flat = combined.flatten(1)
        low = flat.min(dim=1).values.view(-1, 1, 1, 1)
        high = flat.max(dim=1).values.view(-1, 1, 1, 1)
        # Eq. 7 (the paper divides by max − min; the authors' code by max)
        return (combined - low) / (high - low).clamp_min(torch.finfo(combined.dtype).eps)

    @staticmethod
    def clamp_(params: Sequence[Tensor]) -> None:
        """ω ≥ 0 after every step (Algorithms 1–2, line "Clip")."""
        for param in params:
            param.clamp_(min=0.0)


__all__ = [
    "ChannelCombinationMask",
    "SigmoidMask",
    "SmoothMaxMask",
    "UpsampledMask",
    "upsample_linearly",
]
