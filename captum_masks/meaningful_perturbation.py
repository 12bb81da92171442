"""Meaningful Perturbation (Fong & Vedaldi, "Interpretable Explanations of Black Boxes by
Meaningful Perturbation", ICCV 2017)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from captum.log import log_usage
from torch import Tensor

from captum_masks._base import (
    MaskAttribution,
    check_seed,
    leaves_model_as_found,
    make_generator,
)
from captum_masks._inputs import (
    format_inputs,
    check_at_least,
    check_choice,
    check_non_negative,
    per_input_baselines,
    select_scores,
)
from captum_masks._optimize import (
    ExampleRows,
    MaskProblem,
    OptimizationHistory,
    OptimizationSettings,
    OptimizerType,
    SchedulerType,
    optimize_masks,
)
from captum_masks._groups import resolve_groups
from captum_masks._layout import MaskLayout
from captum_masks.low_resolution import LowResolutionMask
from captum_masks.masks import UpsampledMask
from captum_masks.perturbations import blend, choose_perturbation, make_reference
from captum_masks.regularizers import l1, total_variation

GAMES = ("deletion", "preservation")


class MeaningfulPerturbation(MaskAttribution):
    r"""
    Meaningful Perturbation learns, for each image, the smallest smooth mask whose perturbation
    changes the model's decision [Fong & Vedaldi, ICCV 2017]. In the *deletion game* the mask m
    (1 = keep, 0 = perturb) is optimised to destroy the target's probability while deleting as
    little as possible (Eq. 3–4):

    .. math::
        m^* = \arg\min_{m \in [0,1]^\Lambda} \lambda_1 \|1 - m\|_1
              + \lambda_2 \sum_u \|\nabla m(u)\|_\beta^\beta
              + \mathbb{E}_\tau\big[f_c(\Phi(x, M_\tau))\big]

    where m is a low-resolution mask, M its upsampled and Gaussian-smoothed version, τ a random
    jitter and Φ the perturbation: ``M·x + (1 − M)·reference`` with a blurred copy, a constant or
    noise as reference. The *preservation game* instead keeps the least of the image that still
    preserves the score: minimise λ₁‖m‖₁ + TV − f_c(Φ(x, M)).

    Attributions are the importance of each pixel in [0, 1] (higher = more important): 1 − M for
    the deletion game (what had to be deleted), M for the preservation game (what had to be kept),
    expanded over channels to the input's exact shape.

    Differences from the paper, by design: the mask starts uniform (``mask_init``) instead of at the
    paper's search for the smallest suppressing circle; the jitter shifts the mask rather than the
    image (the same expectation up to the border); L1 and TV act on the low-resolution mask as in
    the authors' code. Each example stops once its loss has settled (``tolerance``): on the
    held-out photos the masks settle in about a third of the 300 iterations (the README's speed
    table) and keep the quality of the full schedule (its calibration table).

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

    @log_usage()
    @leaves_model_as_found
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: Any = None,
        additional_forward_args: Any = None,
        baselines: Any = None,
        feature_mask: Tensor | tuple[Tensor, ...] | None = None,
        game: str = "deletion",
        perturbation: str | None = None,
        n_iter: int = 300,
        lr: float = 0.1,
        optimizer: OptimizerType = "adam",
        scheduler: SchedulerType = None,
        l1_weight: float = 5e-4,
        tv_weight: float = 1e-2,
        tv_beta: float = 3.0,
        mask_factor: int = 8,
        mask_sigma: float = 5.0,
        mask_init: float = 0.5,
        jitter: int = 4,
        blur_sigma: float = 10.0,
        noise_std: float | None = None,
        channels_last: bool | None = None,
        apply_softmax: bool = True,
        tolerance: float | None = 3e-3,
        patience: int = 20,
        internal_batch_size: int | None = None,
        seed: int = 0,
        show_progress: bool = False,
        return_history: bool = False,
    ) -> Tensor | tuple[Tensor, ...] | tuple[Tensor | tuple[Tensor, ...], OptimizationHistory]:
        r"""
        Args:
            inputs (Tensor or tuple[Tensor, ...]): batch first, of any rank: (N, F) rows
                get one mask value per feature; (N, C, L) sequences, (N, C, H, W) images and
                (N, C, D, H, W) volumes a smooth mask over their 1, 2 or 3 spatial axes (the
                README's input table). A tuple gets one mask per tensor. Each example is
                optimised independently, so a batch gives the same masks as one-by-one calls.
            target (int, tuple, Tensor, list or None, optional): the output index to explain,
                in any Captum form: one int (or tuple for multi-dimensional outputs) for every
                example, or a 1-d tensor or list with one entry per example. None explains each
                example's predicted class. Default: None
            additional_forward_args (Any, optional): extra arguments passed to ``forward_func``
                after the inputs; batch-first tensors are sliced with ``internal_batch_size``.
                Default: None
            baselines (scalar, sequence, Tensor or tuple, optional): the content of deleted
                regions for ``perturbation="constant"`` (or the centre of the noise for
                ``"noise"``): a scalar, one value per channel, or a tensor broadcastable to the
                input. None uses each image's mean colour (0 for rows). A tuple gives one per
                input tensor. Not used by ``"blur"``. Default: None
            feature_mask (Tensor or tuple[Tensor, ...], optional): Captum's feature groups:
                integer ids broadcastable to each input (batch axis 1, or N for one grouping per
                example); elements with one id, in any tensor of the tuple, share one mask
                value, e.g. superpixels. With groups the L1 term weighs each group by its share
                of the input, and ``mask_factor``, ``mask_sigma``, ``jitter`` and the total
                variation, defined on a grid, do not apply. Default: None
            game (str, optional): ``"deletion"`` (smallest region whose deletion destroys the
                score) or ``"preservation"`` (smallest region that alone keeps it).
                Default: "deletion"
            perturbation (str, optional): the reference shown where the mask is 0: ``"blur"``
                (Gaussian blur with ``blur_sigma`` along the spatial axes), ``"constant"`` (the
                ``baselines``) or ``"noise"`` (i.i.d. Gaussian, drawn once from ``seed``). None
                blurs when every input has spatial axes and no ``baselines`` are given, and uses
                the baselines (``"constant"``) otherwise, as Captum's perturbation methods do;
                rows cannot be blurred. Default: None
            n_iter (int, optional): the most optimisation steps an example runs (it stops
                earlier once its loss settles, see ``tolerance``). Default: 300
            lr (float, optional): learning rate γ. Default: 0.1
            optimizer (str or callable, optional): ``"adam"``, ``"rmsprop"``, ``"sgd"`` or a
                callable ``(params, lr) -> torch.optim.Optimizer``. Default: "adam"
            scheduler (callable, optional): ``optimizer -> scheduler`` (e.g.
                ``lambda opt: torch.optim.lr_scheduler.StepLR(opt, 100, 0.5)``), stepped once per
                iteration. Default: None
            l1_weight (float, optional): λ₁, weight of the L1 norm of the deleted (deletion) or
                kept (preservation) low-resolution mask. The paper's 1e-4 put less of the mask on
                the object of the calibration photos (see the README's Calibration). Default: 5e-4
            tv_weight (float, optional): λ₂, weight of the total variation. Default: 1e-2
            tv_beta (float, optional): exponent β ≥ 1 of the total variation. Default: 3
            mask_factor (int, optional): upsampling factor δ; the mask has ⌈H/δ⌉ × ⌈W/δ⌉ cells
                (28 × 28 for 224 px). Default: 8
            mask_sigma (float, optional): σ in pixels of the Gaussian smoothing of the
                upsampled mask. Default: 5
            mask_init (float, optional): initial value of every mask cell, in [0, 1].
                Default: 0.5
            jitter (int, optional): the mask is shifted by a random integer in [0, jitter) pixels
                along each axis at every step (0 or 1: off). Default: 4
            blur_sigma (float, optional): σ₀ of the blur perturbation, in pixels. Default: 10
            noise_std (float, optional): standard deviation of the noise perturbation; None uses
                each image's per-channel standard deviation. Default: None
            channels_last (bool, optional): the inputs are (N, L, D) (or (N, H, W, C)): the
                mask spans every axis but the first and last. None reads them channels first and
                warns about 3-D inputs, which may be either. Default: None
            apply_softmax (bool, optional): score the target by its softmax probability (the
                paper's f_c); set False when ``forward_func`` already returns probabilities.
                Default: True
            tolerance (float, optional): early stopping, per example: an example stops once
                its loss has not fallen below its best by more than ``tolerance`` times the
                best's magnitude for ``patience`` steps (a relative tolerance: one value fits
                any loss scale), and
                leaves the batch (the others run on without it; its mask is the one it had).
                ``history.steps`` holds each example's own count. None runs all ``n_iter``
                steps (the paper's schedule). Default: 3e-3
            patience (int, optional): see ``tolerance``. Default: 20
            internal_batch_size (int, optional): optimise at most this many examples at a time
                to bound memory; results do not depend on it.
                Default: None (the whole batch at once)
            seed (int, optional): seed of the call's own random generators (jitter, noise); every
                example draws the same shifts and noise, alone or in any batch, and the global RNG
                is never used nor changed. Default: 0
            show_progress (bool, optional): show a progress bar over the iterations.
                Default: False
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
        """
        _check_arguments(
            game,
            tv_beta,
            mask_init,
            seed,
            non_negative={
                "l1_weight": l1_weight,
                "tv_weight": tv_weight,
                "blur_sigma": blur_sigma,
                "mask_sigma": mask_sigma,
            },
        )
        settings = OptimizationSettings(  # the fields in order, named alike
            n_iter, lr, optimizer, scheduler, tolerance, patience, internal_batch_size,
            show_progress, f"Meaningful Perturbation ({game})",
        )
        layout = MaskLayout(channels_last)
        # shapes, groups and the perturbation are checked before the model runs on the inputs
        formatted = format_inputs(inputs)
        groups = resolve_groups(feature_mask, formatted, "MeaningfulPerturbation")
        baselines = per_input_baselines(baselines, len(formatted))
        perturbation = choose_perturbation(perturbation, formatted, baselines)
        call = self._prepare(inputs, target, additional_forward_args, formatted=formatted)
        layout.check(call.inputs, "MeaningfulPerturbation")
        work_inputs = [layout.to_channels_first(x) for x in call.work_inputs]
        references = [
            make_reference(
                x,
                perturbation,
                make_generator(seed, call.device),
                layout.baseline_to_channels_first(b, x),
                blur_sigma,
                noise_std,
            )
            for x, b in zip(work_inputs, baselines)
        ]
        # with groups the mask has one value per group; otherwise it is smooth over the grid
        parametrisation = UpsampledMask(mask_factor, mask_sigma, jitter) if groups is None else None
        # deletion minimises f_c, preservation maximises it (Eq. 3 and its symmetric form)
        score_sign = 1.0 if game == "deletion" else -1.0

        def masks(
            params: Sequence[Tensor], rows: ExampleRows, jitter_generator=None
        ) -> list[Tensor]:
            """M_τ of each input of ``rows``, channels first; jittered when given a generator."""
            if groups is not None:
                expanded = groups.expand(params[0], rows.indices)
                return [layout.to_channels_first(m) for m in expanded]
            return [
                parametrisation(m, x.shape[2:], jitter_generator)
                for m, x in zip(params, rows.inputs)
            ]

        def build_problem(batch: slice) -> MaskProblem:
            jitter_generator = make_generator(seed, call.device)  # E_τ: the same τ in any chunk

            def objective(params: Sequence[Tensor], rows: ExampleRows) -> tuple[Tensor, Tensor]:
                jittered = masks(params, rows, jitter_generator)
                perturbed = [  # Φ(x, M_τ), Eq. 2
                    blend(x, mask, r) for mask, x, r in zip(jittered, rows.inputs, rows.references)
                ]
                output = call.forward(
                    [layout.to_caller(p) for p in perturbed], rows.additional_args
                )
                probability = select_scores(output, rows.targets, apply_softmax)
                loss = score_sign * probability  # f_c(Φ(x, M_τ)), Eq. 3
                for m in params:
                    deleted_or_kept = 1.0 - m if game == "deletion" else m
                    if groups is None:
                        loss = loss + l1_weight * l1(deleted_or_kept)  # λ₁‖1 − m‖₁, Eq. 4
                        loss = loss + tv_weight * total_variation(m, tv_beta)  # λ₂ TV_β(m)
                    else:  # a group weighs its share of the input; no grid, no TV
                        area = groups.weighted_mean(deleted_or_kept, rows.indices)
                        loss = loss + l1_weight * area * groups.used(rows.indices)
                return loss, probability

            examples = call.examples(batch, work_inputs, references)
            if groups is None:
                params = [parametrisation.init(x, fill=mask_init) for x in examples.inputs]
            else:
                shape = (len(examples.indices), groups.count)
                params = [examples.inputs[0].new_full(shape, mask_init)]
            return MaskProblem(params, objective, examples, project=UpsampledMask.clamp_)

        params, history = optimize_masks(build_problem, call.num_examples, settings)
        if groups is None:
            # the importance (1 − M for deletion) from each input's low-resolution grid
            low_resolution = [
                LowResolutionMask(m, "smooth", mask_factor, mask_sigma, game == "deletion")
                for m in params
            ]
            importances = [low.expand(x.shape[2:]) for low, x in zip(low_resolution, work_inputs)]
            # the grid is channels first: a channels-last attribution is not its plain expansion
            history.low_resolution = None if layout.channels_last else tuple(low_resolution)
        else:
            everyone = call.examples(slice(None), work_inputs, references)
            importances = [
                (1.0 - mask if game == "deletion" else mask).clamp(0.0, 1.0)
                for mask in masks(params, everyone)
            ]
        attributions = [
            layout.to_caller(importance.expand_as(x)).to(caller.dtype).contiguous()
            for importance, x, caller in zip(importances, work_inputs, call.inputs)
        ]
        return call.result(attributions, history, return_history)


def _check_arguments(
    game: str,
    tv_beta: Any,
    mask_init: Any,
    seed: Any,
    non_negative: dict[str, Any],
) -> None:
    check_seed(seed)
    check_choice("game", game, GAMES)
    check_non_negative(**non_negative)
    check_at_least("tv_beta", tv_beta, 1.0, "below 1, |∇m|^β has no gradient where m is flat")
    if not 0.0 <= mask_init <= 1.0:
        raise ValueError(f"mask_init must be in [0, 1], got {mask_init!r}")


__all__ = ["MeaningfulPerturbation"]
