"""Meaningful Perturbation (Fong & Vedaldi, "Interpretable Explanations of Black Boxes by
Meaningful Perturbation", ICCV 2017)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from captum_masks._engine.call import MaskAttribution, mask_attribute
from captum_masks._engine.checks import (
    check_at_least,
    check_choice,
    check_instance,
    check_non_negative,
    format_inputs,
    per_input_baselines,
)
from captum_masks._engine.compat import BaselineType, TargetType
from captum_masks._engine.layout import MaskLayout
from captum_masks._engine.loop import ExampleRows, MaskProblem, optimize_masks
from captum_masks._engine.model_state import make_generator
from captum_masks._engine.scores import select_scores, target_log_odds
from captum_masks.masks.groups import mask_over_inputs
from captum_masks.masks.upsampled import UpsampledMask
from captum_masks.optimization import SHARED_DEFAULTS, Optimization, OptimizationHistory
from captum_masks.perturbations import (
    Blur,
    Constant,
    Noise,
    Perturbation,
)
from captum_masks.regularizers import total_variation

GAMES = ("deletion", "preservation")
#: what a perturbation's name means for this method
PERTURBATIONS: dict[str, Perturbation] = {
    "blur": Blur(),
    "constant": Constant(),
    "noise": Noise(),
}


class MeaningfulPerturbation(MaskAttribution):
    r"""
    Meaningful Perturbation learns, for each image, the smallest smooth mask whose perturbation
    changes the model's decision [Fong & Vedaldi, ICCV 2017]. In the *deletion game* the mask m
    (1 = keep, 0 = perturb) is optimised to destroy the target's probability while deleting as
    little as possible (Eq. 3–4):

    .. math::
        m^* = \arg\min_{m \in [0,1]^\Lambda} \lambda_1 \operatorname{mean}(1 - m)
              + \lambda_2 \sum_u \|\nabla m(u)\|_\beta^\beta
              - \mathbb{E}_\tau\big[\log\big(1 - \max\{f_c(\Phi(x, M_\tau)),
                f_c(\Phi(x, 0))\}\big)\big]

    where m is a low-resolution mask, M its upsampled and Gaussian-smoothed version, τ a random
    jitter and Φ the perturbation: ``M·x + (1 − M)·reference`` with a blurred copy, a constant or
    noise as reference, and Φ(x, 0) the reference alone: once the perturbed input tells the
    model no more than the reference does, deleting more cannot help. The *preservation game*
    instead keeps the least of the image that still
    preserves the score: minimise λ₁ mean(m) + TV − log f_c(Φ(x, M)).

    Attributions are the importance of each pixel in [0, 1] (higher = more important): 1 − M for
    the deletion game (what had to be deleted), M for the preservation game (what had to be kept),
    expanded over channels to the input's exact shape.

    Differences from the paper, by design: the mask starts uniform
    (:class:`~captum_masks.UpsampledMask`'s ``init_value``) instead of at the paper's search for
    the smallest suppressing circle (``Optimization(start=...)`` starts it from a cheap map and
    then runs 12 iterations, see :class:`~captum_masks.Optimization`). The jitter shifts the
    mask rather than the image (the same expectation up to the border); L1 and TV act on the
    low-resolution mask as in the authors' code. The score is the log-probability of the game's
    outcome, −log(1 − f_c) or −log f_c, instead of ±f_c: a confident small model's probability
    saturates, and with it the gradient that should outweigh the area term. The deletion score
    stops at the reference's, f_c(Φ(x, 0)): below it the mask would only add evidence against
    the target (on a two-class model with a constant reference, push the input past the decision
    boundary), and so take in features the decision never used. λ₁ weighs the mean area instead
    of the sum, so deleting the whole input costs λ₁ at any number of cells (1.0 on the mean:
    the paper's 1e-4 on a 28 × 28 grid is 0.08). The grid, its smoothing, the jitter and the
    blur are the paper's sizes at 224 px as fractions of the input's shortest side; on a vision
    transformer the blur covers at least one patch (the docs' transformers guide). Each example
    stops once its loss has settled (``Optimization.tolerance``) instead of running all 300
    iterations. The docs' MeaningfulPerturbation page measures the departures against the
    paper's settings.

    Args:
        forward_func (Callable): the classifier f of Eq. 3: a model, or any function mapping a
            batch of inputs to scores (N, num_classes, ...). Called as given, so its
            ``model.eval()`` is yours to call when dropout or batch statistics should be frozen.

    Examples::

        >>> mp = MeaningfulPerturbation(ImageClassifier().eval())
        >>> attribution = mp.attribute(images, target=3)          # (N, 3, H, W) in [0, 1]
        >>> attribution, history = mp.attribute(images, return_history=True)
        >>> history.steps                  # iterations each example ran before it settled
        >>> history.probability[history.steps - 1, torch.arange(len(images))]  # at its last step
    """

    default_optimization = Optimization(n_iter=300, lr=0.1, tolerance=3e-3, patience=20).over(
        SHARED_DEFAULTS
    )
    warm_optimization = Optimization(n_iter=12)
    moved_arguments = {
        "mask_factor": "mask=UpsampledMask(factor=...)",
        "mask_sigma": "mask=UpsampledMask(smooth_sigma=...)",
        "mask_init": "mask=UpsampledMask(init_value=...)",
        "jitter": "mask=UpsampledMask(jitter=...)",
        "blur_sigma": "perturbation=Blur(sigma=...)",
        "noise_std": "perturbation=Noise(std=...)",
    }

    @mask_attribute
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: TargetType = None,
        additional_forward_args: Any = None,
        baselines: BaselineType = None,
        feature_mask: Tensor | tuple[Tensor, ...] | None = None,
        *,
        game: str = "deletion",
        perturbation: str | Perturbation | None = None,
        mask: UpsampledMask | None = None,
        l1_weight: float = 1.0,
        tv_weight: float = 1e-2,
        tv_beta: float = 3.0,
        channels_last: bool | None = None,
        apply_softmax: bool = True,
        optimization: Optimization | None = None,
        return_history: bool = False,
    ) -> Tensor | tuple[Tensor, ...] | tuple[Tensor | tuple[Tensor, ...], OptimizationHistory]:
        r"""
        Args:
            inputs (Tensor or tuple[Tensor, ...]): batch first, of any rank: (N, F) rows
                get one mask value per feature; (N, C, L) sequences, (N, C, H, W) images and
                (N, C, D, H, W) volumes a smooth mask over their 1, 2 or 3 spatial axes. A tuple
                gets one mask per tensor. Each example is optimised independently, so a batch
                gives the same masks as one-by-one calls.
            target (int, tuple, Tensor, list or None, optional): the output index to explain,
                in any Captum form: one int (or tuple for multi-dimensional outputs) for every
                example, or a 1-d tensor or list with one entry per example. None explains each
                example's predicted class. Default: None
            additional_forward_args (Any, optional): extra arguments passed to ``forward_func``
                after the inputs; batch-first tensors are sliced with the examples.
                Default: None
            baselines (scalar, sequence, Tensor or tuple, optional): the content of deleted
                regions for the constant perturbation (or the centre of the noise): a scalar,
                one value per channel, or a tensor broadcastable to the input. None uses each
                image's mean colour (0 for rows). A tuple gives one per input tensor. Not used
                by the blur. Default: None
            feature_mask (Tensor or tuple[Tensor, ...], optional): Captum's feature groups:
                integer ids broadcastable to each input (batch axis 1, or N for one grouping per
                example); elements with one id, in any tensor of the tuple, share one mask
                value, e.g. superpixels. The mask's cells are then the groups: the L1 term
                weighs each by its share of the input, and the total variation, defined on a
                grid, is off. Default: None
            game (str, optional): ``"deletion"`` (smallest region whose deletion destroys the
                score) or ``"preservation"`` (smallest region that alone keeps it).
                Default: "deletion"
            perturbation (str, Perturbation or None, optional): the reference shown where the
                mask is 0: ``"blur"`` (:class:`~captum_masks.Blur`: σ₀ is the shortest
                spatial side ÷ 22.4, 10 px at 224 px),
                ``"constant"`` (the ``baselines``), ``"noise"`` (:class:`~captum_masks.Noise`,
                drawn once from the seed) or such an object with other settings. None blurs
                when every input has spatial axes and no ``baselines`` are given, and uses the
                baselines otherwise, as Captum's perturbation methods do; rows cannot be
                blurred. Default: None
            mask (UpsampledMask, optional): the mask's parametrisation (Eq. 4): its grid
                factor δ, smoothing σ, jitter τ and start. None is ``UpsampledMask()``: about
                28 cells along the shortest side, σ = 0.625·δ, jitter δ // 2 (the paper's
                δ = 8, σ = 5, τ < 4 at 224 px). Default: None
            l1_weight (float, optional): λ₁, weight of the mean of the deleted (deletion) or
                kept (preservation) low-resolution mask, each cell or group by its share of
                the input; the paper's 1e-4 on a 28 × 28 grid's sum (0.08 here) lets the
                deletion mask take in background around the object. Default: 1.0
            tv_weight (float, optional): λ₂, weight of the total variation. Default: 1e-2
            tv_beta (float, optional): exponent β ≥ 1 of the total variation. Default: 3
            channels_last (bool, optional): the inputs are (N, L, D) (or (N, H, W, C)): the
                mask spans every axis but the first and last. None reads them channels first and
                warns about 3-D inputs, which may be either. Default: None
            apply_softmax (bool, optional): f_c is the target's softmax probability; set False
                when ``forward_func`` already returns probabilities. Default: True
            optimization (Optimization, optional): the loop's settings
                (:class:`~captum_masks.Optimization`); fields left unset take this method's
                defaults: ``n_iter=300, lr=0.1, optimizer="adam", tolerance=3e-3,
                patience=20`` (each example stops once its loss settles; ``tolerance=None``
                runs the paper's full schedule). Default: None
            return_history (bool, optional): also return an
                :class:`~captum_masks.OptimizationHistory` with the per-step loss and target
                probability of each example. Default: False

        Returns:
            *Tensor* or *tuple[Tensor, ...]* of **attributions**, each with its input's exact
            shape, values in [0, 1], higher = more important; a tensor for a tensor input, a
            tuple for a tuple. With ``return_history=True``, ``(attributions, history)``.

        Examples::

            >>> mp = MeaningfulPerturbation(model)
            >>> deletion = mp.attribute(image, target=281)
            >>> kept = mp.attribute(image, target=281, game="preservation",
            ...                     perturbation="constant", baselines=0.0)
            >>> quick = mp.attribute(image, target=281, optimization=Optimization(n_iter=100))
        """
        check_choice("game", game, GAMES)
        check_non_negative(l1_weight=l1_weight, tv_weight=tv_weight)
        check_at_least("tv_beta", tv_beta, 1.0, "below 1, |∇m|^β has no gradient where m is flat")
        cells = check_instance("mask", mask, UpsampledMask, UpsampledMask())
        settings = self._optimization(optimization)
        layout = MaskLayout(channels_last)
        # shapes, groups and the perturbation are checked before the model runs on the inputs
        formatted = format_inputs(inputs)
        masks = mask_over_inputs(cells, feature_mask, formatted, layout, "MeaningfulPerturbation")
        baselines = per_input_baselines(baselines, len(formatted))
        phi = self._perturbation(perturbation, formatted, baselines, PERTURBATIONS)
        call = self._prepare(inputs, formatted, target, additional_forward_args)
        layout.check(call.inputs, "MeaningfulPerturbation")
        work_inputs = [layout.to_channels_first(x) for x in call.work_inputs]
        references = [
            phi.reference(
                x,
                layout.baseline_to_channels_first(b, x),
                make_generator(settings.seed, call.device),
            )
            for x, b in zip(work_inputs, baselines)
        ]
        deletion = game == "deletion"
        settings, masks = self._started(optimization, masks, call, layout, keeps=not deletion)
        initial = masks.init(work_inputs, make_generator(settings.seed, call.device))
        if deletion:  # the floor of the score: f_c(Φ(x, 0)), everything deleted
            with torch.no_grad():
                deleted = [
                    layout.to_caller(phi.apply(x, torch.zeros_like(x), r))
                    for x, r in zip(work_inputs, references)
                ]
                output = call.forward(deleted, call.additional_args)
                reference_odds = target_log_odds(output, call.targets, apply_softmax)

        def build_problem(batch: slice) -> MaskProblem:
            jitter = make_generator(settings.seed, call.device)  # E_τ: the same τ in any chunk

            def objective(
                params: list[Tensor], rows: ExampleRows, step: int
            ) -> tuple[Tensor, Tensor]:
                jittered = masks.render(params, rows.inputs, rows.indices, jitter)  # M_τ
                perturbed = [  # Φ(x, M_τ), Eq. 2
                    phi.apply(x, m, r) for x, m, r in zip(rows.inputs, jittered, rows.references)
                ]
                output = call.forward(
                    [layout.to_caller(p) for p in perturbed], rows.additional_args
                )
                odds = target_log_odds(output, rows.targets, apply_softmax)
                if deletion:  # gone: −log(1 − f_c(Φ(x, M_τ))), Eq. 3, down to the reference's
                    loss = F.softplus(torch.maximum(odds, reference_odds[rows.indices]))
                else:  # kept: −log f_c(Φ(x, M_τ))
                    loss = F.softplus(-odds)
                deleted_or_kept = [1.0 - m if deletion else m for m in params]
                loss = loss + l1_weight * masks.mean(deleted_or_kept, rows.indices)  # λ₁‖1 − m‖₁
                for grid in masks.grids(params):
                    loss = loss + tv_weight * total_variation(grid, tv_beta)  # λ₂ TV_β(m), Eq. 4
                return loss, select_scores(output, rows.targets, apply_softmax)

            examples = call.examples(batch, work_inputs, references)
            return MaskProblem(
                [p[batch] for p in initial], objective, examples, masks.project_, masks.cell_values
            )

        description = f"Meaningful Perturbation ({game})"
        params, history = optimize_masks(build_problem, call.num_examples, settings, description)
        everyone = torch.arange(call.num_examples, device=call.device)
        final = masks.render(params, work_inputs, everyone)
        # the importance: what had to be deleted (1 − M) or kept (M)
        importances = [(1.0 - m if deletion else m).clamp(0.0, 1.0) for m in final]
        compact = masks.low_resolution(params, work_inputs)
        # the grid is channels first: a channels-last attribution is not its plain expansion
        if compact is not None and not layout.channels_last:
            history.low_resolution = tuple(
                dataclasses.replace(low, complement=deletion) for low in compact
            )
        attributions = [
            layout.to_caller(importance.expand_as(x)).to(caller.dtype).contiguous()
            for importance, x, caller in zip(importances, work_inputs, call.inputs)
        ]
        return call.result(attributions, history, return_history)


__all__ = ["MeaningfulPerturbation"]
