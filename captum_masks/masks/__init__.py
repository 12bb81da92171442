"""Mask parametrisations: how the optimised parameters θ become a mask m(θ) at each input's
shape, all behind one interface (:class:`Mask`).

A method takes its parametrisation as ``mask=``: :class:`UpsampledMask` (Meaningful
Perturbation), :class:`SigmoidMask` (NeuroMask), :class:`SmoothMaxMask` (Extremal
Perturbation); :class:`ChannelCombinationMask` is built by Guided Feature Inversion from its
layer's features. With Captum's ``feature_mask`` the same parametrisation runs on the groups
(:class:`GroupedMask`). :class:`LowResolutionMask` is a final mask in its compact form.
"""

from captum_masks.masks.base import CellMask, Mask
from captum_masks.masks.channel_combination import ChannelCombinationMask
from captum_masks.masks.groups import FeatureGroups, GroupedMask
from captum_masks.masks.low_resolution import LowResolutionMask
from captum_masks.masks.sigmoid import SigmoidMask
from captum_masks.masks.smooth_max import SmoothMaxMask
from captum_masks.masks.upsampled import UpsampledMask

__all__ = [
    "CellMask",
    "ChannelCombinationMask",
    "FeatureGroups",
    "GroupedMask",
    "LowResolutionMask",
    "Mask",
    "SigmoidMask",
    "SmoothMaxMask",
    "UpsampledMask",
]
