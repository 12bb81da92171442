"""Extremal Perturbation (Fong, Patrick & Vedaldi, "Understanding Deep Networks via Extremal
Perturbations and Smooth Masks", ICCV 2019)."""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import Tensor

from captum_masks._engine.call import MaskAttribution, mask_attribute
from captum_masks._engine.checks import (
    check_at_least,
    check_bool,
    check_choice,
    check_instance,
    check_one_tensor,
    format_inputs,
    map_batch,
    per_input_baselines,
)
from captum_masks._engine.compat import BaselineType, TargetType
from captum_masks._engine.layout import MaskLayout
from captum_masks._engine.loop import ExampleRows, MaskProblem, optimize_masks
from captum_masks._engine.model_state import make_generator
from captum_masks._engine.scores import REWARDS, best_other_score, select_scores
from captum_masks.masks.low_resolution import LowResolutionMask
from captum_masks.masks.smooth_max import SmoothMaxMask
from captum_masks.optimization import SHARED_DEFAULTS, Optimization, OptimizationHistory
from captum_masks.perturbations import (
    BlurPyramid,
    Constant,
    Perturbation,
)
from captum_masks.regularizers import area

GAMES = ("preservation", "deletion", "dual")
#: how much the area weight λ grows over a run: TorchRay's 1.0035 per step over its 800 steps
AREA_WEIGHT_GROWTH = 1.0035**800
#: what a perturbation's name means for this method
PERTURBATIONS: dict[str, Perturbation] = {
    "blur": BlurPyramid(),
    "constant": Constant(),
}


