"""Stalder et al.'s class-specific masking table for the trained AmortizedExplainer
(``python -m captum_masks class-masking``)."""

from __future__ import annotations

import time

from captum_masks import metrics


def class_masking_report(
    n: int = 200, seed: int = 0, retrain: bool = False, overrides: dict | None = None
) -> dict:
    """Stalder et al.'s class-specific masking test (Table 1) on ``n`` images of the multi-label
    synthetic suite, for the cached :class:`AmortizedExplainer` and, as the reference a perfect
    explainer would reach, for the ground-truth masks of the pasted shapes.

    Args:
        n (int): test images (seed 30 000 + ``seed``, like the ``synthetic-pairs`` suite).
        seed (int): picks the images.
        retrain (bool): train the explainer again instead of loading it from the cache.
        overrides (dict, optional): training settings that differ from the cached explainer's
            (see :func:`~captum_masks.bench.synthetic.load_synthetic_explainer`), e.g.
            ``{"separate_classes": False}``.

    Returns:
        dict with ``"explainer"`` and ``"ground truth"`` (each the dict of
        :func:`captum_masks.metrics.class_specific_masking`), ``"seconds_per_image"`` (one
        :meth:`~AmortizedExplainer.explain_all` call for all classes, ÷ n) and ``"history"`` (the
        :class:`~captum_masks.FitHistory`, or None when the explainer came from the cache).

    Examples::

        >>> print(format_class_masking(class_masking_report(200)))
    """
    from captum_masks.bench.synthetic import load_synthetic_explainer, make_synthetic

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    explainer, history = load_synthetic_explainer(
        retrain=retrain, verbose=False, **(overrides or {})
    )
    batch = make_synthetic(n, seed=30_000 + seed, multilabel=True)
    start = time.perf_counter()
    masks = explainer.explain_all(batch.images)
    seconds = (time.perf_counter() - start) / n
    model = explainer.forward_func
    return {
        source: metrics.class_specific_masking(
            model, batch.images, class_masks, batch.labels, multilabel=True
        )
        for source, class_masks in (("explainer", masks), ("ground truth", batch.class_masks))
    } | {"seconds_per_image": seconds, "history": history}


def format_class_masking(report: dict) -> str:
    """:func:`class_masking_report` as markdown: for each source of masks, the probability of
    each present class (row) under each class's mask (column) as a share of its unmasked
    probability, over the images that hold both classes, then the summary numbers."""
    from captum_masks.bench.synthetic import SHAPES

    lines = []
    for source in ("explainer", "ground truth"):
        result = report[source]
        relative = result["co_occurring_table"] / result["unmasked"][:, None]
        lines += [
            (
                f"{source} masks (rows: the class scored, columns: whose mask; share of the "
                "unmasked "
                "probability, images holding both):"
            ),
            "",
            "| class | unmasked | " + " | ".join(SHAPES) + " |",
            "|---" * (len(SHAPES) + 2) + "|",
        ]
        for index, name in enumerate(SHAPES):
            cells = [f"{float(result['unmasked'][index]):.3f}"]
            cells += [f"{float(value):.3f}" for value in relative[index]]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += [
            "",
            (
                f"right mask keeps {float(result['same_relative']):.3f}; another present class's "
                f"mask leaves {float(result['other_co_occurring_relative']):.3f}; "
                "any other class's "
                f"mask (absent classes included) leaves {float(result['other_relative']):.3f}"
            ),
            "",
        ]
    lines.append(
        f"explain_all: {report['seconds_per_image'] * 1000:.2f} ms per image for all classes"
    )
    return "\n".join(lines)


__all__ = ["class_masking_report", "format_class_masking"]
