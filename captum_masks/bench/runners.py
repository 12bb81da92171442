"""This package's methods and Captum's built-ins as ``(inputs, targets) -> attributions`` with a
suite's settings: the rows of the benchmark."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from captum.attr import Attribution
from torch import Tensor, nn

import captum_masks
from captum_masks.amortized import AmortizedExplainer
from captum_masks.bench.cli_types import setting
from captum_masks.bench.suites import Suite
from captum_masks.extremal_perturbation import ExtremalPerturbation
from captum_masks.guided_feature_inversion import GuidedFeatureInversion
from captum_masks.meaningful_perturbation import GAMES, MeaningfulPerturbation
from captum_masks.neuromask import NeuroMaskAttr
from captum_masks.optimization import Optimization
from captum_masks.rise import RISE

CAPTUM_METHODS = (
    "Saliency",
    "IntegratedGradients",
    "Occlusion",
    "FeatureAblation",
    "LayerGradCam",
)
OUR_METHODS = (
    *(f"MeaningfulPerturbation/{game}" for game in GAMES),
    "NeuroMaskAttr",
    "GuidedFeatureInversion",
    "GuidedFeatureInversion/inversion",
    "AmortizedExplainer",
    "ExtremalPerturbation",
    "RISE",
)
#: other libraries' implementations, run side by side when installed (never a dependency of the
#: package), and left out of the default list: TorchRay's takes about a minute per image
REFERENCE_METHODS = ("TorchRay/ExtremalPerturbation",)
DEFAULT_METHODS = OUR_METHODS + CAPTUM_METHODS
ALL_METHODS = DEFAULT_METHODS + REFERENCE_METHODS
#: the suites whose model has a trained AmortizedExplainer
AMORTIZED_SUITES = ("synthetic-pairs",)
#: the class behind each of this package's rows (``--set`` checks its arguments against it)
OUR_CLASSES: dict[str, type[Any]] = {
    "MeaningfulPerturbation": MeaningfulPerturbation,
    "NeuroMaskAttr": NeuroMaskAttr,
    "GuidedFeatureInversion": GuidedFeatureInversion,
    "AmortizedExplainer": AmortizedExplainer,
    "RISE": RISE,
    "ExtremalPerturbation": ExtremalPerturbation,
}


def takes(method: str, name: str) -> bool:
    """Whether ``method``'s ``attribute`` takes the setting ``name`` (``"n_samples"``, or a field
    of an object argument such as ``"optimization.n_iter"`` or ``"mask.temperature"``)."""
    cls = OUR_CLASSES[method.split("/")[0]]
    argument, _, field = name.partition(".")
    if argument not in inspect.signature(cls.attribute).parameters:
        return False
    if not field:
        return True
    try:
        kind = _argument_type(cls, argument)
    except ValueError:
        return False
    return field in inspect.signature(kind).parameters


def check_overrides_taken(overrides: dict, methods: Sequence[str]) -> None:
    """Raise a ValueError naming the ``overrides`` that none of this package's ``methods``
    takes (a misspelt ``--set`` would otherwise change nothing without a word)."""
    unused = [k for k in overrides if not any(takes(method, k) for method in methods)]
    if unused:
        raise ValueError(
            f"overrides {unused} are not arguments of any selected method of this package "
            f"({', '.join(methods) or 'none selected'})"
        )


def split_variant(row: str) -> tuple[str, dict]:
    """A benchmark row's method and its own settings: ``"NeuroMaskAttr[mask.temperature=1.0
    optimization.n_iter=300]"`` is NeuroMaskAttr with those two settings, a row of its own beside
    ``"NeuroMaskAttr"`` at the suite's settings. Settings are ``NAME=VALUE`` as for ``--set``,
    separated by spaces."""
    method, bracket, inside = row.partition("[")
    if not bracket:
        return row, {}
    if not inside.endswith("]") or method not in OUR_METHODS:
        raise ValueError(
            f"a row with its own settings is one of this package's methods followed by "
            f"[NAME=VALUE ...], e.g. 'NeuroMaskAttr[mask.temperature=1.0]', got {row!r}"
        )
    try:
        return method, dict(setting(item) for item in inside[:-1].split())
    except argparse.ArgumentTypeError as error:
        raise ValueError(f"row {row!r}: {error}") from None


def accepted(method: str, overrides: dict) -> dict:
    """The overrides that ``method``'s ``attribute`` takes, as its keyword arguments."""
    cls = OUR_CLASSES[method.split("/")[0]]
    return method_arguments(cls, {k: v for k, v in overrides.items() if takes(method, k)})