class ExtremalPerturbation(MaskAttribution):
    r"""
    Extremal Perturbation finds, for each input and each target area a, the smooth mask of area
    a whose preserved region scores the target highest [Fong, Patrick & Vedaldi, ICCV 2019]:

    .. math::
        m_a = \arg\max_{m}\; \Phi(m \otimes x) - \lambda\, R_a(m), \qquad
        R_a(m) = \lVert \mathrm{vecsort}(m) - r_a \rVert^2 / |\Omega|

    (Eq. 7–8), where m ⊗ x shows the input where m = 1 and a blurred copy where m = 0 (the blur
    pyramid: each value of m picks, by linear interpolation, one of 8 copies blurred with σ from
    20 px down to 0), Φ is the target's score (the logit, as in the authors' code; or the
    *contrastive* reward, the target minus the best other class), r_a the sorted vector of a
    binary mask of area a, and m the smooth max-pooling of a 7-px grid of parameters
    (:class:`~captum_masks.SmoothMaxMask`, σ = 21 px). The *deletion* game maximises
    −Φ((1 − m) ⊗ x) instead, the *dual* game the difference of the two. λ grows geometrically
    during the run, so the area is met by the end: it starts at 300 and ends 16.4 times
    higher, the factor the authors' code reaches in its 800 steps.

    Every (input, area) pair is one row of one batch: images × areas are optimised together,
    each row independent of the others, so a batch gives the one-by-one result. The attribution
    is the mask (its importance is its value: the region kept, or the region whose deletion
    destroys the score); with several areas, their mean, as the paper's figures sum the masks
    over areas.

    Differences from the paper and the authors' code, by design:

    - Adam with lr 0.1 instead of SGD with momentum (lr 0.01) for 800 steps; λ's schedule is
      stretched to the run, whatever its length; 150 steps from a flat mask, 35 from a warm
      start (``Optimization(start=...)``), where every area starts from the start's map.
    - The paper's sizes in pixels (grid, σ, blur) are for 224-px images; every size left at its
      default is that fraction of the image's shorter side, so a 32-px image gets a 1-px grid.
    - The mask is evaluated every 4 pixels at 224 px and bilinearly upsampled
      (``SmoothMaxMask.stride``),
      a sixteenth of the exact generator's cost at the same smoothness; the area term sorts the
      evaluated points rather than every pixel.
    - The area term counts the mask in the image and in a band of σ around it, as the authors'
      code does, so a region at the border pays for what spills over it; but its target keeps a
      of the image's points, not a of the image and band together (with which their masks grow
      past the stated area).
    - Jitter flips the perturbed image horizontally every other step, as their code does.

    The docs' ExtremalPerturbation page measures each departure against the paper's setting.

    Args:
        forward_func (Callable): the model, returning scores (N, num_classes) (logits, for
            the default reward).

    Examples::

        >>> ep = ExtremalPerturbation(model.eval())
        >>> mask = ep.attribute(images, target=3)                     # (N, 3, H, W), area 0.1
        >>> masks = ep.attribute(images, target=3, areas=(0.05, 0.1, 0.2))  # their mean
    """

    default_optimization = Optimization(n_iter=150, lr=0.1, patience=20).over(SHARED_DEFAULTS)
    warm_optimization = Optimization(n_iter=35)
    moved_arguments = {
        "step": "mask=SmoothMaxMask(step=...)",
        "sigma": "mask=SmoothMaxMask(sigma=...)",
        "stride": "mask=SmoothMaxMask(stride=...)",
        "margin": "mask=SmoothMaxMask(margin=...)",
        "levels": "perturbation=BlurPyramid(levels=...)",
        "max_blur": "perturbation=BlurPyramid(max_sigma=...)",
    }

    @mask_attribute
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor],
        target: TargetType = None,
        additional_forward_args: Any = None,
        baselines: BaselineType = None,
        *,
        areas: float | tuple[float, ...] | list[float] = 0.1,
        game: str = "preservation",
        reward: str = "simple",
        perturbation: str | Perturbation | None = None,
        mask: SmoothMaxMask | None = None,
        area_weight: float = 300.0,
        area_weight_growth: float = AREA_WEIGHT_GROWTH,
        jitter: bool = True,
        apply_softmax: bool = False,
        optimization: Optimization | None = None,
        return_history: bool = False,
    ) -> Tensor | tuple[Tensor] | tuple[Tensor | tuple[Tensor], OptimizationHistory]:
        r"""
        Args:
            inputs (Tensor or 1-tuple of Tensor): images (N, C, H, W), batch first.
            target (int, tuple, Tensor, list or None, optional): the output index to explain,
                in any Captum form; None explains each image's predicted class. Default: None
            additional_forward_args (Any, optional): passed to ``forward_func`` after the
                inputs. Default: None
            baselines (scalar, sequence or Tensor, optional): with the constant perturbation
                (chosen when baselines are given), what the masked-out image shows: a scalar,
                one value per channel, or a tensor broadcastable to the input. Default: None
            areas (float or sequence of float, optional): the target areas a, each in (0, 1);
                every image is explained at each. Default: 0.1
            game (str, optional): ``"preservation"`` (the region that alone keeps the score),
                ``"deletion"`` (the region whose blurring destroys it) or ``"dual"`` (both at
                once: two model passes per step). Default: "preservation"
            reward (str, optional): ``"simple"`` (the target's score) or ``"contrastive"``
                (the target's score minus the highest other class's). Default: "simple"
            perturbation (str, Perturbation or None, optional): ``"blur"``
                (:class:`~captum_masks.BlurPyramid`: 8 copies up to σ = 20 px at 224 px, the
                image's shorter side ÷ 11.2),
                ``"constant"`` (the ``baselines``), or such an object with other settings; None
                picks the constant when baselines are given, the blur otherwise.
                Default: None
            mask (SmoothMaxMask, optional): the smooth max-pooling parametrisation (Section
                3.3); None is ``SmoothMaxMask()``: a grid and kernel relative to the image's
                shorter side, the paper's 7 px grid and σ = 21 px at 224 px.
                Default: None
            area_weight (float, optional): λ at the first step (the paper's 300). Default: 300
            area_weight_growth (float, optional): λ at the last step ÷ λ at the first; λ grows
                geometrically in between. Default: 1.0035⁸⁰⁰ ≈ 16.4
            jitter (bool, optional): flip the perturbed image horizontally every other step.
                Default: True
            apply_softmax (bool, optional): score the target by its softmax probability
                instead of the raw output. Default: False (the authors' code uses logits)
            optimization (Optimization, optional): the loop's settings
                (:class:`~captum_masks.Optimization`), over every (image, area) row; fields left
                unset take this method's defaults: ``n_iter=150, lr=0.1, optimizer="adam",
                tolerance=None, patience=20`` (λ keeps growing, so early stopping is off; the
                authors' SGD is ``optimizer=lambda p, lr: torch.optim.SGD(p, lr, momentum=0.9,
                dampening=0.9)``). Default: None
            return_history (bool, optional): also return the
                :class:`~captum_masks.OptimizationHistory`, one column per (image, area) row,
                image-major. Default: False

        Returns:
            *Tensor* (a 1-tuple for a 1-tuple input) of **attributions** with the input's
            shape, in [0, 1]: the mask at the one area, or the mean of the masks over
            ``areas``. With ``return_history=True``, ``(attributions, history)``.

        Examples::

            >>> ep = ExtremalPerturbation(model)
            >>> mask = ep.attribute(image, target=281, areas=0.05, game="dual")
        """
        fractions = _check_arguments(areas, game, reward, area_weight, area_weight_growth, jitter)
        parametrisation = check_instance("mask", mask, SmoothMaxMask, SmoothMaxMask())
        settings = self._optimization(optimization)
        check_one_tensor(inputs, "image tensor")
        # the perturbation is checked before the model runs on the inputs
        (baseline,) = per_input_baselines(baselines, 1)
        formatted = format_inputs(inputs, 2)
        phi = self._perturbation(perturbation, formatted, [baseline], PERTURBATIONS)
        call = self._prepare(inputs, formatted, target, additional_forward_args)
        (image,) = call.work_inputs
        num_areas = len(fractions)
        # one row per (image, area), image-major; the reference is the pyramid or the baseline
        reference = phi.reference(image, baseline, make_generator(settings.seed, call.device))
        everyone = ExampleRows(
            [image.repeat_interleave(num_areas, dim=0)],
            [reference.repeat_interleave(num_areas, dim=0)],
            call.targets.repeat_interleave(num_areas, dim=0),
            map_batch(
                call.additional_args,
                call.num_examples,
                lambda arg: arg.repeat_interleave(num_areas, dim=0),
            ),
            torch.arange(call.num_examples * num_areas, device=call.device),
        )
        row_areas = torch.tensor(fractions, device=call.device).repeat(call.num_examples)
        settings, parametrisation = self._started(  # m marks the evidence in every game
            optimization, parametrisation, call, MaskLayout(False), keeps=True
        )
        # every area of an image starts alike
        initial = [
            parametrisation.init([image], make_generator(settings.seed, call.device))[
                0
            ].repeat_interleave(num_areas, dim=0)
        ]
        spatial = image.shape[2:]
        n_iter = settings.n_iter

        def build_problem(batch: slice) -> MaskProblem:
            def objective(
                params: list[Tensor], rows: ExampleRows, step: int
            ) -> tuple[Tensor, Tensor]:
                evaluated = parametrisation.evaluated(params[0], spatial)
                mask = parametrisation.upsample(evaluated, spatial)
                image, reference = rows.inputs[0], rows.references[0]
                shown = []  # m ⊗ x and (1 − m) ⊗ x, Eq. 7 and its deletion form
                if game != "deletion":
                    shown.append(phi.apply(image, mask, reference))
                if game != "preservation":
                    shown.append(phi.apply(image, 1.0 - mask, reference))
                perturbed = torch.cat(shown)
                if jitter and step % 2 == 0:
                    perturbed = perturbed.flip(-1)
                args = map_batch(
                    rows.additional_args,
                    len(rows.indices),
                    lambda arg: arg.repeat(len(shown), *[1] * (arg.dim() - 1)),
                )
                output = call.forward([perturbed], args)
                targets = rows.targets.repeat(len(shown), 1)
                scores = _reward(output, targets, reward, apply_softmax).chunk(len(shown))
                # Φ: the preserved region's score, minus the deleted one's (deletion, dual)
                phi_score = scores[0] if game != "deletion" else 0.0
                if game != "preservation":
                    phi_score = phi_score - scores[-1]
                weight = area_weight * area_weight_growth ** (step / max(n_iter - 1, 1))  # λ
                # Eq. 7–8; the area sorts the mask's evaluated points, the same distribution
                fractions = row_areas[rows.indices] * parametrisation.inside_fraction(
                    evaluated, spatial
                )
                loss = -phi_score + weight * area(evaluated, fractions)
                kept = select_scores(output[: len(rows.indices)], rows.targets, True)
                return loss, kept

            examples = everyone.take(torch.arange(len(row_areas), device=call.device)[batch])
            return MaskProblem(
                [initial[0][batch]],
                objective,
                examples,
                parametrisation.project_,
                parametrisation.cell_values,
            )

        description = f"Extremal Perturbation ({game})"
        params, history = optimize_masks(build_problem, len(row_areas), settings, description)
        evaluated = parametrisation.inside(parametrisation.evaluated(params[0], spatial), spatial)
        # the mean over areas commutes with the (linear) upsampling: take it on the small grid
        per_image = evaluated.view(call.num_examples, num_areas, *evaluated.shape[1:]).mean(dim=1)
        history.low_resolution = (LowResolutionMask(per_image),)
        final = history.low_resolution[0].expand(spatial)
        attribution = final.expand_as(image).to(call.inputs[0].dtype).contiguous()
        return call.result([attribution], history, return_history)


