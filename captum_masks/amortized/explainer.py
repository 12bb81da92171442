"""Amortised explanation: a network trained once that gives every class's mask in one forward pass
(Stalder, Pittet, Gerber & Zimmermann, "What You See is What You Classify: Black Box Attributions",
NeurIPS 2022; Phillips, Schmidt & Stevens, "Explanatory Masks for Neural Network
Interpretability")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from captum.log import log_usage
from torch import Tensor, nn

from captum_masks._engine.call import MaskAttribution, work_dtype
from captum_masks._engine.checks import (
    check_choice,
    check_one_tensor,
    check_positive_ints,
    format_inputs,
    run_forward,
)
from captum_masks._engine.compat import TargetType, _format_output
from captum_masks._engine.hooks import (
    check_layers,
    last_feature_map,
    replacing_output,
    run_recording,
)
from captum_masks._engine.layout import MaskLayout
from captum_masks._engine.model_state import leaves_model_as_found, seeded_global_rng
from captum_masks._engine.user_warnings import warn_user
from captum_masks.amortized.fitting import FittingMixin
from captum_masks.amortized.networks import MaskNet, checked_logits, deeplab_explainer
from captum_masks.amortized.persistence import PersistenceMixin
from captum_masks.amortized.training import evaluating
from captum_masks.masks.interpolation import upsample_linearly

TARGET_SOURCES = ("labels", "predictions")
#: ``feature_layer``'s default: the classifier's last feature map
AUTO_FEATURES = "auto"
#: wider maps (an ImageNet network's head) are left out of the automatic choice
AUTO_MAX_CHANNELS = 256


class AmortizedExplainer(FittingMixin, PersistenceMixin, MaskAttribution):
    r"""
    A second network, the *explainer*, learns to output a mask for every class of a frozen
    classifier in one forward pass, so explaining a new input costs one pass of the explainer
    instead of hundreds of optimisation steps [Stalder et al. 2022; Phillips et al.].

    The explainer maps an input (and optionally the classifier's features at ``feature_layer``,
    Phillips et al.'s design) to class logits S (N, C, \*spatial); the mask of class c is
    σ(S_c). :meth:`fit` trains it; :meth:`attribute` returns the target class's mask with the
    input's shape; :meth:`explain_all` returns every class's mask.

    Training loss ``"stalder"`` (Eq. 1–8), with m = σ(max_{c∈Y} S_c) the target mask over the
    image's classes Y and n = σ(max_{c∉P} S_c) the mask of the classes P it does not hold:

    .. math::
        L = L_c(f(m \odot x), Y) + \lambda_e \tfrac{1}{C}\textstyle\sum_c \tilde p_c \log \tilde p_c
            + \lambda_a \big(0.1\,A(m) + 0.3\,A(n) + \overline{B(\sigma(S_c))}_{c \in Y}\big)
            + \lambda_{tv} \big(TV(m) + TV(n)\big)

    with L_c binary cross-entropy over classes (multi-label, Eq. 2) or cross-entropy
    (single-label), p̃ the softmax on the complement (1 − m) ⊙ x (Eq. 3), A the mean mask value
    (weighted 0.1 and 0.3 as in the authors' code; Eq. 6 weighs both 1), B the area bounds
    (Eq. 4–6) and TV the anisotropic total variation per pixel (Eq. 7–8).
    By default :meth:`fit` trains on one row per (input, class of that input), with Y that one
    class, so a class's mask must keep its own evidence and leave out the other classes'
    (``separate_classes``; Eq. 2 as written takes all of an input's classes at once).
    Loss ``"phillips"``: the classification loss on m ⊙ x plus L1 and L2 penalties on m.
    "Masked out" means the baseline (0 by default: the mask multiplies the input, as in both
    papers).

    The classifier stays frozen and untouched: no gradient reaches its parameters and its
    ``training`` flag is never changed (put it in eval mode yourself, as for any Captum method).
    The explainer network follows the inputs' device and dtype.

    Args:
        forward_func (Callable): the classifier (or a function calling it), returning
            (N, num_classes) scores (logits).
        num_classes (int): number of classes of the classifier.
        explainer (nn.Module or str, optional): ``None`` for the compact :class:`MaskNet`
            (built on first use from the input's shape), ``"deeplabv3_resnet50"`` for Stalder et
            al.'s network (images with 3 channels), or any module mapping the explainer's input
            to (N, num_classes, \*spatial) logits.
        multilabel (bool, optional): several classes per input (sigmoid scores, BCE) instead of
            one (softmax, cross-entropy). Default: False
        feature_layer (nn.Module, "auto" or None, optional): a module of the classifier whose
            output on the clean input (channels first, any resolution) is fed to the explainer
            next to the input (Phillips et al.'s design): the compact :class:`MaskNet` projects
            it to ``width`` channels with a 1 × 1 convolution and resizes the projection to the
            input; any other network gets it resized to the input and concatenated to the input
            as extra channels. ``"auto"
            takes the classifier's last feature map: the last module, run once, whose output has
            the input's spatial axes, each longer than 1, and at most 256 channels (for the
            compact :class:`MaskNet` only, and not with ``layer`` or channels-last sequences,
            where it means None). The classifier's own features tell the explainer which object
            is which class from the first step, so the masks become class-specific in far fewer
            epochs (measured in the README). None: the input alone, as in Stalder et al.
            Default: "auto"
        channels_last (bool, optional): inputs (or ``layer``'s output) are (N, L, D) sequences
            with the features last; the mask spans the positions. None: True for an
            ``nn.Embedding`` layer, False otherwise. Default: None
        width (int, optional): width of the default :class:`MaskNet`. Default: 16
        depth (int, optional): number of halvings of the default :class:`MaskNet`. Default: 2
        baselines (float, optional): the value masked-out input takes. Default: 0
        layer (nn.Module, optional): explain through this module's output instead of the
            input, in Captum's Layer convention: the explainer sees and masks the output of
            ``layer`` (for a token-id model, its ``nn.Embedding``: one mask value per token),
            the classifier runs on the caller's inputs with that output swapped in, and
            :meth:`attribute` returns attributions shaped like it. Inputs may then be token
            ids. Default: None

    Examples::

        >>> explainer = AmortizedExplainer(model, num_classes=4, multilabel=True)
        >>> history = explainer.fit(train_loader, val_loader, epochs=10)
        >>> mask = explainer.attribute(images, target=2)        # (N, 3, H, W) in [0, 1]
        >>> every_class = explainer.explain_all(images)         # (N, 4, H, W)
        >>> explainer.save("explainer.pt")
        >>> again = AmortizedExplainer.load("explainer.pt", model)
    """

    def __init__(
        self,
        forward_func: Callable,
        num_classes: int,
        explainer: nn.Module | str | None = None,
        multilabel: bool = False,
        feature_layer: nn.Module | str | None = AUTO_FEATURES,
        channels_last: bool | None = None,
        width: int = 16,
        depth: int = 2,
        baselines: float = 0.0,
        layer: nn.Module | None = None,
    ) -> None:
        super().__init__(forward_func)
        check_positive_ints(num_classes=num_classes, width=width, depth=depth)
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if not isinstance(multilabel, bool):
            raise TypeError(f"multilabel must be a bool, got {type(multilabel).__name__}")
        if explainer is not None and not isinstance(explainer, (nn.Module, str)):
            raise TypeError(
                "explainer must be None, 'deeplabv3_resnet50' or an nn.Module, got "
                f"{type(explainer).__name__}"
            )
        if isinstance(explainer, str):
            check_choice("explainer", explainer, ("deeplabv3_resnet50",))
        if not isinstance(baselines, (int, float)) or isinstance(baselines, bool):
            raise TypeError(f"baselines must be a number, got {type(baselines).__name__}")
        if isinstance(feature_layer, str):
            check_choice("feature_layer", feature_layer, (AUTO_FEATURES,))
            automatic = explainer is None and layer is None and isinstance(forward_func, nn.Module)
            feature_layer = feature_layer if automatic else None
        elif feature_layer is not None:
            check_layers(forward_func, [feature_layer], ["feature_layer"])
        if layer is not None:
            check_layers(forward_func, [layer], ["layer"])
            if feature_layer is not None:
                raise ValueError(
                    "layer and feature_layer cannot be combined: with layer the explainer "
                    "already sees the model's own representation"
                )
        self.num_classes = num_classes
        self.multilabel = multilabel
        self.feature_layer = feature_layer
        self.layer = layer
        if channels_last is None:  # an embedding's (N, L, D) output: mask the tokens
            channels_last = isinstance(layer, nn.Embedding)
        self.layout = MaskLayout(channels_last)
        self.width = width
        self.depth = depth
        self.baselines = float(baselines)
        self._kind = "custom" if isinstance(explainer, nn.Module) else explainer or "compact"
        self.explainer: nn.Module | None = explainer if isinstance(explainer, nn.Module) else None
        self._input_shape: tuple[int, int] | None = None  # (input channels, spatial dims)
        # a network the caller hands over may be trained; the default one is not until fit or load
        self._trained = isinstance(explainer, nn.Module)
        self._seed = 0

    # ------------------------------------------------------------------ explainer input
    def _features(self, x: Tensor) -> Tensor | None:
        """The classifier's features of ``x`` at ``feature_layer``, at their own resolution."""
        if isinstance(self.feature_layer, str):  # "auto", resolved on the first input
            self.feature_layer = None if self.layout.channels_last else self._last_feature_map(x)
        if self.feature_layer is None:
            return None
        with torch.no_grad():
            (features,) = run_recording(
                lambda: self.forward_func(self.layout.to_caller(x)),
                [self.feature_layer],
                stop_after=True,
            )
        if features.dim() != x.dim():
            raise ValueError(
                f"feature_layer output has shape {tuple(features.shape)}, which cannot be "
                f"resized to inputs of shape {tuple(x.shape)}: it needs the same number of axes "
                "(N, C, *spatial), channels first"
            )
        return features

    def _last_feature_map(self, x: Tensor) -> nn.Module | None:
        """The module ``feature_layer="auto"`` stands for, found on one input."""
        return last_feature_map(
            self.forward_func,
            lambda: self.forward_func(self.layout.to_caller(x[:1])),
            x.shape[2:],
            AUTO_MAX_CHANNELS,
        )

    def _explainer_inputs(self, x: Tensor) -> tuple[Tensor, ...]:
        """The explainer network's arguments in the work dtype (float32 for half precision): ``x``
        and the classifier's features, native for MaskNet, else resized and concatenated."""
        features = self._features(x)
        x = x.to(work_dtype(x.dtype))  # the explainer trains in full precision
        if features is None:
            return (x,)
        features = features.to(x.dtype)
        if self._kind == "compact":
            return x, features
        return (torch.cat([x, upsample_linearly(features, x.shape[2:])], dim=1),)

    def _build(self, explainer_inputs: tuple[Tensor, ...], input_channels: int) -> None:
        """Build the default explainer for these inputs (once), on their device and dtype."""
        explainer_input = explainer_inputs[0]
        spatial_dims = explainer_input.dim() - 2
        if self.explainer is None:
            with seeded_global_rng(self._seed):
                if self._kind == "deeplabv3_resnet50":
                    if spatial_dims != 2 or explainer_input.shape[1] != 3:
                        raise ValueError(
                            "explainer='deeplabv3_resnet50' takes (N, 3, H, W) images without "
                            f"feature_layer; got an explainer input of shape "
                            f"{tuple(explainer_input.shape)}"
                        )
                    self.explainer = deeplab_explainer(self.num_classes)
                else:
                    self.explainer = MaskNet(
                        explainer_input.shape[1],
                        self.num_classes,
                        spatial_dims,
                        self.width,
                        self.depth,
                        feature_channels=sum(f.shape[1] for f in explainer_inputs[1:]),
                    )
            self.explainer.eval()  # fit switches it to training mode while it trains
            self._input_shape = (input_channels, spatial_dims)
        self.explainer.to(device=explainer_input.device, dtype=explainer_input.dtype)

    def _target_logits(self, x: Tensor, classes: Tensor) -> Tensor:
        """The logits S_c (N, 1, *spatial) of one class c per example."""
        explainer_inputs = self._explainer_inputs(x)
        self._build(explainer_inputs, x.shape[1])
        if (
            isinstance(self.explainer, MaskNet)
            and self.explainer.head.out_channels == self.num_classes
        ):
            return self.explainer.class_logits(explainer_inputs[0], classes, *explainer_inputs[1:])
        rows = torch.arange(x.shape[0], device=x.device)
        return checked_logits(self.explainer, explainer_inputs, x, self.num_classes)[
            rows, classes
        ].unsqueeze(1)

    def _logits(self, x: Tensor) -> Tensor:
        """Class logits S (N, num_classes, *spatial) for channels-first inputs."""
        explainer_inputs = self._explainer_inputs(x)
        self._build(explainer_inputs, x.shape[1])
        return checked_logits(self.explainer, explainer_inputs, x, self.num_classes)

    def _check_inputs(self, inputs: Any) -> tuple[Tensor, Tensor | None]:
        """The tensor the explainer masks, channels first, and (with ``layer``) the caller's
        inputs that the classifier runs on."""
        if self.layer is None:
            (x,) = format_inputs(
                inputs if isinstance(inputs, Tensor) else tuple(inputs), (1, 2, 3)
            )
            model_inputs = None
        else:
            (model_inputs,) = format_inputs(
                inputs if isinstance(inputs, Tensor) else tuple(inputs), masked=False
            )
            with torch.no_grad():
                (x,) = run_recording(lambda: self.forward_func(model_inputs), [self.layer])
            if x.dim() not in (3, 4, 5):
                raise ValueError(
                    f"layer {type(self.layer).__name__} returns shape {tuple(x.shape)}; the "
                    "explainer masks outputs with 1 to 3 axes of positions: (N, L, D), "
                    "(N, C, L), (N, C, H, W) or (N, C, D, H, W)"
                )
        x = self.layout.to_channels_first(x)
        if self._input_shape is not None and (x.shape[1], x.dim() - 2) != self._input_shape:
            channels, dims = self._input_shape
            raise ValueError(
                f"inputs must have {channels} channels and {dims} spatial axes like the data "
                f"the explainer was built for, got shape {tuple(x.shape)}"
            )
        return x, model_inputs

    # ------------------------------------------------------------------ inference
    @log_usage()
    @leaves_model_as_found
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor],
        target: TargetType = None,
        additional_forward_args: Any = None,
    ) -> Tensor | tuple[Tensor]:
        r"""
        The target class's mask, in one forward pass of the explainer.

        Args:
            inputs (Tensor or 1-tuple of Tensor): (N, C, H, W) images, (N, C, L) sequences,
                (N, C, D, H, W) volumes, or (N, L, D) with ``channels_last=True``; with
                ``layer``, whatever the model takes (token ids included).
            target (int, Tensor, list or None, optional): the class to explain, in any Captum
                form; None explains each input's predicted class (one classifier pass).
                Default: None
            additional_forward_args (Any, optional): extra arguments for ``forward_func`` after
                the inputs (used to pick the predicted class). Default: None

        Returns:
            *Tensor* (or a 1-tuple for a 1-tuple input) of **attributions** with the input's
            shape (``layer``'s output's with ``layer``), in [0, 1]: the mask σ(S_target), the
            same for every feature channel.

        Examples::

            >>> explainer.attribute(images, target=torch.tensor([0, 3]))
        """
        check_one_tensor(inputs)
        spatial_dims = (1, 2, 3) if self.layer is None else None
        formatted = format_inputs(inputs, spatial_dims, masked=self.layer is None)
        call = self._prepare(inputs, formatted, target, additional_forward_args)
        if call.targets.shape[1] != 1 or call.clean_output.shape[1] != self.num_classes:
            raise ValueError(
                f"forward_func must return (N, {self.num_classes}) scores for num_classes="
                f"{self.num_classes}, got {tuple(call.clean_output.shape)}"
            )
        x, _ = self._check_inputs(call.inputs[0])
        self._warn_if_untrained()
        with torch.no_grad(), evaluating(self.explainer):
            mask = torch.sigmoid(self._target_logits(x, call.targets[:, 0]))
        attribution = self.layout.to_caller(mask.expand_as(x)).to(x.dtype).contiguous()
        return _format_output(call.is_inputs_tuple, (attribution,))

    @leaves_model_as_found
    def explain_all(self, inputs: Tensor) -> Tensor:
        """Every class's mask in one forward pass.

        Args:
            inputs (Tensor): as for :meth:`attribute`.

        Returns:
            Tensor (N, num_classes, \\*spatial) in [0, 1] in the input's dtype; the spatial axes
            are (H, W) or (L,) (also for ``channels_last`` inputs).

        Examples::

            >>> masks = explainer.explain_all(images)     # masks[:, c] explains class c
        """
        x, _ = self._check_inputs(inputs)
        self._warn_if_untrained()
        with torch.no_grad(), evaluating(self.explainer):
            return torch.sigmoid(self._logits(x)).to(x.dtype)

    def _warn_if_untrained(self) -> None:
        if not self._trained:
            warn_user(
                "the explainer network has not been trained: its masks (about 0.5 everywhere) "
                "say nothing about the model. Call fit(...) or AmortizedExplainer.load(...) "
                "first"
            )

    def _classify(
        self, x: Tensor, dtype: torch.dtype | None = None, model_inputs: Tensor | None = None
    ) -> Tensor:
        """The classifier's scores for channels-first ``x``, which is cast to ``dtype`` (the
        data's own) first; the scores come back in the work dtype. With ``layer``, ``x`` is that
        layer's (masked) output and the classifier runs on ``model_inputs`` with it swapped in."""
        caller = self.layout.to_caller(x if dtype is None else x.to(dtype))
        if self.layer is None:
            scores = run_forward(self.forward_func, (caller,), None)
        else:
            with replacing_output(self.layer, caller):
                scores = run_forward(self.forward_func, (model_inputs,), None)
        scores = scores.to(work_dtype(x.dtype))
        if scores.dim() != 2 or scores.shape[1] != self.num_classes:
            raise ValueError(
                f"forward_func must return (N, {self.num_classes}) scores for num_classes="
                f"{self.num_classes}, got {tuple(scores.shape)}"
            )
        return scores


__all__ = ["AmortizedExplainer"]