def method_arguments(method: type[Any], settings: dict) -> dict:
    """``settings`` as keyword arguments of ``method.attribute``: a plain name as it is, and
    ``"argument.field"`` names gathered into the object ``argument`` takes, e.g.
    ``{"optimization.n_iter": 50}`` becomes ``{"optimization": Optimization(n_iter=50)}`` and
    ``{"mask.temperature": 1.0}`` a :class:`~captum_masks.SigmoidMask` for NeuroMaskAttr. A
    field changes the object a plain name gives, or else the argument's default."""
    arguments = {k: v for k, v in settings.items() if "." not in k}
    fields: dict[str, dict] = {}
    for name, value in settings.items():
        if "." in name:
            argument, field = name.split(".", 1)
            fields.setdefault(argument, {})[field] = value
    parameters = inspect.signature(method.attribute).parameters
    for argument, changes in fields.items():
        if argument not in parameters:
            raise ValueError(f"{method.__name__}.attribute takes no argument {argument!r}")
        base = arguments.get(argument)
        arguments[argument] = _with_fields(base, _argument_type(method, argument), changes)
    return arguments


def _argument_type(method: type[Any], argument: str) -> type:
    """The class of this package named in ``argument``'s annotation (``SigmoidMask | None``)."""
    annotation = str(inspect.signature(method.attribute).parameters[argument].annotation)
    for name in annotation.replace(" ", "").split("|"):
        if isinstance(getattr(captum_masks, name, None), type):
            return getattr(captum_masks, name)
    raise ValueError(f"{method.__name__}.attribute's {argument} takes no object with fields")


def _with_fields(base: object, kind: type, changes: dict) -> object:
    """``base`` (or ``kind()`` for None) with the fields ``changes`` set."""
    if base is None:
        return kind(**changes)
    if isinstance(base, Optimization):
        return Optimization(**{**base.given(), **changes})
    if dataclasses.is_dataclass(base) and not isinstance(base, type):
        return dataclasses.replace(base, **changes)
    current = {p: getattr(base, p) for p in inspect.signature(type(base)).parameters}
    return type(base)(**{**current, **changes})


def with_seed(arguments: dict, seed: int) -> dict:
    """``arguments`` with the benchmark's ``seed`` in their optimisation settings (a seed that
    ``arguments`` set themselves stays)."""
    optimization = arguments.get("optimization") or Optimization()
    return {**arguments, "optimization": Optimization(**{"seed": seed, **optimization.given()})}


class RunnerAttribution(Attribution):
    """A method of :func:`method_runners` as a Captum attribution (for :func:`explain_dataset`
    and the ``speed`` command): ``attribute(inputs, target)`` runs it."""

    def __init__(self, model: nn.Module, runner: Callable[[Tensor, Tensor], Tensor]) -> None:
        super().__init__(model)
        self.runner = runner

    def attribute(self, inputs: Tensor, target: Tensor) -> Tensor:
        return self.runner(inputs, target)


def method_runners(
    suite: Suite, seed: int = 0, overrides: dict | None = None
) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    """Each method as ``(inputs, targets) -> attributions`` with the suite's settings.

    ``overrides`` are settings given, on top of the suite's settings, to every method of this
    package whose ``attribute`` takes them (e.g. ``{"mask.temperature": 1.0}`` reaches
    NeuroMaskAttr only, ``{"optimization.n_iter": 50}`` every optimising method; see
    :func:`method_arguments`), to compare settings on the same images.
    """
    return {
        **_our_runners(suite, seed, overrides or {}),
        **_captum_runners(suite),
        **_reference_runners(suite),
    }


