"""``python -m captum_masks speed``: how much an optimisation step costs beyond the model itself.

The ratio is (seconds per mask-optimisation iteration) ÷ (seconds of one bare forward pass plus a
backward pass to the input, at the same batch size), both measured in the same run. The
per-iteration time is the slope between a short and a long run, so one-off work (the clean forward
pass, building the blurred reference) is not counted in it; seconds per image at default settings
are reported separately and include everything.
"""

from __future__ import annotations

import inspect
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from captum_masks import zoo
from captum_masks.meaningful_perturbation import MeaningfulPerturbation
from captum_masks.neuromask import NeuroMaskAttr

#: The optimisation methods; each runs at its defaults apart from the iteration count.
SPEED_METHODS: dict[str, type] = {
    "MeaningfulPerturbation": MeaningfulPerturbation,
    "NeuroMaskAttr": NeuroMaskAttr,
}


def _seconds(work: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bare_forward_backward(model: nn.Module, inputs: Tensor, target: int) -> None:
    with torch.enable_grad():
        x = inputs.detach().requires_grad_(True)
        torch.autograd.grad(model(x)[:, target].sum(), x)


def measure_speed(
    method: str = "MeaningfulPerturbation",
    batch_size: int = 1,
    short_iters: int = 10,
    long_iters: int = 60,
    repeats: int = 3,
) -> dict:
    """Measure one optimisation method on EfficientNet-Lite0 at 224 px.

    Args:
        method (str): a key of :data:`SPEED_METHODS`.
        batch_size (int): images explained together.
        short_iters, long_iters (int): the two run lengths whose difference gives the
            per-iteration time.
        repeats (int): interleaved repetitions; medians are reported.

    Returns:
        dict with ``method``, ``batch_size``, ``bare_seconds`` (forward + backward),
        ``iteration_seconds``, ``ratio``, ``default_iters`` and ``seconds_per_image`` (a whole
        explanation at default settings).

    Examples::

        >>> print(format_speed([measure_speed("MeaningfulPerturbation", batch_size=4)]))
    """
    if method not in SPEED_METHODS:
        raise ValueError(f"method must be one of {sorted(SPEED_METHODS)}, got {method!r}")
    model = zoo.load_efficientnet_lite0()
    x = torch.cat([zoo.normalize(zoo.paste_composite(seed=i).image) for i in range(batch_size)])
    target = 285  # Egyptian cat
    explainer = SPEED_METHODS[method](model)
    default_iters = inspect.signature(explainer.attribute).parameters["n_iter"].default

    def run(n_iter: int) -> Callable[[], object]:
        return lambda: explainer.attribute(x, target=target, n_iter=n_iter)

    bare_forward_backward(model, x, target)  # warm-up
    run(short_iters)()
    bare, short, long = [], [], []
    for _ in range(repeats):  # interleaved, so drifts in machine load hit all three alike
        bare.append(_seconds(lambda: bare_forward_backward(model, x, target), 5))
        short.append(_seconds(run(short_iters), 1))
        long.append(_seconds(run(long_iters), 1))
    bare_seconds = statistics.median(bare)
    iteration_seconds = (statistics.median(long) - statistics.median(short)) / (
        long_iters - short_iters
    )
    per_image = _seconds(run(default_iters), 1) / batch_size
    return {
        "method": method,
        "batch_size": batch_size,
        "bare_seconds": bare_seconds,
        "iteration_seconds": iteration_seconds,
        "ratio": iteration_seconds / bare_seconds,
        "default_iters": default_iters,
        "seconds_per_image": per_image,
    }


def format_speed(results: list[dict]) -> str:
    """Results of :func:`measure_speed` as a markdown table, one row each."""
    columns = ("method", "batch", "forward+backward (s)", "per iteration (s)", "ratio")
    columns += ("iterations", "s / image")
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for result in results:
        lines.append(
            f"| {result['method']} | {result['batch_size']} | {result['bare_seconds']:.4f} | "
            f"{result['iteration_seconds']:.4f} | {result['ratio']:.3f} | "
            f"{result['default_iters']} | {result['seconds_per_image']:.1f} |"
        )
    return "\n".join(lines)


__all__ = ["SPEED_METHODS", "bare_forward_backward", "format_speed", "measure_speed"]
