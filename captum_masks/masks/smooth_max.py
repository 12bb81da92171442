"""Fong, Patrick & Vedaldi's smooth max-pooling mask (ICCV 2019, Section 3.3): the
parametrisation of :class:`~captum_masks.ExtremalPerturbation`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_masks._engine.checks import check_at_least, check_positive_int
from captum_masks._engine.scale import scaled_to_input, whole_scaled_to_input
from captum_masks.masks.base import UnitIntervalMask
from captum_masks.masks.interpolation import upsample_linearly

#: the paper's grid step, σ and evaluation stride in pixels at 224 px, scaled to the input
PAPER_STEP = 7
PAPER_SIGMA = 21.0
PAPER_STRIDE = 4


class GridSizes(NamedTuple):
    """:class:`SmoothMaxMask`'s sizes in pixels for one image shape."""

    step: int
    sigma: float
    stride: int
    margin: float


class SmoothMaxMask(UnitIntervalMask):
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

    The sizes left at None follow from the image, as fractions of its shorter side s of the
    paper's settings at 224 px: ``step = round(s / 32)``, ``σ = 21 · s / 224``, ``stride =
    round(s / 56)`` (steps and strides at least 1), margin = σ. At 224 px that is the paper's
    7 px grid and σ = 21 px, evaluated every 4 px.

    Args:
        step (int or None): grid spacing in pixels. None: s / 32 (above). Default: None
        sigma (float or None): kernel width σ in pixels. None: 21 · s / 224. Default: None
        temperature (float): T of the smooth maximum (the paper's 20). Default: 20
        stride (int or None): pixels between the points where the mask is evaluated (1: every
            pixel). None: s / 56. Default: None
        margin (float or None): width in pixels of the band around the image where the mask is
            also evaluated (rounded to whole strides); None is σ, as the authors' code.
            Default: None
        init_value (float): the value every grid parameter starts at, in [0, 1]. Default: 1

    Examples::

        >>> mask = SmoothMaxMask(step=7, sigma=21.0, stride=1)
        >>> attribution = ExtremalPerturbation(model).attribute(images, target=3, mask=mask)
        >>> theta = mask.init([images], generator)[0]             # (N, 1, 32, 32) for 224 px
        >>> SmoothMaxMask().sizes_for((64, 64))                   # at 64 px
        GridSizes(step=2, sigma=6.0, stride=1, margin=6.0)
        >>> full = mask.expand(theta, images.shape[2:])           # (N, 1, 224, 224)
    """

    def __init__(
        self,
        step: int | None = None,
        sigma: float | None = None,
        temperature: float = 20.0,
        stride: int | None = None,
        margin: float | None = None,
        init_value: float = 1.0,
    ) -> None:
        check_positive_int("step", step, allow_none=True)
        check_positive_int("stride", stride, allow_none=True)
        if sigma is not None:
            check_at_least("sigma", sigma, 1e-3, "the kernel's width in pixels")
        check_at_least("temperature", temperature, 0.0, "0 is a plain mean")
        if margin is not None:
            check_at_least("margin", margin, 0.0, "the band around the image, in pixels")
        self.step = step
        self.stride = stride
        self.sigma = None if sigma is None else float(sigma)
        self.temperature = float(temperature)
        self.margin = None if margin is None else float(margin)
        super().__init__(init_value)
        self._geometry: dict[tuple, _Geometry] = {}

    def sizes_for(self, spatial_shape: Sequence[int]) -> GridSizes:
        """The grid's sizes in pixels for an image with ``spatial_shape``: the given values,
        and the rule above for those left at None."""
        step = self.step or whole_scaled_to_input(PAPER_STEP, spatial_shape)
        sigma = self.sigma or scaled_to_input(PAPER_SIGMA, spatial_shape)
        stride = self.stride or whole_scaled_to_input(PAPER_STRIDE, spatial_shape)
        margin = sigma if self.margin is None else self.margin
        return GridSizes(step, sigma, stride, margin)

    def cell_shape(self, spatial_shape: Sequence[int]) -> list[int]:
        step = self.sizes_for(spatial_shape).step
        return [math.ceil(side / step) for side in spatial_shape]

    def expand(
        self,
        params: Tensor,
        spatial_shape: Sequence[int],
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The ``(N, 1, H, W)`` mask of grid parameters ``(N, 1, h, w)``, in [0, 1]."""
        return self.upsample(self.evaluated(params, spatial_shape), spatial_shape)

    def evaluated(self, params: Tensor, spatial_shape: Sequence[int]) -> Tensor:
        """The mask at the evaluated points only, ``(N, 1, ⌈H / stride⌉ + 2·band,
        ⌈W / stride⌉ + 2·band)`` with the margin's band of points on each side: the same
        distribution of values as the full mask, at a fraction of the size (an area term can
        sort it instead)."""
        geometry = self._neighbourhood(params, spatial_shape)
        padded = F.pad(params[:, 0], (geometry.padding,) * 4)  # no grid point outside: 0
        pooled = _SmoothMaximum.apply(
            padded, geometry.rows, geometry.cols, geometry.kernel, self.temperature
        )
        return pooled.clamp(0.0, 1.0)

    def upsample(self, evaluated: Tensor, spatial_shape: Sequence[int]) -> Tensor:
        """The full ``(N, 1, H, W)`` mask from :meth:`evaluated`'s."""
        inside = self.inside(evaluated, spatial_shape)
        return upsample_linearly(inside, spatial_shape).clamp(0.0, 1.0)

    def inside(self, evaluated: Tensor, spatial_shape: Sequence[int]) -> Tensor:
        """:meth:`evaluated`'s points inside the image (without the margin's band)."""
        band = self._neighbourhood(evaluated, spatial_shape).band
        if band == 0:
            return evaluated
        return evaluated[..., band:-band, band:-band]

    def inside_fraction(self, evaluated: Tensor, spatial_shape: Sequence[int]) -> float:
        """The share of :meth:`evaluated`'s points that are inside the image."""
        return self.inside(evaluated, spatial_shape)[0].numel() / evaluated[0].numel()

    def _neighbourhood(self, like: Tensor, spatial_shape: Sequence[int]) -> _Geometry:
        """The evaluated points' neighbours and kernel for ``spatial_shape``; built once per
        shape."""
        key = (tuple(spatial_shape), like.device, like.dtype)
        if key not in self._geometry:
            self._geometry[key] = _Geometry.build(
                self.sizes_for(spatial_shape), spatial_shape, like
            )
        return self._geometry[key]

    def __repr__(self) -> str:
        return (
            f"SmoothMaxMask(step={self.step}, sigma={self.sigma}, "
            f"temperature={self.temperature}, stride={self.stride}, margin={self.margin}, "
            f"init_value={self.init_value})"
        )


@dataclass(frozen=True)
class _Geometry:
    """For the evaluated points of one image shape: the padded grid rows and columns of their
    neighbours, (h'·K,) and (w'·K,) point-major, the kernel k(u − v), (h', w', K, K), the
    evaluated points in the margin's band per side, and the grid cells padded around the
    image."""

    rows: Tensor
    cols: Tensor
    kernel: Tensor
    band: int
    padding: int

    @classmethod
    def build(cls, sizes: GridSizes, spatial_shape: Sequence[int], like: Tensor) -> _Geometry:
        step, sigma, stride, margin = sizes
        radius = 1 + math.ceil(sigma / step)
        band = round(margin / stride)
        # grid cells a neighbour of an evaluated point can be from the image's grid
        padding = radius + math.ceil(margin / step) + 1
        offsets = torch.arange(-radius, radius + 1, device=like.device)

        def axis(side: int) -> tuple[Tensor, Tensor]:
            count = math.ceil(side / stride)
            # the evaluated points, at the centres of stride × stride blocks (bilinear
            # upsampling with align_corners=False puts its samples there), and the band's
            positions = torch.arange(-band, count + band, device=like.device)
            points = (positions + 0.5) * side / count - 0.5
            cells = torch.div(points, step, rounding_mode="floor").long()
            neighbours = cells + offsets.view(-1, 1)
            centres = neighbours * step + (step - 1) / 2
            return neighbours + padding, points - centres

        (rows, row_distance), (cols, col_distance) = map(axis, spatial_shape)
        distance = torch.sqrt(
            row_distance.T[:, None, :, None] ** 2 + col_distance.T[None, :, None, :] ** 2
        )
        kernel = torch.exp(-2 * (distance / sigma - 0.5).clamp_min(0) ** 2).to(like.dtype)
        return cls(rows.T.flatten(), cols.T.flatten(), kernel, band, padding)


#: below it exp(T·(a − 1)) stays a normal float32 for every a in [0, 1]
MAX_SHIFTED_TEMPERATURE = 80.0


class _SmoothMaximum(torch.autograd.Function):
    """The smooth maximum Σ_k a_k·softmax(T·a)_k over each evaluated point's neighbours k, with
    a_k = k(u − v)·m̄(v) the kernel-weighted grid values, and its gradient written out.

    The neighbours of the (N, H, W) padded grid are gathered with two plain selections, columns
    then rows, so that the larger one copies whole rows; the product with the kernel lays them
    out as (N, h', w', K·K), each point's neighbours contiguous, so that the sums over them and
    the per-point factors of the gradient run along the innermost axis. The gradient of the
    pooled value w.r.t. a_j is softmax(T·a)_j·(1 + T·(a_j − pooled)); its product with the
    kernel lays it back out for two ``index_add_``, rows first. Written as one function, the
    (N, h', w', K·K) tensors, the largest of the mask, are allocated three times instead of the
    nine times autograd's gather, product and softmax take.

    The values are in [0, 1] (parameters in [0, 1] times a kernel ≤ 1), so the softmax is
    shifted by T, the largest T·a can be, instead of by each point's maximum, which costs as
    much as the rest; above :data:`MAX_SHIFTED_TEMPERATURE` that could underflow, and the
    maximum is used."""

    @staticmethod
    def forward(
        ctx, padded: Tensor, rows: Tensor, cols: Tensor, kernel: Tensor, temperature: float
    ) -> Tensor:
        count, (point_rows, point_cols, size, _) = len(padded), kernel.shape
        selected = padded.index_select(2, cols).index_select(1, rows)
        by_point = selected.view(count, point_rows, size, point_cols, size).permute(0, 1, 3, 2, 4)
        values = padded.new_empty(count, point_rows, point_cols, size, size)
        values = torch.mul(by_point, kernel, out=values).view(count, point_rows, point_cols, -1)
        if temperature <= MAX_SHIFTED_TEMPERATURE:
            shifted = values.mul(temperature).sub_(temperature)
        else:
            shifted = (values - values.amax(dim=-1, keepdim=True)).mul_(temperature)
        weights = shifted.exp_()
        total = weights.sum(dim=-1, keepdim=True)
        pooled = (values * weights).sum(dim=-1, keepdim=True).div_(total)
        ctx.save_for_backward(values, weights, total, pooled, rows, cols, kernel)
        ctx.temperature, ctx.padded_shape = temperature, padded.shape
        return pooled.view(count, 1, point_rows, point_cols)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None, None]:
        values, weights, total, pooled, rows, cols, kernel = ctx.saved_tensors
        temperature, (count, height, width) = ctx.temperature, ctx.padded_shape
        # softmax_j·(1 + T·(a_j − pooled))·grad / total as one product: (A + B·a_j)·softmax_j
        scale = grad.reshape(total.shape) / total
        slope = torch.addcmul(scale * (1 - temperature * pooled), values, scale * temperature)
        slope = slope.mul_(weights).view(count, *kernel.shape)
        point_rows, point_cols, size, _ = kernel.shape
        selected = slope.new_empty(count, point_rows, size, point_cols, size)
        torch.mul(slope, kernel, out=selected.permute(0, 1, 3, 2, 4))
        selected = selected.view(count, len(rows), len(cols))
        by_cols = slope.new_zeros(count, height, len(cols)).index_add_(1, rows, selected)
        grid = slope.new_zeros(count, height, width).index_add_(2, cols, by_cols)
        return grid, None, None, None, None


__all__ = ["SmoothMaxMask"]
