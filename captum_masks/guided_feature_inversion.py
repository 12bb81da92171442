"""Guided Feature Inversion (Du, Liu, Song, Chen & Hu, "Towards Explanation of DNN-based
Prediction with Guided Feature Inversion", KDD 2018)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from captum_masks._engine.call import MaskAttribution, PreparedCall, mask_attribute
from captum_masks._engine.checks import (
    check_choice,
    check_instance,
    check_non_negative,
    check_one_tensor,
    check_positive_int,
    format_inputs,
    map_batch,
    per_input_baselines,
)
from captum_masks._engine.compat import BaselineType, TargetType
from captum_masks._engine.hooks import (
    check_layers,
    image_feature_maps,
    layer_gradient,
    recording,
    run_recording,
    single_outputs,
)
from captum_masks._engine.loop import ExampleRows, MaskProblem, optimize_masks
from captum_masks._engine.model_state import make_generator
from captum_masks._engine.model_structure import patch_size_of
from captum_masks._engine.scores import select_scores
from captum_masks._engine.warm_start import is_automatic
from captum_masks.masks.channel_combination import ChannelCombinationMask
from captum_masks.optimization import (
    SHARED_DEFAULTS,
    Optimization,
    OptimizationHistory,
    halving_every,
)
from captum_masks.perturbations import (
    Blur,
    Constant,
    Noise,
    Perturbation,
)

STAGES = ("target", "inversion")
TARGET_STARTS = ("gradient", "inversion")
ACTIVATIONS: dict[str | None, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu,
    None: lambda features: features,
}
#: what a perturbation's name means for this method (the blur relative to the image, as MP's)
PERTURBATIONS: dict[str, Perturbation] = {
    "blur": Blur(),
    "constant": Constant(),
    "noise": Noise(),
}


@dataclass(frozen=True)
class InversionStage:
    """Stage 1 of :class:`GuidedFeatureInversion` (Algorithm 1), which finds the part of the
    image that reproduces the features of ``layer``; it runs with the call's optimiser and
    learning rate, at a constant rate.

    Args:
        n_iter (int): its iterations. Default: 10
        l1_weight (float): γ, the weight of ω̄ (Eq. 8). Default: 10
        init_weight (float): ω's initial value for every channel. Default: 0.1

    Examples::

        >>> gfi.attribute(images, target=3, inversion=InversionStage(n_iter=20))
    """

    n_iter: int = 10
    l1_weight: float = 10.0
    init_weight: float = 0.1

    def __post_init__(self) -> None:
        check_positive_int("n_iter", self.n_iter)
        check_non_negative(l1_weight=self.l1_weight, init_weight=self.init_weight)


class GuidedFeatureInversion(MaskAttribution):
    r"""
    Guided Feature Inversion explains a CNN with its own features [Du et al., KDD 2018]. The mask
    is a non-negative combination of the feature maps of ``mask_layer`` on the clean input, min-max
    normalised and upsampled (Eq. 6–7), so it follows object parts the network already detects.
    A vision transformer's block is such a layer too: its (N, T, D) output, without the leading
    class and register tokens, is D feature maps on the patch grid (the grid from the model's
    patch side, read as :class:`MeaningfulPerturbation` reads it, or the square grid the token
    count allows):

    .. math::
        m(\omega) = \mathrm{up}\Big(\mathrm{minmax}\big(
            \textstyle\sum_i \omega_i f_i^{l_1}(x)\big)\Big),
        \qquad \Phi(x, m) = m \odot x + (1 - m) \odot p

    with p a blurred copy of x (or a constant or noise). Stage 1 (Algorithm 1) finds the part of
    the image that reproduces the features of ``layer`` (Eq. 8); stage 2 (Algorithm 2) fine-tunes
    ω so that the kept part scores the class and the removed part does not (Eq. 9):

    .. math::
        L_1 = \frac{\|f^{l_0}(\Phi(x, m)) - f^{l_0}(x)\|^2}{\|f^{l_0}(x)\|^2} + \gamma\,\bar\omega,
        \qquad
        L_2 = -p_c(\Phi(x, m)) + \lambda\, p_c(\Phi(x, 1 - m)) + \delta\,\bar\omega
              + \beta\,|s_c(x)|\,\bar m

    Attributions are m in [0, 1] expanded to the input's shape: the class-discriminative mask
    after stage 2, or the class-agnostic salient-object mask of stage 1 with
    ``stage="inversion"``.

    Where this departs from the paper (the docs' GuidedFeatureInversion page measures each):

    - the L1 terms use ω's mean ω̄, not its sum, so γ and δ do not depend on the channel count;
      the inversion error is relative, as in the authors' code;
    - features pass through ``activation`` (ReLU by default), so a layer hooked before its
      activation (EfficientNet's head) behaves like VGG's post-ReLU layers;
    - Eq. 7's min-max normalisation is used (the authors' code divides by the maximum);
    - the learning rate is 0.05 instead of 1e-2: halved every 10 iterations, 1e-2 moves ω too
      little in stage 2 to leave a second object out of the mask;
    - stage 2 keeps Eq. 5's area term, which Eq. 9 drops (ω's scale does not change the min-max
      normalised mask, so δ·ω̄ cannot shrink it), weighted by the class's clean score s_c(x) so
      that it matches p_c's terms for weak and confident classes alike;
    - stage 2 starts from the class's own channel weights, the positive part of its score's mean
      gradient on ``mask_layer`` (Grad-CAM's α) at the scale of stage 1's ω, not from stage 1's
      class-agnostic ω, which keeps a second object that the halving η cannot remove
      (``target_start``).

    Args:
        forward_func (Callable): the model (or a function calling it) returning scores of shape
            (N, num_classes).
        layer (nn.Module): the inversion layer l0, a module that runs in ``forward_func``: a
            convolutional layer, or a vision transformer's block (``model.blocks[-1]`` in timm,
            ``model.vit.layers[-1]`` in Hugging Face).
        mask_layer (nn.Module, optional): the base-filter layer l1 whose feature maps make the
            mask. Default: ``layer``.
        device_ids (list of int, optional): accepted for Captum compatibility with
            ``DataParallel`` models; the hooks record on whichever device runs the layer.

    Examples::

        >>> net = torchvision.models.vgg19().eval()
        >>> gfi = GuidedFeatureInversion(net, layer=net.features[36], mask_layer=net.features[34])
        >>> attribution = gfi.attribute(images, target=281)          # (N, 3, H, W) in [0, 1]
        >>> salient = gfi.attribute(images, stage="inversion")       # class-agnostic
    """

    def __init__(
        self,
        forward_func: Callable,
        layer: nn.Module,
        mask_layer: nn.Module | None = None,
        device_ids: list[int] | None = None,
    ) -> None:
        super().__init__(forward_func)
        mask_layer = layer if mask_layer is None else mask_layer
        check_layers(forward_func, [layer, mask_layer], ["layer", "mask_layer"])
        self.layer = layer
        self.mask_layer = mask_layer
        self.device_ids = device_ids

    default_optimization = Optimization(n_iter=70, lr=0.05, scheduler=halving_every(10)).over(
        SHARED_DEFAULTS
    )
    moved_arguments = {
        "target_iters": "optimization=Optimization(n_iter=...)",
        "lr_step": (
            "optimization=Optimization(scheduler=functools.partial("
            "torch.optim.lr_scheduler.StepLR, step_size=..., gamma=0.5))"
        ),
        "inversion_iters": "inversion=InversionStage(n_iter=...)",
        "inversion_l1": "inversion=InversionStage(l1_weight=...)",
        "init_weight": "inversion=InversionStage(init_weight=...)",
        "blur_sigma": "perturbation=Blur(sigma=...)",
        "noise_std": "perturbation=Noise(std=...)",
    }

    @mask_attribute
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor],
        target: TargetType = None,
        additional_forward_args: Any = None,
        baselines: BaselineType = None,
        *,
        stage: str = "target",
        target_start: str = "gradient",
        perturbation: str | Perturbation = "blur",
        activation: str | None = "relu",
        inversion: InversionStage | None = None,
        target_l1: float = 1.0,
        background_weight: float = 1.0,
        area_weight: float = 4.0,
        apply_softmax: bool = True,
        optimization: Optimization | None = None,
        return_history: bool = False,
    ) -> Tensor | tuple[Tensor] | tuple[Tensor | tuple[Tensor], OptimizationHistory]:
        r"""
        Args:
            inputs (Tensor or 1-tuple of Tensor): images (N, C, H, W), batch first.
            target (int, tuple, Tensor, list or None, optional): the class to explain in stage
                2, in any Captum form; None explains each image's predicted class.
                Default: None
            additional_forward_args (Any, optional): extra arguments passed to ``forward_func``
                after the inputs. Default: None
            baselines (scalar, sequence or Tensor, optional): the content p shown where the mask
                is 0 for the constant perturbation (the centre of the noise); None uses each
                image's mean colour. Default: None
            stage (str, optional): ``"target"`` runs both stages and returns the
                class-discriminative mask; ``"inversion"`` returns the class-agnostic mask of
                stage 1. Default: "target"
            target_start (str, optional): stage 2's first ω: ``"gradient"``, the class's
                positive mean gradient per channel of ``mask_layer`` scaled to stage 1's largest
                weight (stage 1's ω for an image with none), or ``"inversion"``, stage 1's ω
                (Algorithm 2's start). Default: "gradient"
            perturbation (str or Perturbation, optional): p is ``"blur"``
                (:class:`~captum_masks.Blur`: σ is the image's shortest side ÷ 22.4, 10 px at
                224 px, where the paper blurs with a radius of 11), ``"constant"`` or
                ``"noise"``, or such an object with other settings. Default: "blur"
            activation (str or None, optional): applied to both layers' outputs: ``"relu"`` or
                None (use the outputs as they are). Default: "relu"
            inversion (InversionStage, optional): stage 1's iterations, γ and ω's start; None is
                ``InversionStage(n_iter=10, l1_weight=10, init_weight=0.1)``. Default: None
            target_l1 (float, optional): δ, the weight of ω̄ in stage 2. Default: 1
            background_weight (float, optional): λ, the weight of the class score on the
                removed part. Default: 1
            area_weight (float, optional): β, the weight of the mask's mean in stage 2 (Eq.
                5), relative to the target's score on the clean image; 0 gives the paper's
                Eq. 9. Default: 4
            apply_softmax (bool, optional): score with the softmax probability (True) or
                ``forward_func``'s own scores. Default: True
            optimization (Optimization, optional): stage 2's loop
                (:class:`~captum_masks.Optimization`); stage 1 shares its optimiser, rate,
                chunking, progress and seed (the noise's). Fields left unset take this method's
                defaults: ``n_iter=70, lr=0.05, optimizer="adam"``, η halved every 10
                iterations (the paper's η is 1e-2; see above), ``tolerance=None``.
                Default: None
            return_history (bool, optional): also return an
                :class:`~captum_masks.OptimizationHistory` of both stages, one row per
                iteration (stage 1 first). Default: False

        Returns:
            *Tensor* (or a 1-tuple for a 1-tuple input) of **attributions** with the input's
            shape, in [0, 1]; with ``return_history=True``, ``(attributions, history)``.

        Examples::

            >>> gfi = GuidedFeatureInversion(model, layer=model.layer4)
            >>> mask, history = gfi.attribute(image, target=281, return_history=True)
        """
        for name, value, choices in (
            ("stage", stage, STAGES),
            ("activation", activation, tuple(ACTIVATIONS)),
            ("target_start", target_start, TARGET_STARTS),
        ):
            check_choice(name, value, choices)
        check_non_negative(
            target_l1=target_l1, background_weight=background_weight, area_weight=area_weight
        )
        inversion = check_instance("inversion", inversion, InversionStage, InversionStage())
        target_settings = self._optimization(optimization)
        # "auto" is each method's best start: GuidedFeatureInversion's own
        if target_settings.start is not None and not is_automatic(target_settings.start):
            raise ValueError(
                "GuidedFeatureInversion takes no optimization.start: its mask is a combination "
                "of the layer's feature maps, which its first stage finds"
            )
        # stage 1 at a constant rate
        inversion_settings = dataclasses.replace(
            target_settings, n_iter=inversion.n_iter, scheduler=None
        )
        check_one_tensor(inputs, "image tensor")
        formatted = format_inputs(inputs, 2)
        (baseline,) = per_input_baselines(baselines, 1)
        phi = self._perturbation(perturbation, formatted, [baseline], PERTURBATIONS)
        activate = ACTIVATIONS[activation]
        patch = patch_size_of(self.forward_func)

        def features_of(output: Tensor, name: str = "layer") -> Tensor:
            """A layer's output as feature maps (a ViT's tokens on their grid), activated."""
            return activate(image_feature_maps(output, name, len(output), image_shape, patch))

        image_shape = formatted[0].shape[2:]
        call, clean_inverted, clean_basis = self._clean_pass(
            inputs, formatted, target, additional_forward_args, features_of
        )
        (x,) = call.work_inputs
        generator = make_generator(target_settings.seed, call.device)
        stages = _Stages(
            call,
            layer=self.layer,
            features_of=features_of,
            clean_inverted=clean_inverted,
            mask=ChannelCombinationMask(clean_basis, x.shape[2:], inversion.init_weight),
            perturbation=phi,
            reference=phi.reference(x, baseline, generator),
            generator=generator,
            apply_softmax=apply_softmax,
            patch=patch,
        )
        omega, history = optimize_masks(
            lambda batch: stages.inversion(batch, inversion.l1_weight),
            call.num_examples,
            inversion_settings,
            "Guided feature inversion (stage 1)",
            warn_without_signal=False,  # stage 1 does not score the target
        )
        if stage == "target":
            target_weights = (background_weight, target_l1, area_weight)
            start = omega[0]
            if target_start == "gradient":
                start = stages.gradient_start(
                    self.mask_layer, start, target_settings.internal_batch_size
                )
            omega, target_history = optimize_masks(
                lambda batch: stages.target(batch, start, target_weights),
                call.num_examples,
                target_settings,
                "Guided feature inversion (stage 2)",
            )
            history = history.followed_by(target_history)
        history.low_resolution = stages.mask.low_resolution(omega, [x])
        mask = history.low_resolution[0].expand(x.shape[2:])
        attribution = mask.expand_as(x).to(call.inputs[0].dtype).contiguous()
        return call.result([attribution], history, return_history)

    def _clean_pass(
        self,
        inputs: Any,
        formatted: tuple[Tensor, ...],
        target: TargetType,
        additional_forward_args: Any,
        features_of: Callable,
    ) -> tuple[PreparedCall, Tensor, Tensor]:
        """The prepared call and the clean features f^{l0}(x) and f^{l1}(x), in the work dtype.

        They come from the clean forward pass that picks the targets, which runs the whole
        model, so a layer the model calls twice is caught there.
        """
        layers = [self.layer, self.mask_layer]
        with recording(layers) as clean:
            call = self._prepare(inputs, formatted, target, additional_forward_args)
        features = (
            features_of(f, name).to(call.work_dtype)
            for f, name in zip(single_outputs(clean, layers), ("layer", "mask_layer"))
        )
        return (call, *features)


class _Stages:
    """The two optimisation problems of one call, on the clean features they share."""

    def __init__(
        self,
        call: PreparedCall,
        layer: nn.Module,
        features_of: Callable[..., Tensor],
        clean_inverted: Tensor,
        mask: ChannelCombinationMask,
        perturbation: Perturbation,
        reference: Tensor,
        generator: torch.Generator,
        apply_softmax: bool,
        patch: int | None,
    ) -> None:
        self.call, self.layer, self.features_of = call, layer, features_of
        self.patch = patch
        self.clean_inverted, self.mask, self.reference = clean_inverted, mask, reference
        self.perturbation, self.generator = perturbation, generator
        self.clean_energy = clean_inverted.flatten(1).square().sum(dim=1)
        self.apply_softmax = apply_softmax
        clean_output = call.clean_output.detach().to(call.work_dtype)
        self.clean_score = select_scores(clean_output, call.targets, apply_softmax).abs()

    def _examples(self, batch: slice) -> ExampleRows:
        return self.call.examples(batch, self.call.work_inputs, [self.reference])

    def _probability(self, images: Tensor, targets: Tensor, args: tuple | None) -> Tensor:
        return select_scores(self.call.forward([images], args), targets, self.apply_softmax)

    def _shown(self, rows: ExampleRows, mask: Tensor) -> Tensor:
        """Φ(x, m), Eq. 2."""
        return self.perturbation.apply(rows.inputs[0], mask, rows.references[0])

    def inversion(self, batch: slice, inversion_l1: float) -> MaskProblem:
        """Algorithm 1: the part of the image that reproduces the features of ``layer``."""

        def objective(params: list[Tensor], rows: ExampleRows, step: int) -> tuple[Tensor, Tensor]:
            args = rows.additional_args
            (mask,) = self.mask.render(params, rows.inputs, rows.indices)
            kept = self._shown(rows, mask)
            (inverted,) = run_recording(
                lambda: self.call.forward([kept], args), [self.layer], stop_after=True
            )
            error = self.features_of(inverted).to(kept.dtype) - self.clean_inverted[rows.indices]
            energy = self.clean_energy[rows.indices].clamp_min(1e-12)
            relative = error.flatten(1).square().sum(1) / energy
            loss = relative + inversion_l1 * self.mask.mean(params, rows.indices)  # Eq. 8
            with torch.no_grad():
                probability = self._probability(kept, rows.targets, args)
            return loss, probability

        examples = self._examples(batch)
        omega = self.mask.init(examples.inputs, self.generator)
        return MaskProblem(omega, objective, examples, self.mask.project_)

    def gradient_start(self, mask_layer: nn.Module, omega: Tensor, chunk: int | None) -> Tensor:
        """Stage 2's start: the class score's mean gradient per channel of ``mask_layer``, kept
        where positive, scaled to the largest weight of stage 1's ``omega`` (``omega`` itself
        for an image without a positive channel); ``chunk`` images per backward pass."""
        size = chunk or self.call.num_examples
        alpha = torch.cat(
            [
                self._channel_gradient(mask_layer, slice(start, start + size)).to(omega.dtype)
                for start in range(0, self.call.num_examples, size)
            ]
        )
        top = alpha.amax(dim=1, keepdim=True)
        largest = omega.amax(dim=1, keepdim=True)
        scaled = alpha * largest / top.clamp_min(torch.finfo(top.dtype).tiny)
        return torch.where(top > 0, scaled, omega)

    def _channel_gradient(self, mask_layer: nn.Module, batch: slice) -> Tensor:
        """(n, K): the positive part of the class score's mean gradient on each channel of
        ``mask_layer`` (Grad-CAM's α), for the examples in ``batch``."""
        rows = self._examples(batch)
        gradient = layer_gradient(
            lambda: self.call.forward(rows.inputs, rows.additional_args),
            mask_layer,
            lambda output: select_scores(output, rows.targets, False),
        )
        maps = image_feature_maps(
            gradient, "mask_layer", len(gradient), rows.inputs[0].shape[2:], self.patch
        )
        return maps.flatten(2).mean(dim=2).clamp_min(0)

    def target(
        self, batch: slice, omega: Tensor, loss_weights: tuple[float, float, float]
    ) -> MaskProblem:
        """Algorithm 2: ω fine-tuned so the kept part scores the class and the removed part
        does not, starting from stage 1's ``omega``. ``loss_weights`` are λ, δ (Eq. 9) and β
        (Eq. 5)."""
        background_weight, target_l1, area_weight = loss_weights

        def objective(params: list[Tensor], rows: ExampleRows, step: int) -> tuple[Tensor, Tensor]:
            (mask,) = self.mask.render(params, rows.inputs, rows.indices)
            kept = self._shown(rows, mask)  # Eq. 2
            removed = self._shown(rows, 1.0 - mask)  # Eq. 4
            both = torch.cat([kept, removed])  # one forward pass for both
            count, args = len(rows.indices), rows.additional_args
            args_twice = map_batch(args, count, lambda arg: torch.cat([arg, arg]))
            scores = self._probability(both, rows.targets.repeat(2, 1), args_twice)
            kept_score, removed_score = scores.chunk(2)
            loss = -kept_score + background_weight * removed_score  # Eq. 9
            area = self.clean_score[rows.indices] * mask.flatten(1).mean(dim=1)  # Eq. 5
            loss = loss + target_l1 * self.mask.mean(params, rows.indices)
            return loss + area_weight * area, kept_score

        examples = self._examples(batch)
        return MaskProblem([omega[batch]], objective, examples, self.mask.project_)


__all__ = ["GuidedFeatureInversion"]
