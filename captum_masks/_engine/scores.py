"""The model's score for the explained class as the objectives read it: its probability, its
log-odds against the other classes, and the best other class's score.

The log-odds d = log f_c − log Σ_{j ≠ c} f_j carries both games: −log f_c = softplus(−d) (keep
the score) and −log(1 − f_c) = softplus(d) (destroy it), each exact where f_c rounds to 0 or 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Extremal Perturbation's rewards: the target's score, or its margin over the best other class
REWARDS = ("simple", "contrastive")


def _target_index(output: Tensor, targets: Tensor) -> tuple[Tensor, ...]:
    """The index of each example's target in ``output``: (rows, class, trailing axes...)."""
    rows = torch.arange(output.shape[0], device=output.device)
    return (rows,) + tuple(targets.unbind(dim=1))


def select_scores(output: Tensor, targets: Tensor, apply_softmax: bool) -> Tensor:
    """Per-example score of each example's target, as a probability if ``apply_softmax``."""
    if apply_softmax:
        output = torch.softmax(output, dim=1)
    return output[_target_index(output, targets)]


def _class_scores(output: Tensor, targets: Tensor) -> Tensor:
    """(N, C): each example's scores along the class axis, at its target's trailing position."""
    index = _target_index(output, targets)
    return output[(index[0], slice(None)) + index[2:]]


def _others(scores: Tensor, targets: Tensor) -> Tensor:
    """(N, C) class scores with each example's target at −inf."""
    rows = torch.arange(scores.shape[0], device=scores.device)
    return scores.index_put((rows, targets[:, 0]), scores.new_tensor(-torch.inf))


def best_other_score(output: Tensor, targets: Tensor) -> Tensor:
    """Per-example highest score of a class other than the target (at its trailing position)."""
    return _others(_class_scores(output, targets), targets).amax(dim=1)


def target_log_odds(output: Tensor, targets: Tensor, apply_softmax: bool) -> Tensor:
    """Per-example log-odds of the target against the other classes, log f_c − log(1 − f_c):
    from logits (``apply_softmax``) as the target's logit minus the log-sum-exp of the others'
    (exact where f_c rounds to 1), from given probabilities (floored at the dtype's resolution)
    directly, which also holds for independent (sigmoid) scores."""
    scores = _class_scores(output, targets)
    rows = torch.arange(scores.shape[0], device=scores.device)
    classes = targets[:, 0]
    if not apply_softmax:
        resolution = torch.finfo(scores.dtype)
        probability = scores[rows, classes].clamp(resolution.tiny, 1.0 - resolution.eps)
        return probability.log() - torch.log1p(-probability)
    return scores[rows, classes] - _others(scores, targets).logsumexp(dim=1)


__all__ = [
    "REWARDS",
    "best_other_score",
    "select_scores",
    "target_log_odds",
]
