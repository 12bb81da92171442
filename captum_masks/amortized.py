"""Amortised explanation: a network trained once that gives every class's mask in one forward pass
(Stalder, Pittet, Gerber & Zimmermann, "What You See is What You Classify: Black Box Attributions",
NeurIPS 2022; Phillips, Schmidt & Stevens, "Explanatory Masks for Neural Network
Interpretability")."""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from captum.log import log_usage
from torch import Tensor, nn

from captum_masks._base import (
    MaskAttribution,
    check_seed,
    leaves_model_as_found,
    modules_of,
    restored_buffers,
    warn_if_training,
    work_dtype,
)
from captum_masks._compat import _format_output, progress
from captum_masks._hooks import check_layers, run_recording
from captum_masks._inputs import check_choice, check_positive, format_inputs, run_forward
from captum_masks._layout import MaskLayout
from captum_masks._warnings import warn_user
from captum_masks.explainer_networks import MaskNet, deeplab_explainer
from captum_masks.perturbations import blend
from captum_masks.regularizers import area_bounds, total_variation

LOSSES = ("stalder", "phillips")
TARGET_SOURCES = ("labels", "predictions")
CHECKPOINT_FORMAT = "captum_masks.AmortizedExplainer"
CHECKPOINT_VERSION = 1


@dataclass
class FitHistory:
    """What :meth:`AmortizedExplainer.fit` measured, one entry per epoch.

    Attributes:
        train_loss (list of float): mean training loss.
        val_loss (list of float): mean validation loss (empty without ``val_data``).
        terms (dict): mean of each loss term per epoch, e.g. ``terms["classification"]``.
        best_epoch (int): the epoch whose explainer was kept (0-based).
        stopped_early (bool): training stopped before ``epochs`` for lack of improvement.
    """

    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    terms: dict = field(default_factory=dict)
    best_epoch: int = -1
    stopped_early: bool = False


@dataclass
class _Batch:
    inputs: Tensor  # channels first, (N, C, *spatial)
    is_target: Tensor  # (N, num_classes) bool


