"""The model-randomisation sanity check (Adebayo et al.)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from captum_masks._engine.model_state import seeded_global_rng
from captum_masks.metrics.maps import to_heatmap


def spearman_rank_correlation(first: Tensor, second: Tensor) -> Tensor:
    """Spearman's ρ between matching rows of two (N, ...) tensors, ties averaged.

    Uses ``scipy.stats.spearmanr`` (``pip install 'captum_masks[metrics]'``).
    """
    try:
        from scipy.stats import spearmanr
    except ImportError as error:
        raise ImportError(
            "spearman_rank_correlation needs scipy: pip install 'captum_masks[metrics]'"
        ) from error

    a = first.detach().flatten(1).double().cpu().numpy()
    b = second.detach().flatten(1).double().cpu().numpy()
    values = [spearmanr(x, y).statistic for x, y in zip(a, b)]
    return torch.tensor(values, dtype=first.dtype, device=first.device)


def model_randomization_check(
    explain: Callable[[nn.Module], Tensor],
    model: nn.Module,
    layers: Sequence[str],
    absolute: bool = True,
    seed: int = 0,
) -> Tensor:
    """Adebayo et al.'s model-randomisation sanity check (NeurIPS 2018).

    Explains with ``model``, then with a copy whose named ``layers`` (the top ones, typically)
    are re-initialised, and returns the Spearman rank correlation of the two maps per example.
    A method that really depends on the learned weights gives a low correlation. ``model`` itself
    is never modified (the copy is made with ``copy.deepcopy``; the global RNG is restored).

    Args:
        explain (Callable): ``model -> attributions`` for a fixed batch.
        model (nn.Module): the trained model.
        layers (sequence of str): names from ``model.named_modules()`` to re-initialise with their
            own ``reset_parameters``.
        absolute (bool): compare absolute maps (Adebayo et al.'s default for signed methods).
        seed (int): seed of the re-initialisation.

    Returns:
        Tensor (N,) of rank correlations.

    Examples::

        >>> explain = lambda m: Saliency(m).attribute(x, target=3)
        >>> model_randomization_check(explain, model, ["fc"])
    """
    modules = dict(model.named_modules())
    missing = [name for name in layers if name not in modules]
    if missing:
        raise ValueError(f"layers {missing} are not modules of the model")
    randomized = copy.deepcopy(model)
    randomized_modules = dict(randomized.named_modules())
    cuda = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    # reset_parameters draws from the global RNG: seed it inside a fork so the caller's is kept
    with seeded_global_rng(seed, cuda):
        for name in layers:
            for module in randomized_modules[name].modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
    original = to_heatmap(explain(model), absolute=absolute)
    shuffled = to_heatmap(explain(randomized), absolute=absolute)
    return spearman_rank_correlation(original, shuffled)


__all__ = [
    "model_randomization_check",
    "spearman_rank_correlation",
]
