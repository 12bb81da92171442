"""``python -m captum_masks speed``: how much an optimisation step costs beyond the model itself,
and what one amortised explanation costs.

The ratio is (seconds per mask-optimisation iteration) ÷ (seconds of one bare forward pass plus a
backward pass to the input over the images one iteration scores), both measured in the same run.
That is the batch size for most methods, twice it for GuidedFeatureInversion's stage 2, which
scores the kept and the removed part of every image in each iteration. The per-iteration time is
the slope between a short and a long run, so one-off work (the clean forward pass, building the
blurred reference, GuidedFeatureInversion's stage 1) is not counted in it. Each repeat divides it
by the bare passes timed just before and after its runs, and the ratio is the median over
repeats, since this machine's pace drifts by up to a quarter over minutes; seconds per image at
default settings (or with ``settings``) are reported separately and include everything, next to
the iterations that run actually ran per image; ``before`` adds the same two figures for other
settings (such as the previous defaults) measured in the same run.

Next to the ratio are the page faults of a bare pass and of an iteration (Linux and macOS): with
glibc's default allocator, a step that interleaves its own large tensors with the model's can
leave the heap so that memory goes back to the system and is faulted in again at every step,
at a cost of the order of microseconds per 4-KiB page; the counts say when that, rather than
the method's arithmetic, is the gap.

:class:`AmortizedExplainer` has no iterations: its row times one whole explanation (the classifier
pass that checks the target, then one pass of the default explainer network) as its single
iteration. The explainer is untrained, which costs the same as a trained one. Captum's
IntegratedGradients, Occlusion and LayerGradCam rows (as the benchmark runs them) are timed the
same way.

Every row also counts the model's passes per image of a whole explanation, forward and backward
apart (rows of every batch the model ran on, and of every gradient that came back through its
output): the cost a method adds is its passes times the model's own. :class:`RISE`'s
iteration is one random mask: a forward pass without a backward one, so its ratio is below 1.
"""

from __future__ import annotations

import functools
import inspect
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch
from captum.attr import Attribution
from torch import Tensor, nn

from captum_masks._engine.checks import check_positive_int
from captum_masks.amortized import AmortizedExplainer
from captum_masks.bench.passes import counting_passes
from captum_masks.bench.runners import RunnerAttribution, method_arguments, method_runners
from captum_masks.bench.suites import Suite, photos_suite
from captum_masks.extremal_perturbation import ExtremalPerturbation
from captum_masks.guided_feature_inversion import GuidedFeatureInversion, InversionStage
from captum_masks.meaningful_perturbation import MeaningfulPerturbation
from captum_masks.neuromask import NeuroMaskAttr
from captum_masks.rise import RISE

Result = TypeVar("Result")


@dataclass(frozen=True)
class SpeedSpec:
    """How to time one method on EfficientNet-Lite0.

    Attributes:
        make (callable): the suite (its model, and the benchmark's settings for it) -> the
            attribution method.
        iteration_argument (str or None): the setting varied to time one iteration (a dotted
            name such as ``"optimization.n_iter"``, see
            :func:`~captum_masks.bench.runners.method_arguments`); None for a method that
            explains in one pass.
        extra_iterations (int): iterations a default run adds to the varied setting's default
            (Guided Feature Inversion's first stage).
        passes_per_iteration (int): model passes per image in one iteration.
        keeps_history (bool): ``attribute`` returns an optimisation history with the steps each
            image ran; without one (RISE's fixed number of masks) every iteration runs.
    """

    make: Callable[[Suite], Attribution]
    iteration_argument: str | None = "optimization.n_iter"
    extra_iterations: int = 0
    passes_per_iteration: int = 1
    keeps_history: bool = True


def _captum_method(name: str, suite: Suite) -> Attribution:
    return RunnerAttribution(suite.model, method_runners(suite)[name])


