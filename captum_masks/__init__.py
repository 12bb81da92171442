"""captum_masks: mask-based explanation methods as Captum attributions.

The methods (``MeaningfulPerturbation``, ``NeuroMaskAttr``, ``ExtremalPerturbation``,
``GuidedFeatureInversion``, ``RISE``, ``AmortizedExplainer`` and the Layer variants) follow
Captum's ``attribute(inputs, target=..., ...)``; the optimising ones take their loop settings as
one :class:`Optimization`, their mask as a parametrisation from :mod:`captum_masks.masks` and
their perturbation from :mod:`captum_masks.perturbations`.
"""

from captum_masks.amortized import AmortizedExplainer, FitHistory
from captum_masks.amortized.networks import MaskNet, deeplab_explainer
from captum_masks.datasets import DatasetExplanations, explain_dataset
from captum_masks.extremal_perturbation import ExtremalPerturbation
from captum_masks.guided_feature_inversion import GuidedFeatureInversion, InversionStage
from captum_masks.layer import LayerMeaningfulPerturbation, LayerNeuroMask
from captum_masks.masks import (
    ChannelCombinationMask,
    LowResolutionMask,
    Mask,
    SigmoidMask,
    SmoothMaxMask,
    UpsampledMask,
)
from captum_masks.meaningful_perturbation import MeaningfulPerturbation
from captum_masks.neuromask import NeuroMaskAttr
from captum_masks.optimization import Optimization, OptimizationHistory
from captum_masks.perturbations import (
    Blur,
    BlurPyramid,
    Constant,
    Noise,
    Perturbation,
    blend,
    constant_reference,
    gaussian_blur,
    noise_reference,
)
from captum_masks.regularizers import Laplacian
from captum_masks.rise import RISE
from captum_masks.visualization import attribution_to_image, image_to_numpy

__version__ = "0.2.0"

__all__ = [
    "RISE",
    "AmortizedExplainer",
    "Blur",
    "BlurPyramid",
    "ChannelCombinationMask",
    "Constant",
    "DatasetExplanations",
    "ExtremalPerturbation",
    "FitHistory",
    "GuidedFeatureInversion",
    "InversionStage",
    "Laplacian",
    "LayerMeaningfulPerturbation",
    "LayerNeuroMask",
    "LowResolutionMask",
    "Mask",
    "MaskNet",
    "MeaningfulPerturbation",
    "NeuroMaskAttr",
    "Noise",
    "Optimization",
    "OptimizationHistory",
    "Perturbation",
    "SigmoidMask",
    "SmoothMaxMask",
    "UpsampledMask",
    "attribution_to_image",
    "blend",
    "constant_reference",
    "deeplab_explainer",
    "explain_dataset",
    "gaussian_blur",
    "image_to_numpy",
    "noise_reference",
]
