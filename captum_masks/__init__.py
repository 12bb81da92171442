"""captum_masks: mask-based explanation methods as Captum attributions."""

from captum_masks._optimize import OptimizationHistory
from captum_masks.amortized import AmortizedExplainer, FitHistory
from captum_masks.amortized.networks import MaskNet, deeplab_explainer
from captum_masks.dataset_explanation import DatasetExplanations, explain_dataset
from captum_masks.extremal_perturbation import ExtremalPerturbation
from captum_masks.guided_feature_inversion import GuidedFeatureInversion
from captum_masks.layer import LayerMeaningfulPerturbation, LayerNeuroMask
from captum_masks.low_resolution import LowResolutionMask
from captum_masks.masks import ChannelCombinationMask, SigmoidMask, UpsampledMask
from captum_masks.smooth_max_mask import SmoothMaxMask
from captum_masks.meaningful_perturbation import MeaningfulPerturbation
from captum_masks.neuromask import NeuroMaskAttr
from captum_masks.rise import RISE
from captum_masks.perturbations import blend, constant_reference, gaussian_blur, noise_reference
from captum_masks.visualization import attribution_to_image, image_to_numpy

__version__ = "0.1.0"

__all__ = [
    "AmortizedExplainer",
    "ChannelCombinationMask",
    "DatasetExplanations",
    "ExtremalPerturbation",
    "FitHistory",
    "GuidedFeatureInversion",
    "LayerMeaningfulPerturbation",
    "LayerNeuroMask",
    "LowResolutionMask",
    "MaskNet",
    "MeaningfulPerturbation",
    "NeuroMaskAttr",
    "OptimizationHistory",
    "RISE",
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
