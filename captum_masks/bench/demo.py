"""``python -m captum_masks demo``: a cat and an espresso cup in one photo, each explained for its
own class by this package's methods next to Captum's built-ins, on the real ImageNet model."""

from __future__ import annotations

import time

import torch

from captum_masks._engine.compat import progress
from captum_masks.bench import zoo
from captum_masks.bench.runners import method_runners
from captum_masks.bench.suites import Suite, image_suite, photos_pairs_suite
from captum_masks.metrics import class_discrimination, relevance_mass
from captum_masks.visualization import attribution_to_image

#: the demo's columns: this package's methods, then Captum's (as the benchmark runs them)
DEMO_METHODS = (
    "MeaningfulPerturbation/deletion",
    "NeuroMaskAttr",
    "GuidedFeatureInversion",
    "Saliency",
    "IntegratedGradients",
    "Occlusion",
    "LayerGradCam",
)
#: methods whose maps are relevance (positive); the gradient methods' sign is shown as magnitude
POSITIVE_MAPS = (
    "MeaningfulPerturbation",
    "NeuroMaskAttr",
    "GuidedFeatureInversion",
    "LayerGradCam",
)


def run_demo(
    image: str | None = None, out: str = "demo.png", n_iter: int | None = None, seed: int = 0
) -> list[tuple[str, float]]:
    """Explain a photo with every method of :data:`DEMO_METHODS`, print what each took and save
    a figure: by default a cat and an espresso cup pasted on a real texture, each object explained
    for its own class (with the share of relevance each map puts on it); with ``image``, that
    photo for its top class.

    Args:
        image (str, optional): a sample image's name or a file path. Default: None (the pair)
        out (str): where the figure goes.
        n_iter (int, optional): iterations of MeaningfulPerturbation and NeuroMask; None keeps
            each method's default (MeaningfulPerturbation's budget of 300 with early stopping,
            NeuroMask's 100).
        seed (int): the methods' seed and the pair's layout.

    Returns:
        ``[(method, seconds), ...]`` in the order the figure shows them.
    """
    pair = ("cat", "coffee")
    suite = photos_pairs_suite(1, seed, objects=pair) if image is None else image_suite(image)
    categories = zoo.imagenet_categories()
    _print_top5(suite, image or "the cat and espresso photo", categories)
    runners = method_runners(
        suite, seed, overrides={} if n_iter is None else {"optimization.n_iter": n_iter}
    )
    attributions, timings = {}, []
    for name in progress(DEMO_METHODS, desc="Methods", total=len(DEMO_METHODS)):
        start = time.perf_counter()
        attributions[name] = runners[name](suite.inputs, suite.targets).detach()
        timings.append((name, time.perf_counter() - start))
    print("Seconds per method (all rows):")
    for name, seconds in timings:
        line = f"  {name:<34}{seconds:8.2f}"
        if suite.other_masks is not None:
            mass = relevance_mass(attributions[name], suite.masks).tolist()
            wins = class_discrimination(attributions[name], suite.masks, suite.other_masks)
            line += f"   relevance on its object {', '.join(f'{m:.2f}' for m in mass)}"
            line += f"; more on it than on the other: {int(wins.sum())}/{len(wins)}"
        print(line)
    _save_figure(suite, attributions, timings, categories, out)
    print(f"Saved {out}")
    return timings


def _print_top5(suite: Suite, label: str, categories: list) -> None:
    with torch.no_grad():
        probabilities = suite.model(suite.inputs[:1]).softmax(dim=1)[0]
    top = probabilities.topk(5)
    print(f"Top-5 predictions for {label}:")
    for p, index in zip(top.values.tolist(), top.indices.tolist()):
        print(f"  {p:6.3f}  {categories[index]} ({index})")
    print("Explaining: " + ", ".join(categories[t] for t in suite.targets.tolist()))


def _save_figure(
    suite: Suite, attributions: dict, timings: list, categories: list, out: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from captum.attr import visualization as viz

    rows, columns = len(suite.targets), len(timings) + 1
    figure, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.9 * rows), squeeze=False)
    for row, target in enumerate(suite.targets.tolist()):
        original = suite.display[row].permute(1, 2, 0).numpy()
        axes[row, 0].imshow(original)
        axes[row, 0].set_title(f"explaining\n{categories[target]}", fontsize=9)
        axes[row, 0].axis("off")
        for axis, (name, seconds) in zip(axes[row, 1:], timings):
            viz.visualize_image_attr(
                attribution_to_image(attributions[name][row : row + 1]),
                original,
                method="blended_heat_map",
                sign="positive" if name.split("/")[0] in POSITIVE_MAPS else "absolute_value",
                plt_fig_axis=(figure, axis),
                use_pyplot=False,
                title=f"{name.split('/')[0]}\n{seconds:.1f} s" if row == 0 else None,
            )
    figure.tight_layout()
    figure.savefig(out, dpi=90)
    plt.close(figure)


__all__ = ["DEMO_METHODS", "run_demo"]
