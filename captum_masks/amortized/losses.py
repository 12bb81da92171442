"""The training losses of the amortised explainer, as pure per-example functions.

Each loss maps the explainer's class logits S ``(N, C, *spatial)``, the inputs and the classes each
row is explained for to named per-example terms, each (N,); the training loss is their sum.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_masks._engine.checks import check_choice, check_non_negative
from captum_masks.perturbations import blend
from captum_masks.regularizers import area_bounds, total_variation

#: masked inputs (channels first, work dtype) -> (N, num_classes) classifier scores
Classifier = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class LossSettings:
    """Which loss trains the explainer and with which weights (the arguments of
    :meth:`~captum_masks.AmortizedExplainer.fit` of the same names)."""

    loss: str = "stalder"
    entropy_weight: float = 1.0
    area_weight: float = 1.0
    tv_weight: float | None = None
    area_bounds: tuple[float, float] = (0.05, 0.3)
    mask_area_weights: tuple[float, float] = (0.1, 0.3)
    l1_weight: float = 1e-3
    l2_weight: float = 1e-4

    def validate(self) -> None:
        check_choice("loss", self.loss, tuple(LOSSES))
        if self.tv_weight is not None:
            check_non_negative(tv_weight=self.tv_weight)
        check_non_negative(
            **{
                name: getattr(self, name)
                for name in (
                    "entropy_weight",
                    "area_weight",
                    "l1_weight",
                    "l2_weight",
                )
            }
        )
        bounds = self.area_bounds
        if (
            not isinstance(bounds, tuple)
            or len(bounds) != 2
            or not 0 <= bounds[0] <= bounds[1] <= 1
        ):
            raise ValueError(f"area_bounds must be (a, b) with 0 <= a <= b <= 1, got {bounds!r}")
        weights = self.mask_area_weights
        if (
            not isinstance(weights, tuple)
            or len(weights) != 2
            or not all(
                isinstance(w, numbers.Real) and not isinstance(w, bool) and w >= 0 for w in weights
            )
        ):
            raise ValueError(
                "mask_area_weights must be two non-negative numbers (for A(m) and A(n)), got "
                f"{weights!r}"
            )


def classification_loss(scores: Tensor, labels: Tensor, multilabel: bool) -> Tensor:
    """L_c per example: binary cross-entropy over classes (multi-label, Eq. 2) or
    cross-entropy (single-label)."""
    if multilabel:
        return F.binary_cross_entropy_with_logits(scores, labels, reduction="none").mean(1)
    return F.cross_entropy(scores, labels.argmax(dim=1), reduction="none")


def without_padding(mask: Tensor, padding: Tensor | None) -> Tensor:
    """``mask`` ``(N, K, *spatial)`` with 0 where ``padding`` ``(N, 1, *spatial)`` is True:
    padding is no evidence and gets no attribution."""
    return mask if padding is None else mask.masked_fill(padding, 0.0)


def masked_max(logits: Tensor, selector: Tensor) -> Tensor:
    """max over the selected classes, ``(N, 1, *spatial)``; -inf-free: no selection gives -1e4."""
    filled = logits.masked_fill(~selector.expand_as(logits), torch.finfo(logits.dtype).min)
    return filled.amax(dim=1, keepdim=True).clamp_min(-1e4)


@dataclass(frozen=True)
class ExplainedBatch:
    """What a loss needs besides the explainer's logits: the inputs, the classes each row is
    explained for, and the frozen classifier.

    Attributes:
        x (Tensor): ``(N, C, *spatial)`` inputs, channels first, in the logits' dtype.
        is_target (Tensor): (N, num_classes) bool, the classes Y of each row.
        is_present (Tensor): (N, num_classes) bool, every class of each row's input: Y and,
            when each row explains one class of its input, the input's other classes.
        classify (callable): the frozen classifier on masked inputs.
        baselines (float): the value masked-out input takes.
        multilabel (bool): binary cross-entropy instead of cross-entropy.
        padding (Tensor or None): ``(N, 1, *spatial)`` bool, True at padding tokens: their mask
            is 0 and masking leaves them as they are.
        tokens (bool): the positions are tokens (a token layer's output), not a grid.
    """

    x: Tensor
    is_target: Tensor
    is_present: Tensor
    classify: Classifier
    baselines: float
    multilabel: bool
    padding: Tensor | None = None
    tokens: bool = False

    def target_mask(self, logits: Tensor) -> Tensor:
        """m = σ(max_{c∈Y} S_c), ``(N, 1, *spatial)``."""
        selector = self.is_target.view(*self.is_target.shape, *([1] * (self.x.dim() - 2)))
        return self.without_padding(torch.sigmoid(masked_max(logits, selector)))

    def without_padding(self, mask: Tensor) -> Tensor:
        """``mask`` with 0 at padding."""
        return without_padding(mask, self.padding)

    def sizes(self) -> Tensor:
        """(N,) the number of positions of each row that are not padding."""
        if self.padding is None:
            return torch.full((self.x.shape[0],), self.x[0, 0].numel(), device=self.x.device)
        return (~self.padding).flatten(1).sum(1).clamp_min(1)

    def area(self, mask: Tensor) -> Tensor:
        """A(mask), (N,): its mean over the positions that are not padding."""
        return mask.flatten(1).sum(1) / self.sizes().to(mask.dtype)

    def masked(self, mask: Tensor) -> Tensor:
        """The inputs with ``mask`` applied (m ⊙ x + (1 − m) ⊙ baseline); padding as it is."""
        masked = blend(self.x, mask, self.baselines)
        return masked if self.padding is None else torch.where(self.padding, self.x, masked)


def stalder_terms(
    batch: ExplainedBatch, logits: Tensor, settings: LossSettings
) -> dict[str, Tensor]:
    r"""Stalder et al.'s loss (Eq. 1–8), with m = σ(max_{c∈Y} S_c) and n = σ(max_{c∉P} S_c),
    P the classes present in the input (Y itself in the paper, where a row is explained for all
    of them):

    .. math::
        L = L_c(f(m \odot x), Y)
            + \lambda_e \tfrac{1}{C}\textstyle\sum_c \tilde p_c \log \tilde p_c
            + \lambda_a \big(w_m A(m) + w_n A(n) + \overline{B(\sigma(S_c))}_{c \in Y}\big)
            + \lambda_{tv} \big(TV(m) + TV(n)\big)

    with (w_m, w_n) = ``settings.mask_area_weights``.

    Args:
        batch (ExplainedBatch): the inputs, their classes and the classifier.
        logits (Tensor): ``(N, num_classes, *spatial)`` class logits S.
        settings (LossSettings): the weights.

    Returns:
        dict of (N,) terms: classification, entropy, area, tv.
    """
    x, is_target = batch.x, batch.is_target
    target_mask = batch.target_mask(logits)  # m
    # a class of the input outside Y is left out of n: its own rows train its mask to cover its
    # object, which n's area would shrink here; L_c already keeps it out of m ⊙ x
    absent = ~batch.is_present
    non_target = absent.view(*is_target.shape, *([1] * (x.dim() - 2)))
    has_non_target = absent.any(dim=1).view(-1, *[1] * (x.dim() - 1))
    non_target_mask = batch.without_padding(
        torch.sigmoid(masked_max(logits, non_target)) * has_non_target
    )  # n
    labels = is_target.to(x.dtype)
    kept = batch.masked(target_mask)
    complement = batch.masked(1.0 - target_mask)
    kept_scores, removed_scores = batch.classify(torch.cat([kept, complement])).chunk(2)
    removed = removed_scores.log_softmax(dim=1)
    negative_entropy = (removed.exp() * removed).mean(dim=1)  # Eq. 3
    lower, upper = settings.area_bounds
    class_masks = batch.without_padding(torch.sigmoid(logits)).flatten(0, 1)
    sizes = batch.sizes().repeat_interleave(logits.shape[1])
    bounds = area_bounds(class_masks, lower, upper, sizes).view(logits.shape[:2])
    bounds = (bounds * labels).sum(1) / labels.sum(1).clamp_min(1)  # Eq. 6, last term
    target_area_weight, non_target_area_weight = settings.mask_area_weights
    # tokens are no grid of pixels: neighbouring tokens need not matter alike
    tv_weight = (
        settings.tv_weight if settings.tv_weight is not None else 0.0 if batch.tokens else 1.0
    )
    area = (
        target_area_weight * batch.area(target_mask)
        + non_target_area_weight * batch.area(non_target_mask)
        + bounds
    )
    smoothness = total_variation(target_mask) + total_variation(non_target_mask)
    return {  # Eq. 1
        "classification": classification_loss(kept_scores, labels, batch.multilabel),
        "entropy": settings.entropy_weight * negative_entropy,
        "area": settings.area_weight * area,
        "tv": tv_weight * smoothness / math.prod(x.shape[2:]),  # Eq. 7–8
    }


def phillips_terms(
    batch: ExplainedBatch, logits: Tensor, settings: LossSettings
) -> dict[str, Tensor]:
    r"""Phillips et al.'s loss: L_c(f(m ⊙ x), Y) + λ₁ mean(m) + λ₂ mean(m²), with m as in
    :func:`stalder_terms`; arguments and return as there (terms classification, l1, l2)."""
    target_mask = batch.target_mask(logits)
    kept_scores = batch.classify(batch.masked(target_mask))
    labels = batch.is_target.to(batch.x.dtype)
    return {
        "classification": classification_loss(kept_scores, labels, batch.multilabel),
        "l1": settings.l1_weight * batch.area(target_mask),
        "l2": settings.l2_weight * batch.area(target_mask.square()),
    }


LOSSES = {"stalder": stalder_terms, "phillips": phillips_terms}

__all__ = [
    "LOSSES",
    "Classifier",
    "ExplainedBatch",
    "LossSettings",
    "classification_loss",
    "masked_max",
    "phillips_terms",
    "stalder_terms",
    "without_padding",
]
