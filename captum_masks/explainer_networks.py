"""Networks that map an input to one mask logit per class at the input's resolution.

:class:`MaskNet` is the compact default of :class:`~captum_masks.AmortizedExplainer`: small enough
to train on a CPU in minutes, for images (N, C, H, W) and sequences (N, C, L) alike.
:func:`deeplab_explainer` is Stalder et al.'s choice. Any ``nn.Module`` returning
(N, num_classes, *spatial) logits works too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_CONV = {1: nn.Conv1d, 2: nn.Conv2d}
_POOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d}


class MaskNet(nn.Module):
    r"""A small U-Net: an encoder that halves the resolution ``depth`` times, a decoder that
    climbs back with skip connections, and a 1 × 1 convolution giving one logit per class.

    It has no batch normalisation, so every example is processed on its own: results do not
    depend on the batch, and data-parallel training on several processes gives the same gradients
    as one process.

    Args:
        in_channels (int): channels of the input (plus those of any features fed with it).
        num_classes (int): output channels, one mask logit per class.
        spatial_dims (int): 2 for images, 1 for sequences.
        width (int): channels of the first level; each level down doubles them.
        depth (int): number of halvings.
        initial_logit (float): the output bias at initialisation.

    Examples::

        >>> net = MaskNet(in_channels=3, num_classes=4)
        >>> net(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 4, 64, 64])
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        spatial_dims: int = 2,
        width: int = 16,
        depth: int = 2,
        initial_logit: float = -3.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in _CONV:
            raise ValueError(f"spatial_dims must be 1 or 2, got {spatial_dims!r}")
        conv = _CONV[spatial_dims]

        def block(inputs: int, outputs: int) -> nn.Sequential:
            return nn.Sequential(
                conv(inputs, outputs, 3, padding=1),
                nn.ReLU(),
                conv(outputs, outputs, 3, padding=1),
                nn.ReLU(),
            )

        widths = [width * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList(
            [block(in_channels, widths[0])]
            + [block(widths[level], widths[level + 1]) for level in range(depth)]
        )
        self.pool = _POOL[spatial_dims](2, ceil_mode=True)
        self.up = nn.ModuleList(
            [block(widths[level + 1] + widths[level], widths[level]) for level in range(depth)]
        )
        self.head = conv(widths[0], num_classes, 1)
        # masks start near σ(−3) ≈ 0.05 (Stalder et al.'s least area) rather than 0.5: from 0.5
        # the area terms dominate the first steps and drive every logit into the sigmoid's flat
        # tail, where no gradient can bring a mask back
        nn.init.constant_(self.head.bias, initial_logit)
        # and every class starts alike: a random head can start one class's mask deep in the
        # flat tail on the very pixels that hold its evidence
        nn.init.zeros_(self.head.weight)

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for level, block in enumerate(self.down):
            x = block(x if level == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for block in reversed(self.up):
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[2:], mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)


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


__all__ = ["MaskNet", "deeplab_explainer"]