class AmortizedExplainer(MaskAttribution):
    r"""
    A second network, the *explainer*, learns to output a mask for every class of a frozen
    classifier in one forward pass, so explaining a new input costs one pass of the explainer
    instead of hundreds of optimisation steps [Stalder et al. 2022; Phillips et al.].

    The explainer maps an input (and optionally the classifier's features at ``feature_layer``,
    Phillips et al.'s design) to class logits S (N, C, \*spatial); the mask of class c is
    σ(S_c). :meth:`fit` trains it; :meth:`attribute` returns the target class's mask with the
    input's shape; :meth:`explain_all` returns every class's mask.

    Training loss ``"stalder"`` (Eq. 1–8), with m = σ(max_{c∈Y} S_c) the target mask over the
    image's classes Y and n = σ(max_{c∉Y} S_c) the non-target mask:

    .. math::
        L = L_c(f(m \odot x), Y) + \lambda_e \tfrac{1}{C}\textstyle\sum_c \tilde p_c \log \tilde p_c
            + \lambda_a \big(A(m) + A(n) + \overline{B(\sigma(S_c))}_{c \in Y}\big)
            + \lambda_{tv} \big(TV(m) + TV(n)\big)

    with L_c binary cross-entropy over classes (multi-label, Eq. 2) or cross-entropy
    (single-label), p̃ the softmax on the complement (1 − m) ⊙ x (Eq. 3), A the mean mask value,
    B the area bounds (Eq. 4–6) and TV the anisotropic total variation per pixel (Eq. 7–8).
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
        feature_layer (nn.Module, optional): a module of the classifier whose output on the clean
            input (channels first, any resolution) is resized to the input and fed to the
            explainer next to the input. Default: None
        channels_last (bool, optional): inputs are (N, L, D) sequences with the features last;
            the mask spans the positions. Default: False
        width (int, optional): width of the default :class:`MaskNet`. Default: 16
        depth (int, optional): number of halvings of the default :class:`MaskNet`. Default: 2
        baselines (float, optional): the value masked-out input takes. Default: 0

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
        feature_layer: nn.Module | None = None,
        channels_last: bool = False,
        width: int = 16,
        depth: int = 2,
        baselines: float = 0.0,
    ) -> None:
        super().__init__(forward_func)
        for name, value in (("num_classes", num_classes), ("width", width), ("depth", depth)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
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
        if feature_layer is not None:
            check_layers(forward_func, [feature_layer], ["feature_layer"])
        self.num_classes = num_classes
        self.multilabel = multilabel
        self.feature_layer = feature_layer
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
        mode = "linear" if x.dim() == 3 else "bilinear"
        return F.interpolate(features, size=x.shape[2:], mode=mode, align_corners=False)

    def _explainer_input(self, x: Tensor) -> Tensor:
        """The explainer's input in the work dtype (float32 for half-precision inputs): the
        classifier sees ``x`` in its own dtype, the explainer network trains in full precision."""
        features = self._features(x)
        dtype = work_dtype(x.dtype)
        x = x.to(dtype)
        return x if features is None else torch.cat([x, features.to(dtype)], dim=1)

    def _build(self, explainer_input: Tensor, input_channels: int) -> None:
        """Create the default explainer for this input shape (once), on its device and dtype."""
        spatial_dims = explainer_input.dim() - 2
        if self.explainer is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self._seed)
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
                    )
            self.explainer.eval()  # fit switches it to training mode while it trains
            self._input_shape = (input_channels, spatial_dims)
        self.explainer.to(device=explainer_input.device, dtype=explainer_input.dtype)

    def _target_logits(self, x: Tensor, classes: Tensor) -> Tensor:
        """The logits S_c (N, 1, *spatial) of one class c per example."""
        explainer_input = self._explainer_input(x)
        self._build(explainer_input, x.shape[1])
        if (
            isinstance(self.explainer, MaskNet)
            and self.explainer.head.out_channels == self.num_classes
        ):
            return self.explainer.class_logits(explainer_input, classes)
        rows = torch.arange(x.shape[0], device=x.device)
        return _checked_logits(self.explainer, explainer_input, x, self.num_classes)[
            rows, classes
        ].unsqueeze(1)

    def _logits(self, x: Tensor) -> Tensor:
        """Class logits S (N, num_classes, *spatial) for channels-first inputs."""
        explainer_input = self._explainer_input(x)
        self._build(explainer_input, x.shape[1])
        return _checked_logits(self.explainer, explainer_input, x, self.num_classes)

    def _check_inputs(self, inputs: Any) -> Tensor:
        (x,) = format_inputs(inputs if isinstance(inputs, Tensor) else tuple(inputs), (1, 2))
        x = self.layout.to_channels_first(x)
        if self._input_shape is not None and (x.shape[1], x.dim() - 2) != self._input_shape:
            channels, dims = self._input_shape
            raise ValueError(
                f"inputs must have {channels} channels and {dims} spatial axes like the data "
                f"the explainer was built for, got shape {tuple(x.shape)}"
            )
        return x

    # ------------------------------------------------------------------ inference
    @log_usage()
    @leaves_model_as_found
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor],
        target: Any = None,
        additional_forward_args: Any = None,
    ) -> Tensor | tuple[Tensor]:
        r"""
        The target class's mask, in one forward pass of the explainer.

        Args:
            inputs (Tensor or 1-tuple of Tensor): (N, C, H, W) images, (N, C, L) sequences, or
                (N, L, D) with ``channels_last=True``.
            target (int, Tensor, list or None, optional): the class to explain, in any Captum
                form; None explains each input's predicted class (one classifier pass).
                Default: None
            additional_forward_args (Any, optional): extra arguments for ``forward_func`` after
                the inputs (used to pick the predicted class). Default: None

        Returns:
            *Tensor* (or a 1-tuple for a 1-tuple input) of **attributions** with the input's
            shape, in [0, 1]: the mask σ(S_target), the same for every feature channel.

        Examples::

            >>> explainer.attribute(images, target=torch.tensor([0, 3]))
        """
        if isinstance(inputs, tuple) and len(inputs) != 1:
            raise ValueError(f"inputs must be one tensor (or a 1-tuple), got {len(inputs)}")
        call = self._prepare(inputs, target, additional_forward_args, spatial_dims=(1, 2))
        if call.targets.shape[1] != 1 or call.clean_output.shape[1] != self.num_classes:
            raise ValueError(
                f"forward_func must return (N, {self.num_classes}) scores for num_classes="
                f"{self.num_classes}, got {tuple(call.clean_output.shape)}"
            )
        x = self._check_inputs(call.inputs[0])
        self._warn_if_untrained()
        with torch.no_grad(), _inference(self):
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
        x = self._check_inputs(inputs)
        self._warn_if_untrained()
        with torch.no_grad(), _inference(self):
            return torch.sigmoid(self._logits(x)).to(x.dtype)

    def _warn_if_untrained(self) -> None:
        if not self._trained:
            warn_user(
                "the explainer network has not been trained: its masks (about 0.5 everywhere) "
                "say nothing about the model. Call fit(...) or AmortizedExplainer.load(...) "
                "first"
            )

    # ------------------------------------------------------------------ training
    def _targets_of(self, x: Tensor, labels: Tensor | None, source: str) -> Tensor:
        """(N, num_classes) bool: the classes Y each input is explained for."""
        if source == "predictions":
            with torch.no_grad():
                scores = self._classify(x)
            if not self.multilabel:
                return F.one_hot(scores.argmax(dim=1), self.num_classes).bool()
            present = scores.sigmoid() > 0.5
            top = F.one_hot(scores.argmax(dim=1), self.num_classes).bool()
            # an input with no class above 0.5 is explained for its top class
            return torch.where(present.any(dim=1, keepdim=True), present, top)
        if labels is None:
            raise ValueError(
                "the data gave inputs without labels; pass (inputs, labels) batches or "
                "targets='predictions'"
            )
        labels = labels.to(x.device)
        if self.multilabel:
            if labels.shape != (x.shape[0], self.num_classes):
                raise ValueError(
                    f"multi-label labels must be (N, num_classes) = ({x.shape[0]}, "
                    f"{self.num_classes}) multi-hot, got shape {tuple(labels.shape)}"
                )
            if not ((labels == 0) | (labels == 1)).all():
                raise ValueError("multi-label labels must hold only 0 and 1")
            return labels.bool()
        if labels.shape != (x.shape[0],) or labels.is_floating_point():
            raise ValueError(
                f"single-label labels must be ({x.shape[0]},) class indices, got "
                f"{labels.dtype} of shape {tuple(labels.shape)}"
            )
        if ((labels < 0) | (labels >= self.num_classes)).any():
            raise ValueError(
                f"labels must be in [0, {self.num_classes}), got values from "
                f"{int(labels.min())} to {int(labels.max())}"
            )
        return F.one_hot(labels.long(), self.num_classes).bool()

    def _classify(self, x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """The classifier's scores for channels-first ``x``, which is cast to ``dtype`` (the
        data's own) first; the scores come back in the work dtype."""
        caller = self.layout.to_caller(x if dtype is None else x.to(dtype))
        scores = run_forward(self.forward_func, (caller,), None).to(work_dtype(x.dtype))
        if scores.dim() != 2 or scores.shape[1] != self.num_classes:
            raise ValueError(
                f"forward_func must return (N, {self.num_classes}) scores for num_classes="
                f"{self.num_classes}, got {tuple(scores.shape)}"
            )
        return scores

    def _batch(self, batch: Any, source: str, separate_classes: bool = False) -> _Batch:
        if isinstance(batch, Tensor):
            inputs, labels = batch, None
        elif isinstance(batch, (tuple, list)) and len(batch) in (1, 2):
            inputs, labels = batch[0], batch[1] if len(batch) == 2 else None
        else:
            raise TypeError(
                "each batch must be an inputs tensor or an (inputs, labels) pair, got "
                f"{type(batch).__name__}"
            )
        x = self._check_inputs(inputs)
        is_target = self._targets_of(x, labels, source)
        if separate_classes:  # one row per (input, class of that input)
            rows, classes = is_target.nonzero(as_tuple=True)
            return _Batch(x[rows], F.one_hot(classes, self.num_classes).bool())
        return _Batch(x, is_target)

    def _loss_terms(self, batch: _Batch, settings: dict, explainer: nn.Module) -> dict:
        """Per-example loss terms (each (N,)) for one batch."""
        x, is_target = batch.inputs, batch.is_target
        logits = _checked_logits(explainer, self._explainer_input(x), x, self.num_classes)
        selector = is_target.view(*is_target.shape, *([1] * (x.dim() - 2)))
        target_mask = torch.sigmoid(_masked_max(logits, selector))  # m
        data_dtype, x = x.dtype, x.to(logits.dtype)
        masked = blend(x, target_mask, self.baselines)
        labels = is_target.to(x.dtype)
        if settings["loss"] == "phillips":
            kept_scores = self._classify(masked, data_dtype)
            return {
                "classification": self._classification_loss(kept_scores, labels),
                "l1": settings["l1_weight"] * target_mask.flatten(1).mean(1),
                "l2": settings["l2_weight"] * target_mask.flatten(1).square().mean(1),
            }
        has_non_target = (~is_target).any(dim=1)
        non_target_mask = torch.sigmoid(_masked_max(logits, ~selector))  # n
        non_target_mask = non_target_mask * has_non_target.view(-1, *[1] * (x.dim() - 1))
        complement = blend(x, 1.0 - target_mask, self.baselines)
        both = torch.cat([masked, complement])
        kept_scores, removed_scores = self._classify(both, data_dtype).chunk(2)
        removed = removed_scores.log_softmax(dim=1)
        negative_entropy = (removed.exp() * removed).mean(dim=1)  # Eq. 3
        class_masks = torch.sigmoid(logits)
        lower, upper = settings["area_bounds"]
        bounds = area_bounds(class_masks.flatten(0, 1), lower, upper).view(logits.shape[:2])
        bounds = (bounds * labels).sum(1) / labels.sum(1).clamp_min(1)  # Eq. 6, last term
        pixels = math.prod(x.shape[2:])
        target_area_weight, non_target_area_weight = settings["mask_area_weights"]
        return {  # Eq. 1
            "classification": self._classification_loss(kept_scores, labels),
            "entropy": settings["entropy_weight"] * negative_entropy,
            "area": settings["area_weight"]
            * (
                target_area_weight * target_mask.flatten(1).mean(1)
                + non_target_area_weight * non_target_mask.flatten(1).mean(1)
                + bounds
            ),
            "tv": settings["tv_weight"]
            * (total_variation(target_mask) + total_variation(non_target_mask))
            / pixels,  # Eq. 7–8
        }

    def _classification_loss(self, scores: Tensor, labels: Tensor) -> Tensor:
        if self.multilabel:  # Eq. 2
            return F.binary_cross_entropy_with_logits(scores, labels, reduction="none").mean(1)
        return F.cross_entropy(scores, labels.argmax(dim=1), reduction="none")

    def fit(
        self,
        train_data: Iterable,
        val_data: Iterable | None = None,
        epochs: int = 10,
        loss: str = "stalder",
        targets: str = "labels",
        lr: float = 1e-3,
        entropy_weight: float = 1.0,
        area_weight: float = 1.0,
        tv_weight: float = 1.0,
        area_bounds: tuple[float, float] = (0.05, 0.3),
        mask_area_weights: tuple[float, float] = (1.0, 1.0),
        l1_weight: float = 1e-3,
        l2_weight: float = 1e-4,
        separate_classes: bool = True,
        patience: int | None = 3,
        checkpoint: str | os.PathLike | None = None,
        resume: bool = False,
        seed: int = 0,
        show_progress: bool = True,
    ) -> FitHistory:
        r"""Train the explainer with the classifier frozen.

        Args:
            train_data (iterable): batches of ``(inputs, labels)`` (or inputs alone with
                ``targets="predictions"``), e.g. a ``DataLoader``; iterated once per epoch.
                Single-label labels are (N,) class indices, multi-label labels (N, num_classes)
                multi-hot.
            val_data (iterable, optional): the same, evaluated after every epoch; early stopping
                and the kept explainer follow its loss (else the training loss).
            epochs (int, optional): maximum number of passes over ``train_data``. Default: 10
            loss (str, optional): ``"stalder"`` (Eq. 1–8) or ``"phillips"``. Default: "stalder"
            targets (str, optional): explain the ``"labels"`` of the data (Stalder et al.'s
                choice) or the classifier's ``"predictions"``. Default: "labels"
            lr (float, optional): Adam's learning rate. Default: 1e-3
            entropy_weight (float, optional): λ_e. Default: 1
            area_weight (float, optional): λ_a. Default: 1
            tv_weight (float, optional): λ_tv. Default: 1
            area_bounds (tuple of float, optional): (a, b), the least and largest area of a
                present class's mask (Eq. 4–5). Default: (0.05, 0.3)
            mask_area_weights (tuple of float, optional): the weights of A(m) and A(n) inside
                λ_a's term; (1, 1) is Eq. 6 as written, the authors' code uses (0.1, 0.3).
                Default: (1.0, 1.0)
            l1_weight, l2_weight (float, optional): Phillips et al.'s penalties on the mask
                (their values). Default: 1e-3, 1e-4
            separate_classes (bool, optional): train on one row per (input, class of that
                input): the target set Y is that class alone, and every other class, present
                or not, is a non-target, so m ⊙ x must show that class without the others and a
                class's mask has to leave out the other classes' objects. False is Eq. 2 as
                written, all of an input's classes in one m; on the two-object synthetic suite
                that gave every class the same mask (see the README). Single-label data is the
                same either way. Default: True
            patience (int or None, optional): stop after this many epochs without a better loss;
                None trains all epochs. The explainer of the best epoch is kept. Default: 3
            checkpoint (str or path, optional): written after every epoch (to a temporary file,
                then renamed, so an interruption never leaves a broken file). Default: None
            resume (bool, optional): continue from ``checkpoint`` if it exists; the result is
                the same as an uninterrupted run on the same data. Default: False
            seed (int, optional): seeds the default explainer's initial weights (the global RNG
                is left as it was). Default: 0
            show_progress (bool, optional): a progress bar with the loss terms. Default: True

        Returns:
            :class:`FitHistory`.

        Under ``torchrun`` (``torch.distributed`` initialised), the explainer is wrapped in
        ``DistributedDataParallel``; a ``DataLoader`` is re-sharded with a
        ``DistributedSampler`` (each process takes ``batch_size / world_size`` examples per
        step, so one step sees the same examples as a single process), any other iterable by
        taking every ``world_size``-th row of each batch; only rank 0 shows progress and writes
        checkpoints.

        Examples::

            >>> history = explainer.fit(train_loader, val_loader, epochs=20, checkpoint="ex.pt",
            ...                         resume=True)
            >>> history.val_loss
        """
        check_choice("loss", loss, LOSSES)
        check_choice("targets", targets, TARGET_SOURCES)
        if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {epochs!r}")
        if patience is not None and (not isinstance(patience, int) or patience < 1):
            raise ValueError(f"patience must be a positive int or None, got {patience!r}")
        check_positive("lr", lr)
        for name, value in (
            ("entropy_weight", entropy_weight),
            ("area_weight", area_weight),
            ("tv_weight", tv_weight),
            ("l1_weight", l1_weight),
            ("l2_weight", l2_weight),
        ):
            check_positive(name, value, allow_zero=True)
        if (
            not isinstance(area_bounds, tuple)
            or len(area_bounds) != 2
            or not 0.0 <= area_bounds[0] <= area_bounds[1] <= 1.0
        ):
            raise ValueError(
                f"area_bounds must be (a, b) with 0 <= a <= b <= 1, got {area_bounds!r}"
            )
        if (
            not isinstance(mask_area_weights, tuple)
            or len(mask_area_weights) != 2
            or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0
                for w in mask_area_weights
            )
        ):
            raise ValueError(
                "mask_area_weights must be two non-negative numbers (for A(m) and A(n)), got "
                f"{mask_area_weights!r}"
            )
        if resume and checkpoint is None:
            raise ValueError("resume=True needs a checkpoint path")
        check_seed(seed)
        if not isinstance(separate_classes, bool):
            raise TypeError(
                f"separate_classes must be a bool, got {type(separate_classes).__name__}"
            )
        settings = {
            "loss": loss,
            "entropy_weight": entropy_weight,
            "area_weight": area_weight,
            "tv_weight": tv_weight,
            "area_bounds": area_bounds,
            "mask_area_weights": mask_area_weights,
            "l1_weight": l1_weight,
            "l2_weight": l2_weight,
            "separate_classes": separate_classes,
        }
        for name, data in (("train_data", train_data), ("val_data", val_data)):
            if data is not None and iter(data) is data:
                raise TypeError(
                    f"{name} must be re-iterable, once per epoch (a DataLoader or a list of "
                    "batches), not a one-shot iterator or generator"
                )
        self._seed = seed
        rank, world_size = _distributed()
        first = next(iter(train_data), None)
        if first is None:
            raise ValueError("train_data gave no batch")
        self._logits_shape_check(self._batch(first, targets, separate_classes))
        optimizer = torch.optim.Adam(self.explainer.parameters(), lr=lr)
        history = FitHistory()
        best_state, best_loss, stale, start = None, math.inf, 0, 0
        if resume and Path(checkpoint).exists():
            saved = _read_checkpoint(checkpoint)
            self._check_config(saved["config"])
            self.explainer.load_state_dict(saved["state"])
            optimizer.load_state_dict(saved["optimizer"])
            history = FitHistory(**saved["history"])
            best_state, best_loss = saved["best_state"], saved["best_loss"]
            stale, start = saved["stale"], saved["epoch"] + 1
        trained = _wrap_distributed(self.explainer) if world_size > 1 else self.explainer
        self.explainer.train()
        classifier = modules_of(self.forward_func)
        warn_if_training(classifier, "the classifier (forward_func)")
        with _frozen(classifier), restored_buffers(classifier):
            for epoch in range(start, epochs):
                if history.stopped_early:
                    break
                sums: dict[str, float] = {}
                count = 0
                batches = _shard(train_data, epoch, rank, world_size)
                bar = progress(
                    batches,
                    desc=f"Explainer epoch {epoch + 1}/{epochs}",
                    disable=not show_progress or rank != 0,
                )
                for raw in bar:
                    terms = self._loss_terms(
                        self._batch(raw, targets, settings["separate_classes"]), settings, trained
                    )
                    total = sum(terms.values())
                    optimizer.zero_grad(set_to_none=True)
                    total.mean().backward()
                    optimizer.step()
                    count += total.shape[0]
                    for name, value in {"loss": total, **terms}.items():
                        sums[name] = sums.get(name, 0.0) + float(value.detach().sum())
                    if hasattr(bar, "set_postfix"):
                        bar.set_postfix({k: f"{v / count:.4f}" for k, v in sums.items()})
                means = {name: value / max(count, 1) for name, value in sums.items()}
                history.train_loss.append(means.pop("loss"))
                for name, value in means.items():
                    history.terms.setdefault(name, []).append(value)
                monitored = history.train_loss[-1]
                if val_data is not None:
                    monitored = self._evaluate(val_data, targets, settings)
                    history.val_loss.append(monitored)
                if monitored < best_loss:
                    best_loss, stale, history.best_epoch = monitored, 0, epoch
                    best_state = copy.deepcopy(self.explainer.state_dict())
                else:
                    stale += 1
                    history.stopped_early = patience is not None and stale >= patience
                if checkpoint is not None and rank == 0:
                    _write_checkpoint(
                        checkpoint,
                        {
                            **self._checkpoint_header(),
                            "state": self.explainer.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "history": history.__dict__,
                            "best_state": best_state,
                            "best_loss": best_loss,
                            "stale": stale,
                            "epoch": epoch,
                        },
                    )
        self.explainer.eval()
        if best_state is not None:
            self.explainer.load_state_dict(best_state)
        self._trained = True
        return history

    def _logits_shape_check(self, batch: _Batch) -> None:
        """Build the explainer from the first batch and check its output shape once."""
        with torch.no_grad():
            self._logits(batch.inputs[:1])

    def _evaluate(self, data: Iterable, targets: str, settings: dict) -> float:
        total, count = 0.0, 0
        with torch.no_grad(), _inference(self):
            for raw in data:
                terms = self._loss_terms(
                    self._batch(raw, targets, settings["separate_classes"]),
                    settings,
                    self.explainer,
                )
                loss = sum(terms.values())
                total += float(loss.sum())
                count += loss.shape[0]
        if count == 0:
            raise ValueError("val_data gave no batch")
        return total / count

    # ------------------------------------------------------------------ persistence
    def _config(self) -> dict:
        channels, dims = self._input_shape or (None, None)
        layer_name = None
        if self.feature_layer is not None and isinstance(self.forward_func, nn.Module):
            layer_name = next(
                name
                for name, module in self.forward_func.named_modules()
                if module is self.feature_layer
            )
        return {
            "num_classes": self.num_classes,
            "multilabel": self.multilabel,
            "channels_last": self.layout.channels_last,
            "width": self.width,
            "depth": self.depth,
            "baselines": self.baselines,
            "explainer": self._kind,
            "input_channels": channels,
            "spatial_dims": dims,
            "feature_layer": layer_name,
        }

    def _checkpoint_header(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": self._config(),
        }

    def _check_config(self, saved: dict) -> None:
        current = self._config()
        different = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
        if different:
            raise ValueError(
                "the checkpoint was written for a different explainer: "
                + ", ".join(
                    f"{k} {old!r} there, {new!r} here" for k, (old, new) in different.items()
                )
            )

    def save(self, path: str | os.PathLike) -> None:
        """Write the trained explainer and its settings (atomically: a temporary file, then a
        rename).

        Args:
            path (str or path): the file to write.

        Examples::

            >>> explainer.save("explainer.pt")
        """
        if self.explainer is None:
            raise ValueError("nothing to save: fit the explainer (or call attribute) first")
        _write_checkpoint(path, {**self._checkpoint_header(), "state": self.explainer.state_dict()})

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        forward_func: Callable,
        explainer: nn.Module | None = None,
        map_location: str | torch.device | None = None,
    ) -> AmortizedExplainer:
        """Load an explainer written by :meth:`save` (or a :meth:`fit` checkpoint).

        Files are read with ``torch.load(weights_only=True)``: nothing in them is executed.

        Args:
            path (str or path): the file.
            forward_func (Callable): the classifier the explainer was trained for.
            explainer (nn.Module, optional): an untrained instance of the network, needed when
                it was a custom module.
            map_location (optional): as for ``torch.load``.

        Returns:
            :class:`AmortizedExplainer`.

        Examples::

            >>> explainer = AmortizedExplainer.load("explainer.pt", model)
        """
        saved = _read_checkpoint(path, map_location)
        config = saved["config"]
        if config["explainer"] == "custom" and explainer is None:
            raise ValueError(
                f"{os.fspath(path)} holds a custom explainer network: pass an instance of it as "
                "explainer="
            )
        feature_layer = None
        if config["feature_layer"] is not None:
            if not isinstance(forward_func, nn.Module):
                raise ValueError(
                    "the explainer used a feature_layer: forward_func must be the model"
                )
            feature_layer = forward_func.get_submodule(config["feature_layer"])
        restored = cls(
            forward_func,
            config["num_classes"],
            explainer={"custom": explainer, "compact": None}.get(
                config["explainer"], config["explainer"]
            ),
            multilabel=config["multilabel"],
            feature_layer=feature_layer,
            channels_last=config["channels_last"],
            width=config["width"],
            depth=config["depth"],
            baselines=config["baselines"],
        )
        if restored.explainer is None:
            channels, dims = config["input_channels"], config["spatial_dims"]
            features = _feature_channels(saved["state"], channels, restored._kind)
            probe = torch.zeros(1, channels + features, *([8] * dims))
            restored._build(probe, channels)
        restored.explainer.load_state_dict(saved["state"])
        restored._trained = True
        if config["input_channels"] is not None:
            restored._input_shape = (config["input_channels"], config["spatial_dims"])
        return restored