#: The optimisation methods; each runs at its defaults apart from the iteration count.
SPEED_METHODS: dict[str, SpeedSpec] = {
    "MeaningfulPerturbation": SpeedSpec(lambda suite: MeaningfulPerturbation(suite.model)),
    "NeuroMaskAttr": SpeedSpec(lambda suite: NeuroMaskAttr(suite.model)),
    "GuidedFeatureInversion": SpeedSpec(
        lambda suite: GuidedFeatureInversion(suite.model, layer=suite.model.get_submodule("_bn1")),
        extra_iterations=InversionStage().n_iter,
        passes_per_iteration=2,
    ),
    "ExtremalPerturbation": SpeedSpec(lambda suite: ExtremalPerturbation(suite.model)),
    # one forward pass per mask and image, no backward pass
    "RISE": SpeedSpec(
        lambda suite: RISE(suite.model),
        iteration_argument="n_samples",
        keeps_history=False,
    ),
    "AmortizedExplainer": SpeedSpec(
        lambda suite: AmortizedExplainer(suite.model, num_classes=1000),
        iteration_argument=None,
    ),
    # Captum's methods as the benchmark runs them, each explanation timed whole
    **{
        name: SpeedSpec(
            functools.partial(_captum_method, name), iteration_argument=None, keeps_history=False
        )
        for name in ("IntegratedGradients", "Occlusion", "LayerGradCam")
    },
}


def _default_iterations(explainer: Attribution, spec: SpeedSpec) -> int:
    """The iterations of a default run: the varied setting's default, and the extra ones."""
    if spec.iteration_argument is None:
        return 1
    argument, _, field = spec.iteration_argument.partition(".")
    if field:
        default = getattr(getattr(explainer, f"default_{argument}"), field)
    else:
        default = inspect.signature(explainer.attribute).parameters[argument].default
    return default + spec.extra_iterations


def _median_or_none(values: list[float | None]) -> float | None:
    """The median of ``values``, or None where page faults were not counted."""
    counted = [v for v in values if v is not None]
    return statistics.median(counted) if len(counted) == len(values) else None