def _reward(output: Tensor, targets: Tensor, reward: str, apply_softmax: bool) -> Tensor:
    """Φ per row: the target's score, or (contrastive) minus the best other class's."""
    if apply_softmax:
        output = output.softmax(dim=1)
    score = select_scores(output, targets, apply_softmax=False)
    if reward == "simple":
        return score
    return score - best_other_score(output, targets)


def _check_arguments(
    areas: Any,
    game: Any,
    reward: Any,
    area_weight: Any,
    area_weight_growth: Any,
    jitter: Any,
) -> tuple[float, ...]:
    """Validate the options and return the areas as a tuple of floats."""
    fractions = (areas,) if isinstance(areas, numbers.Real) else tuple(areas)
    if not fractions or not all(
        isinstance(a, numbers.Real) and not isinstance(a, bool) and 0 < float(a) < 1
        for a in fractions
    ):
        raise ValueError(
            f"areas must be a number or a sequence of numbers in (0, 1), got {areas!r}"
        )
    check_choice("game", game, GAMES)
    check_choice("reward", reward, REWARDS)
    check_at_least("area_weight", area_weight, 0.0, "the weight of the area term")
    check_at_least("area_weight_growth", area_weight_growth, 1e-6, "λ's last ÷ first value")
    check_bool("jitter", jitter)
    return tuple(float(a) for a in fractions)


__all__ = ["ExtremalPerturbation"]