def _checked_logits(
    explainer: nn.Module, explainer_input: Tensor, x: Tensor, num_classes: int
) -> Tensor:
    logits = explainer(explainer_input)
    expected = (x.shape[0], num_classes, *x.shape[2:])
    if not isinstance(logits, Tensor) or tuple(logits.shape) != expected:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(
            f"the explainer must return (N, num_classes, *spatial) = {expected} mask logits, "
            f"got {got}"
        )
    return logits


def _masked_max(logits: Tensor, selector: Tensor) -> Tensor:
    """max over the selected classes, (N, 1, *spatial); -inf-free: no selection gives -1e4."""
    filled = logits.masked_fill(~selector.expand_as(logits), torch.finfo(logits.dtype).min)
    return filled.amax(dim=1, keepdim=True).clamp_min(-1e4)


def _feature_channels(state: dict, input_channels: int, kind: str) -> int:
    """Channels of the features the default explainer was fed, from its first convolution."""
    if kind != "compact":
        return 0
    first = state["down.0.0.weight"]
    return first.shape[1] - input_channels


@contextlib.contextmanager
def _inference(explainer: AmortizedExplainer) -> Iterator[None]:
    """The explainer network in eval mode (batch norm statistics, no dropout), then back."""
    network = explainer.explainer
    training = network.training if network is not None else False
    if network is not None:
        network.eval()
    try:
        yield
    finally:
        if network is not None and explainer.explainer is network:
            network.train(training)


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _wrap_distributed(module: nn.Module) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    device = next(module.parameters()).device
    return DistributedDataParallel(module, device_ids=None if device.type == "cpu" else [device])


