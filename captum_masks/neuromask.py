"""NeuroMask (Alzantot, Widdicombe, Julier & Srivastava, "NeuroMask: Explaining Predictions of
Deep Neural Networks through Mask Learning", 2019)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from captum_masks._engine.call import MaskAttribution, mask_attribute
from captum_masks._engine.checks import (
    check_instance,
    check_non_negative,
    format_inputs,
    per_input_baselines,
)
from captum_masks._engine.compat import BaselineType, TargetType
from captum_masks._engine.layout import MaskLayout
from captum_masks._engine.loop import ExampleRows, MaskProblem, optimize_masks
from captum_masks._engine.model_state import make_generator
from captum_masks._engine.model_structure import patch_size_of
from captum_masks._engine.scores import select_scores, target_log_odds
from captum_masks.masks.groups import GroupedMask, mask_over_inputs
from captum_masks.masks.sigmoid import SigmoidMask
from captum_masks.optimization import SHARED_DEFAULTS, Optimization, OptimizationHistory
from captum_masks.perturbations import blend, constant_reference
from captum_masks.regularizers import Laplacian


class NeuroMaskAttr(MaskAttribution):
    r"""
    NeuroMask learns, for each input, a mask m = σ(W / T) whose product with the input keeps the
    model's prediction, while being sparse and smooth [Alzantot et al., 2019, Algorithm 1]:

    .. math::
        W^* = \arg\min_W\; \lambda_p\, \mathrm{CE}\big(c, f(\bar x)\big)
              + \lambda_{sp}\, \|W + \tau\|_1 + \lambda_{sm}\, \|W \circledast \nabla^2\|_1,
        \qquad \bar x = m \cdot x + (1 - m) \cdot b

    where c is the explained class, b the baseline (0 by default: the paper's pure
    multiplication x̄ = m·x), ∇² a discrete Laplacian and τ the offset that pulls unused weights
    to −τ, where σ(−τ / T) ≈ 0. The mask has one channel and spans the spatial axes: (H, W) of
    (N, C, H, W) images, with one weight per block of pixels
    (:class:`~captum_masks.SigmoidMask`'s ``block``), the length L of
    (N, C, L) sequences, or of (N, L, D) sequences with ``channels_last=True``, (D, H, W) of
    volumes; rows (N, F) and ``feature_mask`` groups get one weight each. Attributions are m
    expanded to the input's exact shape, in [0, 1], higher = more important. Token ids are
    explained through their embedding with :class:`~captum_masks.LayerNeuroMask`.

    Where this departs from the paper, and why:

    - ``init_range`` is separate from τ, and the defaults are not the authors' ImageNet setting
      (init U(−10, 10), T = 0.3, RMSProp lr 0.03, τ = 10, squared 5 × 5 Laplacian, 400
      iterations): weights drawn from U(−10, 10) and divided by 0.3 start saturated, where the
      sigmoid has no gradient, and the mask stays at chance on a real model; the defaults are
      U(−1, 1), T = 1.5, lr 0.2.
    - The sparseness and smoothness terms are sums over the mask's cells, as in the paper's
      equations (the authors' code takes means), with λ_sp = 0.011 and λ_sm = 1e-5 per cell.
      RMSProp moves each weight by about ``lr`` whatever its gradient's size, so a weight
      follows the sign of its own balance between the cross-entropy and its pull towards −τ;
      with a sum that pull is the same for every number of cells (rows, tokens, sequences,
      volumes, images of any size), where a mean divides it by the number of cells. At 224 px
      (3136 cells) this is a mean weighted 35 and 0.03, a hundred times the authors' λ_sp of
      0.35 on the mean: at 0.35 the pull is weaker than the cross-entropy's gradient even once
      the probability has saturated, and on photos with two objects much of the mask lies on
      the other object.
    - 100 iterations instead of 300: at λ_sp = 0.011 the weights reach −τ within about 100
      steps (22 from a warm start, ``Optimization(start=...)``, where W starts at T·logit of
      the start's map).
      Early stopping (``Optimization.tolerance``) stays off by default: the weights' tail keeps
      the loss falling slowly, so the relative test fires only near the end and saves nothing.
    - T = 1.5: a sharper mask puts more of it on the explained object, but T = 1 points at the
      wrong shape more often on small images, and on short token sequences can leave a mask at
      0 everywhere, evidence included. τ = 20 (the paper's) gives σ(−τ / T) ≈ 2e-6.
    - On images and volumes, one weight per block of positions rather than per position
      (``SigmoidMask.block``: about 56 weights along the shortest side; 4 × 4 blocks at 224 px,
      one weight per position up to 84 positions). A pixel mask keeps a speckle of single
      pixels wherever the model responds, and next to a second object that speckle can land on
      it; blocks are too coarse for that. Sequences (whose positions may be tokens), rows and
      feature groups keep one weight each. A vision transformer (its patch side read from the
      model, see the docs' transformers guide) gets one weight per patch: it reads each patch
      as one token.

    The docs' NeuroMaskAttr page measures each departure against the paper's setting.

    Args:
        forward_func (Callable): the network F of Algorithm 1, or any function returning scores
            (N, num_classes, ...) for a batch; its train or eval mode is left as you set it.

    Examples::

        >>> net = ImageClassifier().eval()
        >>> neuromask = NeuroMaskAttr(net)
        >>> attribution = neuromask.attribute(images, target=3)   # (N, 3, H, W) in [0, 1]
        >>> tokens = neuromask.attribute(embeddings, target=1, channels_last=True)  # (N, L, D)
    """

    default_optimization = Optimization(n_iter=100, lr=0.2, optimizer="rmsprop").over(
        SHARED_DEFAULTS
    )
    warm_optimization = Optimization(n_iter=22)
    moved_arguments = {
        "temperature": "mask=SigmoidMask(temperature=...)",
        "init_range": "mask=SigmoidMask(init_range=...)",
        "mask_factor": "mask=SigmoidMask(block=...)",
        "smooth_kernel_size": "smoothness=Laplacian(kernel_size=...)",
        "squared_smoothness": "smoothness=Laplacian(squared=...)",
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
        mask: SigmoidMask | None = None,
        tau: float = 20.0,
        pred_weight: float = 0.4,
        sparse_weight: float | None = None,
        smooth_weight: float = 1e-5,
        smoothness: Laplacian | None = None,
        channels_last: bool | None = None,
        apply_softmax: bool = True,
        optimization: Optimization | None = None,
        return_history: bool = False,
    ) -> Tensor | tuple[Tensor, ...] | tuple[Tensor | tuple[Tensor, ...], OptimizationHistory]:
        r"""
        Args:
            inputs (Tensor or tuple[Tensor, ...]): batch first, of any rank: (N, F) rows get
                one weight per feature; (N, C, L) sequences, (N, C, H, W) images and
                (N, C, D, H, W) volumes one per position (or block) of their spatial axes, and
                (N, L, D) with ``channels_last=True`` one per position L. A tuple gets one mask
                per tensor. Each example is optimised independently, so a batch gives the same
                masks as one-by-one calls.
            target (int, tuple, Tensor, list or None, optional): the output index to explain,
                in any Captum form. None explains each example's predicted class on the
                unmasked input (the paper's arg max of y). Default: None
            additional_forward_args (Any, optional): extra arguments passed to ``forward_func``
                after the inputs. Default: None
            baselines (scalar, sequence, Tensor or tuple, optional): what a masked-out position
                becomes: a scalar, one value per channel, or a tensor broadcastable to the input
                (in the input's own layout). A tuple gives one per input tensor. None is 0 in the
                caller's input space, the paper's x̄ = m·x. Default: None
            feature_mask (Tensor or tuple[Tensor, ...], optional): Captum's feature groups:
                integer ids broadcastable to each input (batch axis 1, or N for one grouping per
                example); elements with one id, in any tensor of the tuple, share one weight.
                The Laplacian, defined on a grid, is then off. Default: None
            mask (SigmoidMask, optional): the parametrisation m = σ(W / T): its temperature T,
                the range W starts in, and the block of positions each weight covers. None is
                ``SigmoidMask(temperature=1.5, init_range=(-1, 1), block=None)``: about 56
                weights along the shortest side of images and volumes (4 × 4 blocks at 224 px,
                one weight per position up to 84), one per position on sequences and per
                feature on rows.
                A block other than None or 1 with ``feature_mask`` is an error: the groups set
                the mask's resolution. Default: None
            tau (float, optional): τ, the value the sparseness term pulls W towards.
                Default: 20
            pred_weight (float, optional): λ_p, weight of the cross-entropy. Default: 0.4
            sparse_weight (float, optional): λ_sp, weight of ``Σ |W + τ|`` over the mask's
                cells (a group counts as many cells as its share of the input): each weight's
                pull towards −τ. None is 0.011 on a grid of positions, the same for any number
                of cells, and 0.035 / G with G feature groups (rows, ``feature_mask``), which
                have no size to follow. Default: None
            smooth_weight (float, optional): λ_sm, weight of the summed Laplacian response.
                Default: 1e-5
            smoothness (Laplacian, optional): the smoothness term's kernel, 3 (1-D [1, −2, 1]
                or 2-D with centre −8) or 5 (2-D, centre −24, the authors' ImageNet kernel), and
                whether its response is squared (the authors' code) rather than taken in
                absolute value (the paper's L1). None is ``Laplacian(kernel_size=3,
                squared=False)``. Default: None
            channels_last (bool, optional): the inputs are (N, L, D) (or (N, H, W, C)): the
                mask spans every axis but the first and last. None reads them channels first and
                warns about 3-D inputs, which may be either. Default: None
            apply_softmax (bool, optional): ``forward_func`` returns logits (True) or
                probabilities (False). Default: True
            optimization (Optimization, optional): the loop's settings
                (:class:`~captum_masks.Optimization`); fields left unset take this method's
                defaults: ``n_iter=100, lr=0.2, optimizer="rmsprop", tolerance=None`` (steps
                T and rate α of Algorithm 1; the seed draws the initial W, one draw shared by
                the examples). Default: None
            return_history (bool, optional): also return an
                :class:`~captum_masks.OptimizationHistory` with the per-step loss and the
                probability of the explained class on the masked input. Default: False

        Returns:
            *Tensor* or *tuple[Tensor, ...]* of **attributions**: the mask m expanded to each
            input's exact shape, in [0, 1]; a tensor for a tensor input, a tuple for a tuple.
            With ``return_history=True``, ``(attributions, history)``.

        Examples::

            >>> neuromask = NeuroMaskAttr(model)
            >>> mask = neuromask.attribute(image)               # explains the predicted class
            >>> mask, history = neuromask.attribute(image, target=0, return_history=True)
            >>> history.probability[:, 0]   # the target's probability at every step
            >>> pixels = neuromask.attribute(image, mask=SigmoidMask(block=1))  # per pixel
        """
        check_non_negative(
            pred_weight=pred_weight,
            sparse_weight=0.0 if sparse_weight is None else sparse_weight,
            smooth_weight=smooth_weight,
            tau=tau,
        )
        cells = check_instance("mask", mask, SigmoidMask, SigmoidMask())
        patch = patch_size_of(self.forward_func)
        if cells.block is None and patch is not None and feature_mask is None:
            # a vision transformer reads each patch as one token: one weight per patch
            cells = SigmoidMask(cells.temperature, cells.init_range, block=patch)
        smoother = check_instance("smoothness", smoothness, Laplacian, Laplacian())
        if cells.block not in (None, 1) and feature_mask is not None:
            raise ValueError(
                "mask.block applies to the mask on the input's positions; with feature_mask the "
                "groups set the mask's resolution, so leave block at None or 1 "
                f"(got {cells.block})"
            )
        settings = self._optimization(optimization)
        layout = MaskLayout(channels_last)
        # shapes and groups are checked before the model runs on the inputs
        formatted = format_inputs(inputs)
        masks = mask_over_inputs(cells, feature_mask, formatted, layout, "NeuroMaskAttr")
        # groups by default share 0.035 (0.035 / G each: the mean over the example's groups)
        shared = sparse_weight is None and isinstance(masks, GroupedMask)
        sparseness_over = masks.mean if shared else masks.total
        if sparse_weight is None:
            sparse_weight = GROUP_SPARSE_WEIGHT if shared else SPARSE_WEIGHT
        call = self._prepare(inputs, formatted, target, additional_forward_args)
        layout.check(call.inputs, "NeuroMaskAttr")
        images = [layout.to_channels_first(x) for x in call.work_inputs]
        references = [
            constant_reference(x, 0.0 if b is None else layout.baseline_to_channels_first(b, x))
            for x, b in zip(images, per_input_baselines(baselines, len(images)))
        ]
        settings, masks = self._started(optimization, masks, call, layout, keeps=True)
        initial = masks.init(images, make_generator(settings.seed, call.device))

        def build_problem(batch: slice) -> MaskProblem:
            def objective(
                params: list[Tensor], rows: ExampleRows, step: int
            ) -> tuple[Tensor, Tensor]:
                masked = [  # x̄ = σ(W / T)·x + (1 − σ(W / T))·b, Algorithm 1 line 5
                    layout.to_caller(blend(x, m, b))
                    for x, m, b in zip(
                        rows.inputs,
                        masks.render(params, rows.inputs, rows.indices),
                        rows.references,
                    )
                ]
                output = call.forward(masked, rows.additional_args)
                odds = target_log_odds(output, rows.targets, apply_softmax)
                loss = pred_weight * F.softplus(-odds)  # λ_p·L_pred = −λ_p·log y_c, line 8
                sparseness = sparseness_over([w + tau for w in params], rows.indices)
                loss = loss + sparse_weight * sparseness  # λ_sp·L_sparse, line 9
                for grid in masks.grids(params):  # λ_sm·L_smooth, line 10
                    loss = loss + smooth_weight * smoother(grid)
                return loss, select_scores(output, rows.targets, apply_softmax)

            examples = call.examples(batch, images, references)
            return MaskProblem(
                [w[batch] for w in initial], objective, examples, masks.project_, masks.cell_values
            )

        weights, history = optimize_masks(build_problem, call.num_examples, settings, "NeuroMask")
        everyone = torch.arange(call.num_examples, device=call.device)
        attributions = tuple(
            layout.to_caller(m.expand_as(x)).to(caller.dtype).contiguous()
            for m, x, caller in zip(masks.render(weights, images, everyone), images, call.inputs)
        )
        return call.result(attributions, history, return_history)


#: λ_sp per cell of a grid (the class docstring says why)
SPARSE_WEIGHT = 0.011
#: λ_sp shared by G feature groups (0.035 / G each): a feature or group has no size to scale
#: with, and a pull per group as strong as a grid cell's outweighs the evidence of most of the
#: breast-cancer rows' 30 features (the docs' input-kinds page)
GROUP_SPARSE_WEIGHT = 0.035


__all__ = ["NeuroMaskAttr"]
