"""Whole datasets: :func:`explain_dataset` explains one in batches, on one process or over
``torchrun``'s, resumably; :class:`DatasetExplanations` reads what it wrote."""

from captum_masks.datasets.explain import explain_dataset
from captum_masks.datasets.storage import DatasetExplanations

__all__ = ["DatasetExplanations", "explain_dataset"]
