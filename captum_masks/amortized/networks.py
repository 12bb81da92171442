"""Networks that map an input to one mask logit per class at the input's resolution.

:class:`MaskNet` is the compact default of :class:`~captum_masks.AmortizedExplainer`: small enough
to train on a CPU in minutes, for images (N, C, H, W), sequences (N, C, L) and volumes
(N, C, D, H, W) alike.
:func:`deeplab_explainer` is Stalder et al.'s choice. Any ``nn.Module`` returning
``(N, num_classes, *spatial)`` logits works too.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_masks.masks.interpolation import upsample_linearly

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_POOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}


class MaskNet(nn.Module):
    r"""A small U-Net: an encoder that halves the resolution ``depth`` times, a decoder that
    climbs back with skip connections, and a 1 × 1 convolution giving one logit per class.

    Each convolution is followed by group normalisation, which keeps the scale of the logits from
    growing layer upon layer while it trains (without it, the logits jumped into the sigmoid's
    flat tails within a few steps and training stalled). Group normalisation works on each example
    alone, unlike batch normalisation: results do not depend on the batch, and data-parallel
    training on several processes gives the same gradients as one process.

    With ``feature_channels``, the network also takes features of the same inputs at a coarser
    resolution (a classifier's feature map, Phillips et al.'s design): a 1 × 1 convolution
    projects them to ``width`` channels at their own resolution, and the projection is resized
    to the input's and concatenated to it. Projecting first is what a 1 × 1 convolution of the
    resized features would compute (linear resizing and a per-position linear map commute), at a
    fraction of the cost: the wide feature map is never resized to the input's resolution.

    Args:
        in_channels (int): channels of the input.
        num_classes (int): output channels, one mask logit per class.
        spatial_dims (int): 2 for images, 1 for sequences, 3 for volumes.
        width (int): channels of the first level; each level down doubles them.
        depth (int): number of halvings.
        initial_logit (float): the output bias at initialisation.
        feature_channels (int): channels of the features passed with the input; 0 for none.

    Examples::

        >>> net = MaskNet(in_channels=3, num_classes=4)
        >>> net(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 4, 64, 64])
        >>> fed = MaskNet(in_channels=3, num_classes=4, feature_channels=96)
        >>> fed(torch.rand(2, 3, 64, 64), torch.rand(2, 96, 8, 8)).shape
        torch.Size([2, 4, 64, 64])
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        spatial_dims: int = 2,
        width: int = 16,
        depth: int = 2,
        initial_logit: float = 0.0,
        feature_channels: int = 0,
    ) -> None:
        super().__init__()
        if spatial_dims not in _CONV:
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
        conv = _CONV[spatial_dims]
        self.projection = conv(feature_channels, width, 1) if feature_channels else None

        def block(inputs: int, outputs: int) -> nn.Sequential:
            groups = math.gcd(8, outputs)  # up to 8 groups that divide any width
            return nn.Sequential(
                conv(inputs, outputs, 3, padding=1),
                nn.GroupNorm(groups, outputs),
                nn.ReLU(),
                conv(outputs, outputs, 3, padding=1),
                nn.GroupNorm(groups, outputs),
                nn.ReLU(),
            )

        widths = [width * 2**level for level in range(depth + 1)]
        first_channels = in_channels + (width if feature_channels else 0)
        self.down = nn.ModuleList(
            [block(first_channels, widths[0])]
            + [block(widths[level], widths[level + 1]) for level in range(depth)]
        )
        self.pool = _POOL[spatial_dims](2, ceil_mode=True)
        self.up = nn.ModuleList(
            [block(widths[level + 1] + widths[level], widths[level]) for level in range(depth)]
        )
        self.head = conv(widths[0], num_classes, 1)
        # masks start at σ(0) = 0.5, keeping every input half visible: the classification term
        # then starts near its optimum and has a gradient to hold on to the evidence while the
        # area terms shrink the masks. Starting small (σ(−3)) stalls on the synthetic suite with
        # the masks off the objects, where the dimmed image gives the classifier no signal.
        assert self.head.bias is not None
        nn.init.constant_(self.head.bias, initial_logit)
        # and every class starts alike: a random head can start one class's mask deep in the
        # flat tail on the very pixels that hold its evidence
        nn.init.zeros_(self.head.weight)

    def features(self, x: Tensor, classifier_features: Tensor | None = None) -> Tensor:
        """The decoder's last features (N, width, \\*spatial), before the per-class head."""
        if (classifier_features is None) != (self.projection is None):
            raise ValueError(
                "this MaskNet was built "
                + ("with" if self.projection is not None else "without")
                + " feature_channels: pass classifier_features exactly when it has them"
            )
        if classifier_features is not None and self.projection is not None:
            projected = upsample_linearly(self.projection(classifier_features), x.shape[2:])
            x = torch.cat([x, projected], dim=1)
        skips = []
        for level, block in enumerate(self.down):
            x = block(x if level == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for block in reversed(self.up):
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[2:], mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        return x

    def forward(self, x: Tensor, classifier_features: Tensor | None = None) -> Tensor:
        return self.head(self.features(x, classifier_features))

    def class_logits(
        self, x: Tensor, classes: Tensor, classifier_features: Tensor | None = None
    ) -> Tensor:
        """The logits of one class per example, (N, 1, \\*spatial), without computing the others:
        the head is a 1 × 1 convolution, so its row for each example's class suffices (with a
        thousand classes the full head would cost more than the rest of the network).

        Args:
            x (Tensor): the explainer's input (N, in_channels, \\*spatial).
            classes (Tensor): (N,) class indices.
            classifier_features (Tensor, optional): (N, feature_channels, \\*spatial') when
                the network was built with ``feature_channels``.

        Returns:
            Tensor (N, 1, \\*spatial), equal to
            ``self(x, classifier_features)[range(N), classes].unsqueeze(1)``.
        """
        features = self.features(x, classifier_features)
        weight = self.head.weight.flatten(1)[classes]  # (N, width)
        logits = torch.einsum("nc...,nc->n...", features, weight)
        bias = self.head.bias
        assert bias is not None
        return (logits + bias[classes].view(-1, *[1] * (logits.dim() - 1))).unsqueeze(1)


class _SegmentationOutput(nn.Module):
    """torchvision's segmentation models return a dict; keep the ``"out"`` logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)["out"]


def deeplab_explainer(num_classes: int) -> nn.Module:
    """Stalder et al.'s explainer: torchvision's DeepLabV3-ResNet50 with one output channel per
    class, built without downloading weights (``weights=None, weights_backbone=None``).

    Args:
        num_classes (int): output channels.

    Returns:
        ``nn.Module`` mapping (N, 3, H, W) to (N, num_classes, H, W) logits.

    Examples::

        >>> explainer = AmortizedExplainer(model, 20, explainer=deeplab_explainer(20))
    """
    from torchvision.models.segmentation import deeplabv3_resnet50

    model = deeplabv3_resnet50(
        weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False
    )
    return _SegmentationOutput(model)


def checked_logits(
    explainer: nn.Module, explainer_inputs: tuple[Tensor, ...], x: Tensor, num_classes: int
) -> Tensor:
    """The explainer's logits for ``explainer(*explainer_inputs)``, checked to be
    ``(N, num_classes, *spatial)`` for inputs ``x``."""
    logits = explainer(*explainer_inputs)
    expected = (x.shape[0], num_classes, *x.shape[2:])
    if not isinstance(logits, Tensor) or tuple(logits.shape) != expected:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(
            f"the explainer must return (N, num_classes, *spatial) = {expected} mask logits, "
            f"got {got}"
        )
    return logits


__all__ = [
    "MaskNet",
    "checked_logits",
    "deeplab_explainer",
]
