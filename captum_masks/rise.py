"""RISE (Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box
Models", BMVC 2018)."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_masks._engine.call import MaskAttribution, mask_attribute
from captum_masks._engine.checks import (
    check_positive_int,
    format_inputs,
    map_batch,
    per_input_baselines,
)
from captum_masks._engine.compat import BaselineType, TargetType, progress
from captum_masks._engine.layout import MaskLayout
from captum_masks._engine.model_state import make_generator
from captum_masks._engine.scores import select_scores
from captum_masks.masks.groups import FeatureGroups, resolve_groups
from captum_masks.perturbations import blend, constant_reference

_INTERPOLATION = {1: "linear", 2: "bilinear", 3: "trilinear"}
MIN_KEEP_PROBABILITY = 1e-6


class RISE(MaskAttribution):
    r"""
    RISE explains any model, without gradients, by probing it with randomly masked copies of
    the input [Petsiuk et al., BMVC 2018]. The importance of a position λ is the expected score
    of the target when λ is kept (Eq. 4–6), estimated from N random masks M_i:

    .. math::
        S(\lambda) \approx \frac{1}{\mathbb{E}[M(\lambda)]\, N}
            \sum_{i=1}^{N} f_c(x \odot M_i)\, M_i(\lambda)

    Each mask (Section 3.2) is a ``grid_size`` × ``grid_size`` grid of cells kept with
    probability p, upsampled with (bi/tri)linear interpolation to (grid + 1) cells of
    ⌈side / grid⌉ positions per axis, and cropped to the input with a random shift of less than a
    cell per axis, so the masks are smooth and their edges fall anywhere. The paper's defaults
    for ImageNet are N = 4000 masks, a 7 × 7 grid and p = 0.5.

    The masks span the spatial axes of (N, C, L), (N, C, H, W) and (N, C, D, H, W) inputs (or
    (N, L, D) with ``channels_last=True``); (N, F) rows and ``feature_mask`` groups keep each
    feature or group with probability p (no grid). Every example sees the same masks (drawn from
    ``seed``), so a batch gives the same result as one-by-one calls.

    Args:
        forward_func (Callable): the model, or any function returning scores
            (N, num_classes, ...) for a batch. It is only ever called forward, under
            ``torch.no_grad()``.

    Examples::

        >>> rise = RISE(model.eval())
        >>> saliency = rise.attribute(images, target=3)               # (N, 3, H, W)
        >>> quick = rise.attribute(images, target=3, n_samples=500)   # noisier
    """

    @mask_attribute
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: TargetType = None,
        additional_forward_args: Any = None,
        baselines: BaselineType = None,
        feature_mask: Tensor | tuple[Tensor, ...] | None = None,
        *,
        n_samples: int = 4000,
        grid_size: int = 7,
        keep_probability: float = 0.5,
        channels_last: bool | None = None,
        apply_softmax: bool = True,
        internal_batch_size: int | None = 64,
        seed: int = 0,
        show_progress: bool = False,
    ) -> Tensor | tuple[Tensor, ...]:
        r"""
        Args:
            inputs (Tensor or tuple[Tensor, ...]): batch first, of any rank: (N, F) rows,
                (N, C, L) sequences, (N, C, H, W) images, (N, C, D, H, W) volumes; a tuple gets
                its own masks per tensor (or shared groups with ``feature_mask``).
            target (int, tuple, Tensor, list or None, optional): the output index to explain,
                in any Captum form; None explains each example's predicted class. Default: None
            additional_forward_args (Any, optional): passed to ``forward_func`` after the
                inputs; batch-first tensors are repeated with the masked copies. Default: None
            baselines (scalar, sequence, Tensor or tuple, optional): what a masked-out position
                becomes: a scalar, one value per channel, or a tensor broadcastable to the
                input; a tuple gives one per input tensor. None is 0, the paper's x ⊙ M.
                Default: None
            feature_mask (Tensor or tuple[Tensor, ...], optional): Captum's feature groups:
                integer ids broadcastable to each input (batch axis 1, or N for one grouping per
                example); a group is kept or masked as a whole, with probability
                ``keep_probability``, instead of the grid. Default: None
            n_samples (int, optional): N, the number of random masks (forward passes per
                example). Default: 4000
            grid_size (int, optional): cells per spatial axis of the low-resolution masks
                (the paper's s = 7 for 224-px images). Default: 7
            keep_probability (float, optional): p, the probability that a cell (or group) is
                kept, in [1e-6, 1]. Default: 0.5
            channels_last (bool, optional): the inputs are (N, L, D) (or (N, H, W, C)): the
                masks span every axis but the first and last. None reads them channels first and
                warns about 3-D inputs, which may be either. Default: None
            apply_softmax (bool, optional): weight each mask by the target's softmax
                probability (the paper's f_c); set False when ``forward_func`` already returns
                probabilities or scores to be weighted as they are. Default: True
            internal_batch_size (int, optional): at most this many masked inputs (examples ×
                masks) per forward pass; None runs all of them at once. The result does not
                depend on it. Default: 64
            seed (int, optional): seed of the call's own generator: the masks and their shifts.
                The global RNG is never used nor changed. Default: 0
            show_progress (bool, optional): a progress bar over the forward passes.
                Default: False

        Returns:
            *Tensor* or *tuple[Tensor, ...]* of **attributions** with each input's exact shape:
            the estimated expected score of the target when the position is kept (in [0, 1] for
            probabilities, up to sampling noise), the same for every channel; a tensor for a
            tensor input, a tuple for a tuple.

        Examples::

            >>> rise = RISE(model)
            >>> saliency = rise.attribute(image, target=281, n_samples=2000, seed=1)
        """
        check_positive_int("n_samples", n_samples)
        check_positive_int("grid_size", grid_size)
        check_positive_int("internal_batch_size", internal_batch_size, allow_none=True)
        if not (
            isinstance(keep_probability, (int, float))
            and MIN_KEEP_PROBABILITY <= keep_probability <= 1
        ):
            raise ValueError(
                f"keep_probability must be in [{MIN_KEEP_PROBABILITY}, 1] (below it the "
                f"normalisation N·p underflows), got {keep_probability!r}"
            )
        layout = MaskLayout(channels_last)
        formatted = format_inputs(inputs)
        groups = resolve_groups(feature_mask, formatted, "RISE")
        call = self._prepare(inputs, formatted, target, additional_forward_args)
        layout.check(call.inputs, "RISE")
        images = [layout.to_channels_first(x) for x in call.work_inputs]
        references = [
            constant_reference(x, 0.0 if b is None else layout.baseline_to_channels_first(b, x))
            for x, b in zip(images, per_input_baselines(baselines, len(images)))
        ]
        generator = make_generator(seed, call.device)
        sampler: _GridSampler | _GroupSampler = (
            _GridSampler(images, n_samples, grid_size, keep_probability, generator)
            if groups is None
            else _GroupSampler(groups, layout, n_samples, keep_probability, generator, images[0])
        )
        num_examples = call.num_examples
        per_pass = n_samples if internal_batch_size is None else internal_batch_size
        chunk = max(1, per_pass // num_examples)
        first = sampler.masks(slice(0, 1), torch.zeros(1, dtype=torch.long, device=call.device))
        totals = [x.new_zeros(num_examples, *m.shape[2:]) for x, m in zip(images, first)]
        chunks = range(0, n_samples, chunk)
        bar = progress(desc="RISE", total=len(chunks)) if show_progress else None
        everyone = torch.arange(num_examples, device=call.device)
        try:
            with torch.no_grad():
                for start in chunks:
                    masks = sampler.masks(slice(start, min(start + chunk, n_samples)), everyone)
                    count = masks[0].shape[1]
                    # examples × masks copies, example-major: copy e·count + i is example e, mask i
                    perturbed = [
                        layout.to_caller(blend(x.unsqueeze(1), m, r.unsqueeze(1)).flatten(0, 1))
                        for x, m, r in zip(images, masks, references)
                    ]
                    args = map_batch(
                        call.additional_args,
                        num_examples,
                        functools.partial(torch.repeat_interleave, repeats=count, dim=0),
                    )
                    output = call.forward(perturbed, args)
                    scores = select_scores(
                        output, call.targets.repeat_interleave(count, dim=0), apply_softmax
                    ).view(num_examples, count)
                    for total, m in zip(totals, masks):  # Σ_i f_c(x ⊙ M_i) M_i, Eq. 6
                        weights = scores.view(*scores.shape, *[1] * (m.dim() - 2))
                        total += (weights * m).sum(dim=1)
                    if bar is not None:
                        bar.update()
        finally:
            if bar is not None:
                bar.close()
        attributions = [
            layout.to_caller((total / (n_samples * keep_probability)).expand_as(x))
            .to(caller.dtype)
            .contiguous()
            for total, x, caller in zip(totals, images, call.inputs)
        ]
        return call.result(attributions, None, return_history=False)


class _GridSampler:
    """RISE's random grid masks for every input tensor (Section 3.2), drawn once for the whole
    call (so a chunk of masks does not depend on the chunking) and built at full resolution
    chunk by chunk; every example sees the same masks."""

    def __init__(
        self,
        images: Sequence[Tensor],
        n_samples: int,
        grid_size: int,
        keep_probability: float,
        generator: torch.Generator,
    ) -> None:
        self.images, self.grid_size = images, grid_size
        self.cells: list[Tensor] = []
        self.shifts: list[Tensor] = []
        for x in images:
            sides = x.shape[2:]
            self.cells.append(
                _kept((n_samples, 1, *[grid_size] * len(sides)), keep_probability, generator, x)
            )
            cell_sizes = [math.ceil(side / grid_size) for side in sides]
            shift = torch.rand(
                (n_samples, len(sides)), generator=generator, device=x.device, dtype=torch.float64
            )
            self.shifts.append((shift * torch.tensor(cell_sizes, device=x.device)).long())

    def masks(self, samples: slice, examples: Tensor) -> list[Tensor]:
        """Per input, the masks ``samples`` for ``examples``: (1, k, 1, *spatial), shared by
        the examples."""
        return [
            self._upsampled(cells[samples], shifts[samples], x.shape[2:]).unsqueeze(0)
            for cells, shifts, x in zip(self.cells, self.shifts, self.images)
        ]

    def _upsampled(self, cells: Tensor, shifts: Tensor, sides: Sequence[int]) -> Tensor:
        """(k, 1, *sides): each grid upsampled to grid + 1 cells per axis and cropped at its
        shift (Section 3.2)."""
        cell_sizes = [math.ceil(side / self.grid_size) for side in sides]
        size = [(self.grid_size + 1) * c for c in cell_sizes]
        up = F.interpolate(cells, size=size, mode=_INTERPOLATION[len(sides)], align_corners=False)
        for axis, side in enumerate(sides):
            dim = 2 + axis
            offsets = shifts[:, axis].view(-1, *[1] * (up.dim() - 1))
            positions = torch.arange(side, device=up.device).view(
                *[1] * dim, side, *[1] * (up.dim() - dim - 1)
            )
            index = (offsets + positions).expand(*up.shape[:dim], side, *up.shape[dim + 1 :])
            up = up.gather(dim, index)
        return up


class _GroupSampler:
    """RISE on Captum's feature groups: each mask keeps every group with probability p, drawn
    once for the whole call; an example's groups may be its own."""

    def __init__(
        self,
        groups: FeatureGroups,
        layout: MaskLayout,
        n_samples: int,
        keep_probability: float,
        generator: torch.Generator,
        like: Tensor,
    ) -> None:
        self.groups, self.layout = groups, layout
        self.cells = _kept((n_samples, groups.count), keep_probability, generator, like)

    def masks(self, samples: slice, examples: Tensor) -> list[Tensor]:
        """Per input, the masks ``samples`` for ``examples``: (n, k, 1|C, *spatial)."""
        values = self.cells[samples]  # (k, G), the same for every example
        count = values.shape[0]
        rows = examples.repeat_interleave(count)  # example-major, like the copies
        expanded = self.groups.expand(values.repeat(len(examples), 1), rows)
        return [
            self.layout.to_channels_first(m).unflatten(0, (len(examples), count)) for m in expanded
        ]


def _kept(
    shape: Sequence[int], keep_probability: float, generator: torch.Generator, like: Tensor
) -> Tensor:
    """Cells kept with probability p: drawn in float32 whatever the input's dtype, so every
    dtype sees the same masks."""
    draw = torch.rand(tuple(shape), generator=generator, device=like.device)
    return (draw < keep_probability).to(like.dtype)


__all__ = ["RISE"]