def _our_runners(
    suite: Suite, seed: int, overrides: dict
) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    model = suite.model

    def meaningful_perturbation(game: str) -> Callable[[Tensor, Tensor], Tensor]:
        settings = with_seed(
            {**suite.mp_settings[game], **accepted("MeaningfulPerturbation", overrides)}, seed
        )
        return lambda x, t: MeaningfulPerturbation(model).attribute(
            x, target=t, game=game, **settings
        )

    def guided_feature_inversion(stage: str) -> Callable[[Tensor, Tensor], Tensor]:
        settings = with_seed(
            {**suite.gfi_settings, **accepted("GuidedFeatureInversion", overrides)}, seed
        )
        return lambda x, t: GuidedFeatureInversion(model, *suite.gfi_layers).attribute(
            x, target=t, stage=stage, **settings
        )

    def amortized(x: Tensor, t: Tensor) -> Tensor:
        if suite.name not in AMORTIZED_SUITES:
            raise ValueError(
                f"AmortizedExplainer has a trained explainer only for the suites "
                f"{AMORTIZED_SUITES}, not {suite.name!r}"
            )
        from captum_masks.bench.synthetic import load_synthetic_explainer

        explainer, _ = load_synthetic_explainer(verbose=False)
        return explainer.attribute(x, target=t)

    def rise(x: Tensor, t: Tensor) -> Tensor:
        # as many forward passes as FeatureAblation's grid of patches has cells
        cells = math.ceil(x.shape[2] / suite.patch) * math.ceil(x.shape[3] / suite.patch)
        settings = {"n_samples": cells, **accepted("RISE", overrides)}
        return RISE(model).attribute(x, target=t, seed=seed, **settings)

    neuromask_settings = with_seed(
        {**suite.neuromask_settings, **accepted("NeuroMaskAttr", overrides)}, seed
    )
    ep_settings = with_seed(
        {**suite.ep_settings, **accepted("ExtremalPerturbation", overrides)}, seed
    )
    return {
        "AmortizedExplainer": amortized,
        **{f"MeaningfulPerturbation/{game}": meaningful_perturbation(game) for game in GAMES},
        "NeuroMaskAttr": lambda x, t: NeuroMaskAttr(model).attribute(
            x, target=t, **neuromask_settings
        ),
        "GuidedFeatureInversion": guided_feature_inversion("target"),
        "GuidedFeatureInversion/inversion": guided_feature_inversion("inversion"),
        "RISE": rise,
        "ExtremalPerturbation": lambda x, t: ExtremalPerturbation(model).attribute(
            x, target=t, **ep_settings
        ),
    }


def _captum_runners(suite: Suite) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    from captum.attr import (
        FeatureAblation,
        IntegratedGradients,
        LayerAttribution,
        LayerGradCam,
        Occlusion,
        Saliency,
    )

    model, patch = suite.model, suite.patch

    def grid_mask(x: Tensor) -> Tensor:
        height, width = x.shape[2:]
        rows = torch.arange(height, device=x.device) // patch
        cols = torch.arange(width, device=x.device) // patch
        return (rows.view(-1, 1) * ((width + patch - 1) // patch) + cols.view(1, -1)).view(
            1, 1, height, width
        )

    def grad_cam(x: Tensor, t: Tensor) -> Tensor:
        cam = LayerGradCam(model, suite.last_conv).attribute(x, target=t, relu_attributions=True)
        return LayerAttribution.interpolate(cam, x.shape[2:], interpolate_mode="bilinear")

    def needs_grad(x: Tensor) -> Tensor:
        return x.clone().requires_grad_(True)

    return {
        "Saliency": lambda x, t: Saliency(model).attribute(needs_grad(x), target=t),
        "IntegratedGradients": lambda x, t: IntegratedGradients(model).attribute(
            needs_grad(x), target=t, n_steps=32, internal_batch_size=max(64, x.shape[0])
        ),
        "Occlusion": lambda x, t: Occlusion(model).attribute(
            x,
            target=t,
            sliding_window_shapes=(3, 2 * patch, 2 * patch),
            strides=(3, patch, patch),
            baselines=0.0,
            perturbations_per_eval=16,
        ),
        "FeatureAblation": lambda x, t: FeatureAblation(model).attribute(
            x, target=t, feature_mask=grid_mask(x), baselines=0.0, perturbations_per_eval=16
        ),
        "LayerGradCam": lambda x, t: grad_cam(needs_grad(x), t),
    }


def _reference_runners(suite: Suite) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    model = suite.model

    def torchray_extremal_perturbation(x: Tensor, t: Tensor) -> Tensor:
        try:
            from torchray.attribution.extremal_perturbation import extremal_perturbation
        except ImportError as error:
            raise ImportError(
                "TorchRay/ExtremalPerturbation needs TorchRay in the benchmark's environment "
                "only: pip install --no-deps torchray==1.0.0.2 (its attribution code needs "
                "nothing else that the bench lacks; it is CC-BY-NC, so never a dependency)"
            ) from error
        # TorchRay explains one image per call and sets requires_grad=False on every
        # parameter without undoing it: keep the model as it was for the methods after it
        requires_grad = [p.requires_grad for p in model.parameters()]
        try:
            masks = [
                extremal_perturbation(model, x[i : i + 1], int(t[i]), resize=True)[0]
                for i in range(x.shape[0])
            ]
        finally:
            for parameter, flag in zip(model.parameters(), requires_grad):
                parameter.requires_grad_(flag)
        return torch.cat(masks)

    return {"TorchRay/ExtremalPerturbation": torchray_extremal_perturbation}


__all__ = [
    "RunnerAttribution",
    "ALL_METHODS",
    "AMORTIZED_SUITES",
    "CAPTUM_METHODS",
    "DEFAULT_METHODS",
    "OUR_METHODS",
    "REFERENCE_METHODS",
    "accepted",
    "check_overrides_taken",
    "method_runners",
]