def _shard(data: Iterable, epoch: int, rank: int, world_size: int) -> Iterable:
    if world_size == 1:
        return data
    from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

    if isinstance(data, DataLoader):
        if data.batch_size is None or data.batch_size % world_size:
            raise ValueError(
                f"under torchrun the DataLoader's batch_size ({data.batch_size}) must be a "
                f"multiple of the world size ({world_size})"
            )
        sampler = DistributedSampler(
            data.dataset,
            num_replicas=world_size,
            rank=rank,
            shuffle=isinstance(data.sampler, RandomSampler),
        )
        sampler.set_epoch(epoch)
        return DataLoader(
            data.dataset,
            batch_size=data.batch_size // world_size,
            sampler=sampler,
            num_workers=data.num_workers,
            collate_fn=data.collate_fn,
            drop_last=data.drop_last,
        )
    return (_rows(batch, rank, world_size) for batch in data)


def _rows(batch: Any, rank: int, world_size: int) -> Any:
    if isinstance(batch, Tensor):
        return batch[rank::world_size]
    return type(batch)(item[rank::world_size] for item in batch)


@contextlib.contextmanager
def _frozen(modules: list[nn.Module]) -> Iterator[None]:
    """No gradient reaches the classifier's parameters while the explainer trains: their
    ``requires_grad`` is switched off and restored, even if training raises."""
    parameters = [p for module in modules for p in module.parameters() if p.requires_grad]
    for parameter in parameters:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in parameters:
            parameter.requires_grad_(True)


def _write_checkpoint(path: str | os.PathLike, content: dict) -> None:
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(content, temporary)
    os.replace(temporary, path)


def _read_checkpoint(path: str | os.PathLike, map_location: Any = None) -> dict:
    try:
        saved = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:
        raise ValueError(
            f"{os.fspath(path)} is not a readable AmortizedExplainer file ({error.__class__.__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''})"
        ) from error
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{os.fspath(path)} is not an AmortizedExplainer file (written by "
            "AmortizedExplainer.save or fit(checkpoint=...))"
        )
    if saved.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"{os.fspath(path)} has format version {saved.get('version')!r}; this release reads "
            f"version {CHECKPOINT_VERSION}"
        )
    return saved


__all__ = ["AmortizedExplainer", "FitHistory"]
