"""Amortised explanation: a network trained once that gives every class's mask in one forward
pass (Stalder et al. NeurIPS 2022; Phillips et al.).

``explainer`` is the Captum attribution, ``fitting`` its ``fit``, ``losses`` the training losses
as pure functions, ``training`` the loop's pieces, ``distributed`` the ``torchrun`` plumbing,
``persistence`` ``save`` / ``load`` and ``networks`` the explainer networks.
"""

from captum_masks.amortized.explainer import AmortizedExplainer
from captum_masks.amortized.losses import LossSettings
from captum_masks.amortized.networks import MaskNet, deeplab_explainer
from captum_masks.amortized.training import FitHistory

__all__ = ["AmortizedExplainer", "FitHistory", "LossSettings", "MaskNet", "deeplab_explainer"]
