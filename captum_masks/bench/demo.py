"""``python -m captum_masks demo``: explain a real photo with the real ImageNet model."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor

from captum_masks.bench import zoo
from captum_masks._compat import progress
from captum_masks.meaningful_perturbation import MeaningfulPerturbation
from captum_masks.visualization import attribution_to_image, image_to_numpy


def captum_builtins(model: torch.nn.Module) -> dict[str, Callable[[Tensor, int], Tensor]]:
    """Captum's built-in methods with the settings the demo and benchmarks use."""
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion, Saliency

    def grad_cam(x: Tensor, target: int) -> Tensor:
        cam = LayerGradCam(model, model._conv_head).attribute(
            x, target=target, relu_attributions=True
        )
        return LayerAttribution.interpolate(cam, x.shape[2:], interpolate_mode="bilinear")

    return {
        "Saliency": lambda x, t: Saliency(model).attribute(x, target=t),
        "IntegratedGradients": lambda x, t: IntegratedGradients(model).attribute(
            x, target=t, n_steps=32, internal_batch_size=16
        ),
        "Occlusion": lambda x, t: Occlusion(model).attribute(
            x, target=t, sliding_window_shapes=(3, 32, 32), strides=(3, 16, 16), baselines=0.0
        ),
        "LayerGradCam": grad_cam,
    }


def run_demo(
    image: str = "cat", out: str = "demo.png", n_iter: int = 300, seed: int = 0
) -> list[tuple[str, float]]:
    """Print the top-5 classes of ``image``, explain the top one with every method, save a figure.

    Returns:
        ``[(method, seconds), ...]`` in the order the figure shows them.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from captum.attr import visualization as viz

    model = zoo.load_efficientnet_lite0()
    categories = zoo.imagenet_categories()
    x = zoo.preprocess(zoo.sample_image(image))
    with torch.no_grad():
        probabilities = model(x).softmax(dim=1)[0]
    top = probabilities.topk(5)
    print(f"Top-5 predictions for {image}:")
    for p, index in zip(top.values.tolist(), top.indices.tolist()):
        print(f"  {p:6.3f}  {categories[index]} ({index})")
    target = int(top.indices[0])

    mp = MeaningfulPerturbation(model)
    methods = {
        "MeaningfulPerturbation": lambda x, t: mp.attribute(
            x, target=t, n_iter=n_iter, seed=seed, show_progress=True
        ),
        **captum_builtins(model),
    }
    attributions, timings = {}, []
    for name, explain in progress(methods.items(), desc="Methods", total=len(methods)):
        start = time.perf_counter()
        # Captum's gradient methods warn unless the input already requires grad
        attributions[name] = explain(x.clone().requires_grad_(True), target).detach()
        timings.append((name, time.perf_counter() - start))

    original = image_to_numpy(x, zoo.IMAGENET_MEAN, zoo.IMAGENET_STD)
    figure, axes = plt.subplots(1, len(methods) + 1, figsize=(3 * (len(methods) + 1), 3.8))
    axes[0].imshow(original)
    axes[0].set_title(f"{categories[target]}\np = {float(top.values[0]):.2f}", fontsize=9)
    axes[0].axis("off")
    for axis, (name, seconds) in zip(axes[1:], timings):
        sign = (
            "positive" if name in ("MeaningfulPerturbation", "LayerGradCam") else "absolute_value"
        )
        viz.visualize_image_attr(
            attribution_to_image(attributions[name]),
            original,
            method="blended_heat_map",
            sign=sign,
            plt_fig_axis=(figure, axis),
            use_pyplot=False,
            title=f"{name}\n{seconds:.1f} s",
        )
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)
    print("Seconds per method:")
    for name, seconds in timings:
        print(f"  {name:<24}{seconds:8.2f}")
    print(f"Saved {out}")
    return timings


__all__ = ["captum_builtins", "run_demo"]
