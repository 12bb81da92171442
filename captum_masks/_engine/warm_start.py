"""Warm starts: a cheap map of where the evidence is, put into a mask's own cells.

``Optimization.start`` is one of: None (the method's own start), ``"gradcam"`` (Grad-CAM
at the model's last feature map: one forward and one backward pass), ``"auto"`` (Grad-CAM where
the call can take it, the method's own start otherwise), a fitted explainer with an
``attribute(inputs, target=...)`` method (an :class:`~captum_masks.AmortizedExplainer`), or a
tensor of importance (another method's attribution, with the input's shape or without its
channel axis). Each becomes an evidence map in [0, 1] per example, at the input's resolution,
which :func:`warm_started` averages over each cell of the mask and hands to
:meth:`~captum_masks.masks.base.CellMask.starting_at` as kept (preservation) or deleted
(deletion) values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from captum_masks._engine.checks import map_batch, run_forward
from captum_masks._engine.hooks import (
    last_feature_map,
    layer_gradient,
    recording,
    single_outputs,
)
from captum_masks._engine.layout import MaskLayout
from captum_masks._engine.model_state import in_training_mode, modules_of
from captum_masks._engine.model_structure import patch_size_of
from captum_masks._engine.scores import select_scores
from captum_masks.masks.base import CellMask
from captum_masks.masks.interpolation import upsample_linearly

if TYPE_CHECKING:  # the call module builds on this one
    from captum_masks._engine.call import PreparedCall


def warm_started(
    masks: Any, start: Any, call: PreparedCall, layout: MaskLayout, keeps: bool
) -> CellMask | None:
    """``masks`` starting where ``start`` says the evidence is: its cells take the evidence
    map's mean over each cell (``keeps``: the mask keeps evidence) or one minus it (the mask
    deletes evidence where it is 0). None when ``start`` is ``"auto"`` and the call has no
    Grad-CAM (rows, several inputs, feature groups, channels-last positions such as tokens, a
    model without a feature map over the input's positions, a vision transformer, whose only
    such map is its patch embedding, before any attention, a model in training mode, whose
    batch norm makes one example's map depend on the batch): the method's own start applies.

    Raises:
        ValueError: for a start the call cannot take (several inputs, feature groups, a map of
            another shape, a model without a feature map for ``"gradcam"``).
    """
    automatic = is_automatic(start)
    on_grid = isinstance(masks, CellMask) and len(call.inputs) == 1
    if automatic and (
        not on_grid
        or layout.channels_last
        or patch_size_of(call.forward_func) is not None
        or in_training_mode(modules_of(call.forward_func))
    ):
        return None
    if not on_grid:
        raise ValueError(
            "start needs one input tensor with positions (a sequence, image or volume) "
            "masked on a grid: it is not taken for rows (N, F), a tuple of inputs or "
            "feature_mask"
        )
    evidence = evidence_map(start, call, layout)
    if evidence is None:
        return None
    image = layout.to_channels_first(call.work_inputs[0])
    values = evidence if keeps else 1.0 - evidence
    return masks.starting_at(_cell_means(values, masks.cell_shape(image.shape[2:])))


def _cell_means(values: Tensor, cells: list[int]) -> Tensor:
    """(N, 1, \\*cells): the mean of ``values`` (N, 1, \\*spatial) over each cell's pixels."""
    return F.interpolate(values, size=cells, mode="area")  # adaptive average pooling


def is_automatic(start: Any) -> bool:
    """Whether ``start`` is ``"auto"``: each method's best start that the call can take."""
    return isinstance(start, str) and start == "auto"


def evidence_map(start: Any, call: PreparedCall, layout: MaskLayout) -> Tensor | None:
    """(N, 1, \\*spatial) in [0, 1], in the work dtype: each example's evidence map scaled by
    its maximum (a map with no positive value is 0.5 everywhere: it says nothing); None for
    ``"auto"`` on a model without a feature map over the input's positions."""
    image = layout.to_channels_first(call.work_inputs[0])
    if isinstance(start, str):  # "gradcam" or "auto" (names are checked with the settings)
        layer = feature_layer(call, layout)
        if layer is None and is_automatic(start):
            return None
        importance = grad_cam(layer, call, layout)
    elif isinstance(start, Tensor):
        importance = _given_map(start, image, layout)
    else:  # a fitted explainer
        explained = start.attribute(call.inputs[0], target=call.targets[:, 0])
        importance = _given_map(explained, image, layout)
    return _scaled_by_peak(importance)


def _scaled_by_peak(importance: Tensor) -> Tensor:
    """Each example's positive part divided by its maximum (0.5 where it has none)."""
    positive = importance.clamp_min(0)
    peak = positive.flatten(1).amax(dim=1).view(-1, *[1] * (positive.dim() - 1))
    return torch.where(peak > 0, positive / peak.clamp_min(torch.finfo(peak.dtype).tiny), 0.5)


def _given_map(importance: Tensor, image: Tensor, layout: MaskLayout) -> Tensor:
    """A caller's map as (N, 1, \\*spatial) channels first: the input's own shape (its channels
    summed) or the input's shape without the channel axis."""
    importance = importance.detach().to(device=image.device, dtype=image.dtype)
    caller_shape = layout.to_caller(image).shape
    if importance.shape == caller_shape:
        return layout.to_channels_first(importance).sum(dim=1, keepdim=True)
    if importance.shape == (image.shape[0], *image.shape[2:]):
        return importance.unsqueeze(1)
    raise ValueError(
        f"a start map must have the input's shape {tuple(caller_shape)} or its shape without "
        f"the channel axis {(image.shape[0], *image.shape[2:])}; got {tuple(importance.shape)}"
    )


def feature_layer(call: PreparedCall, layout: MaskLayout) -> nn.Module | None:
    """The model's last feature map over the input's positions (the last module whose output
    is (N, C, \\*spatial)), found on one example's forward pass; None for a channels-last input
    or a forward function that is no module."""
    models = modules_of(call.forward_func)
    if not models or layout.channels_last:
        return None
    spatial = layout.to_channels_first(call.inputs[0]).shape[2:]
    return last_feature_map(
        models[0],
        lambda: run_forward(
            call.forward_func,
            tuple(x[:1] for x in call.inputs),
            map_batch(call.additional_args, call.num_examples, lambda arg: arg[:1]),
        ),
        spatial,
        max_channels=torch.iinfo(torch.int64).max,
    )


def grad_cam(layer: nn.Module | None, call: PreparedCall, layout: MaskLayout) -> Tensor:
    """Grad-CAM of each example's target at ``layer`` (the model's last feature map, see
    :func:`feature_layer`), upsampled to the input: one forward and one backward pass per
    example, with no parameter's ``.grad`` touched."""
    if layer is None:
        raise ValueError(
            "start='gradcam' needs a model with a feature map over the input's positions (a "
            "module whose output is (N, C, *spatial)); pass a map or an explainer instead"
        )
    image = layout.to_channels_first(call.work_inputs[0])
    # one example at a time: a batched pass rounds differently from one example's, and the few
    # steps after a start near the answer can magnify that; a batch starts where its examples
    # alone would
    maps = [_one_grad_cam(layer, call, row) for row in range(call.num_examples)]
    return upsample_linearly(torch.cat(maps).to(image.dtype), image.shape[2:])


def _one_grad_cam(layer: nn.Module, call: PreparedCall, row: int) -> Tensor:
    """(1, 1, \\*feature_map) Grad-CAM of example ``row`` (its first target) at ``layer``."""
    rows = slice(row, row + 1)

    def forward() -> Tensor:
        return run_forward(
            call.forward_func,
            tuple(x[rows] for x in call.inputs),
            map_batch(call.additional_args, call.num_examples, lambda arg: arg[rows]),
        )

    with recording([layer]) as recorded:
        gradient = layer_gradient(
            forward,
            layer,
            lambda output: select_scores(output, call.targets[rows], apply_softmax=False),
        )
    (features,) = single_outputs(recorded, [layer])
    features = features.detach().to(call.work_dtype)
    weights = gradient.to(call.work_dtype).mean(dim=tuple(range(2, gradient.dim())), keepdim=True)
    return torch.relu((weights * features).sum(dim=1, keepdim=True))


__all__ = ["evidence_map", "feature_layer", "grad_cam", "is_automatic", "warm_started"]