def _seconds(work: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def page_faults() -> int | None:
    """This process's minor page faults so far: memory the allocator had handed back to the
    system and takes again, paid for on first touch (None where the platform does not count
    them)."""
    try:  # page faults are counted where the platform counts them (not on Windows)
        import resource
    except ImportError:  # pragma: no cover
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _faults_per(work: Callable[[], Result], count: int) -> tuple[Result, float | None]:
    """``work()``'s result and the page faults it took, per ``count``."""
    before = page_faults()
    result = work()
    after = page_faults()
    if before is None or after is None:  # pragma: no cover
        return result, None
    return result, (after - before) / count


def bare_forward_backward(model: nn.Module, inputs: Tensor, target: Tensor) -> None:
    """One forward and one backward pass to the input, scoring ``target`` (one class per row)."""
    with torch.enable_grad():
        x = inputs.detach().requires_grad_(True)
        torch.autograd.grad(model(x).gather(1, target.view(-1, 1)).sum(), x)


def measure_speed(
    method: str = "MeaningfulPerturbation",
    batch_size: int = 1,
    short_iters: int = 10,
    long_iters: int = 60,
    repeats: int = 3,
    settings: dict | None = None,
    before: dict | None = None,
    images: int = 4,
) -> dict:
    """Measure one optimisation method on EfficientNet-Lite0 at 224 px, on held-out photos.

    Args:
        method (str): a key of :data:`SPEED_METHODS`.
        batch_size (int): images explained together.
        short_iters, long_iters (int): the two run lengths whose difference gives the
            per-iteration time.
        repeats (int): interleaved repetitions; medians are reported.
        settings (dict, optional): other settings of the method's ``attribute`` for the run at
            default settings, dotted names included (``{"optimization.tolerance": 1e-3}``); the
            per-iteration time is always measured at full length.
        before (dict, optional): settings of a second whole run in the same process, such as
            the previous defaults (``{"optimization.tolerance": None}``), to compare with.
        images (int): held-out photos the whole runs explain, ``batch_size`` at a time (at
            least one batch): with early stopping the iterations depend on the image.

    Returns:
        dict with ``method``, ``batch_size``, ``passes`` (images the model scores per
        iteration), ``bare_seconds`` (forward + backward over ``passes`` images),
        ``iteration_seconds``, ``ratio``, ``bare_faults`` and ``iteration_faults`` (page
        faults per bare pass and per iteration; None where they are not counted),
        ``default_iters``, ``seconds_per_image`` (a whole
        explanation at default settings, with ``settings``, averaged over ``images``) and
        ``iterations_run`` (the mean iterations per image of that run); with ``before``, also
        ``seconds_per_image_before``
        and ``iterations_run_before``.

    Examples::

        >>> print(format_speed([measure_speed("MeaningfulPerturbation", batch_size=4)]))
    """
    if method not in SPEED_METHODS:
        raise ValueError(f"method must be one of {sorted(SPEED_METHODS)}, got {method!r}")
    spec = SPEED_METHODS[method]
    check_positive_int("images", images)
    if long_iters <= short_iters:
        raise ValueError(
            f"the long run must be longer than the short one, got {short_iters} and {long_iters}"
        )
    # held-out photos: how soon an explanation settles depends on the image
    suite = photos_suite(max(images, batch_size), split="held-out")
    x, target = suite.inputs[:batch_size], suite.targets[:batch_size]
    passes = x.repeat(spec.passes_per_iteration, 1, 1, 1)
    passes_target = target.repeat(spec.passes_per_iteration)
    model = suite.model
    explainer = spec.make(suite)
    parameters = inspect.signature(explainer.attribute).parameters
    default_iters = _default_iterations(explainer, spec)
    names = set(settings or {}) | set(before or {})
    unknown = sorted(name for name in names if name.split(".")[0] not in parameters)
    if unknown:
        raise ValueError(
            f"settings {unknown} are not arguments of {method}.attribute: time it without them "
            "(--methods picks the methods to time)"
        )

    def to_arguments(settings: dict) -> dict:
        return method_arguments(type(explainer), settings)

    def whole_run(arguments: dict) -> tuple[float, float, tuple[float, float]]:
        """Seconds per image, mean iterations run and the model's (forward, backward) passes per
        image explaining the photos with ``arguments``."""
        start = time.perf_counter()
        batches = zip(suite.inputs.split(batch_size), suite.targets.split(batch_size))
        with counting_passes(model) as count:
            steps = _explain_all(batches, arguments)
        per_image = (time.perf_counter() - start) / suite.inputs.shape[0]
        return per_image, torch.cat(steps).mean().item(), count.per_input(suite.inputs.shape[0])

    def _explain_all(batches: Iterator, arguments: dict) -> list[Tensor]:
        steps = []
        for inputs, targets in batches:
            if not spec.keeps_history:
                explainer.attribute(inputs, target=targets, **to_arguments(arguments))
                ran = arguments.get(spec.iteration_argument, default_iters)
                steps.append(torch.full((len(inputs),), float(ran)))
                continue
            _, history = explainer.attribute(
                inputs, target=targets, return_history=True, **to_arguments(arguments)
            )
            steps.append(history.steps.double())
        return steps

    def run(n_iter: int | None) -> Callable[[], object]:
        settings: dict = {} if n_iter is None else {spec.iteration_argument: n_iter}
        if "optimization" in parameters:  # every timed iteration must run
            settings["optimization.tolerance"] = None
        arguments = to_arguments(settings)
        return lambda: explainer.attribute(x, target=target, **arguments)

    def time_bare() -> tuple[float, float | None]:
        """Seconds of one bare pass, and its page faults."""
        return _faults_per(
            lambda: _seconds(lambda: bare_forward_backward(model, passes, passes_target), 5), 5
        )

    bare_forward_backward(model, passes, passes_target)  # warm-up
    if spec.iteration_argument is None:
        with counting_passes(model) as count:
            run(None)()
        passes_per_image = count.per_input(batch_size)
        bare, whole, bare_faults, faults = [], [], [], []
        for _ in range(repeats):
            seconds, fault_count = time_bare()
            bare.append(seconds)
            bare_faults.append(fault_count)
            seconds, fault_count = _faults_per(lambda: _seconds(run(None), 5), 5)
            whole.append(seconds)
            faults.append(fault_count)
        bare_seconds = statistics.median(bare)
        iteration_seconds = statistics.median(whole)
        ratio = iteration_seconds / bare_seconds
        default_iters, per_image, iterations_run = 1, iteration_seconds / batch_size, 1.0
    else:
        run(short_iters)()
        bare, iterations, ratios, bare_faults, faults = [], [], [], [], []
        for _ in range(repeats):
            # this machine's pace drifts by a quarter over minutes: each repeat's ratio is
            # taken against the bare passes timed just before and just after its two runs
            bare_before, faults_before = time_bare()
            short, short_faults = _faults_per(lambda: _seconds(run(short_iters), 1), 1)
            long, long_faults = _faults_per(lambda: _seconds(run(long_iters), 1), 1)
            bare_after, faults_after = time_bare()
            iterations.append((long - short) / (long_iters - short_iters))
            bare.append((bare_before + bare_after) / 2)
            ratios.append(iterations[-1] / bare[-1])
            if (
                short_faults is None
                or long_faults is None
                or faults_before is None
                or faults_after is None
            ):  # pragma: no cover
                bare_faults.append(None)
                faults.append(None)
                continue
            bare_faults.append((faults_before + faults_after) / 2)
            # a difference of two runs, like the time: below zero is the short run's noise
            extra = (long_faults - short_faults) / (long_iters - short_iters)
            faults.append(max(extra, 0.0))
        bare_seconds = statistics.median(bare)
        iteration_seconds = statistics.median(iterations)
        ratio = statistics.median(ratios)
        per_image, iterations_run, passes_per_image = whole_run(settings or {})
    result = {
        "method": method,
        "batch_size": batch_size,
        "passes": passes.shape[0],
        "bare_seconds": bare_seconds,
        "iteration_seconds": iteration_seconds,
        "ratio": ratio,
        "bare_faults": _median_or_none(bare_faults),
        "iteration_faults": _median_or_none(faults),
        "default_iters": default_iters,
        "seconds_per_image": per_image,
        "iterations_run": iterations_run,
        "forward_passes": passes_per_image[0],
        "backward_passes": passes_per_image[1],
    }
    if before is not None and spec.iteration_argument is not None:
        seconds, iterations_run, passes_per_image = whole_run(before)
        result.update(
            seconds_per_image_before=seconds,
            iterations_run_before=iterations_run,
            forward_passes_before=passes_per_image[0],
            backward_passes_before=passes_per_image[1],
        )
    return result


def _count(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def format_speed(results: list[dict]) -> str:
    """Results of :func:`measure_speed` as a markdown table, one row each, followed by how many
    times less time per image AmortizedExplainer takes than each optimisation method measured at
    the same batch size."""
    columns: tuple[str, ...] = ("method", "batch", "images / iteration", "forward+backward (s)")
    columns += ("per iteration (s)", "ratio", "page faults: bare", "page faults: iteration")
    columns += ("iterations", "iterations run", "passes / image: forward", "backward")
    columns += ("s / image",)
    compared = any("seconds_per_image_before" in result for result in results)
    if compared:
        columns += ("iterations run (before)", "passes (before): forward", "backward")
        columns += ("s / image (before)",)
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for result in results:
        line = (
            f"| {result['method']} | {result['batch_size']} | {result['passes']} | "
            f"{result['bare_seconds']:.4f} | "
            f"{result['iteration_seconds']:.4f} | {result['ratio']:.3f} | "
            f"{_count(result['bare_faults'])} | {_count(result['iteration_faults'])} | "
            f"{result['default_iters']} | {result['iterations_run']:.4g} | "
            f"{result['forward_passes']:.0f} | {result['backward_passes']:.0f} | "
            f"{result['seconds_per_image']:.3g} |"
        )
        if compared:
            line += (
                f" {result['iterations_run_before']:.4g} |"
                f" {result['forward_passes_before']:.0f} |"
                f" {result['backward_passes_before']:.0f} |"
                f" {result['seconds_per_image_before']:.3g} |"
                if "seconds_per_image_before" in result
                else " – | – | – | – |"
            )
        lines.append(line)
    amortized = {r["batch_size"]: r for r in results if r["method"] == "AmortizedExplainer"}
    for result in results:
        one_pass = amortized.get(result["batch_size"])
        if one_pass is not None and result["default_iters"] > 1:  # an optimisation method
            speedup = result["seconds_per_image"] / one_pass["seconds_per_image"]
            lines.append(
                f"\nAmortizedExplainer takes {speedup:.0f}× less time per image than "
                f"{result['method']} at batch {result['batch_size']}."
            )
    return "\n".join(lines)


__all__ = ["SPEED_METHODS", "SpeedSpec", "bare_forward_backward", "format_speed", "measure_speed"]
