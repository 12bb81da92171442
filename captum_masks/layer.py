"""The mask methods applied to a layer's output, in Captum's Layer convention.

``LayerMeaningfulPerturbation(model, model.embedding)`` explains a model that takes token ids the
way ``LayerIntegratedGradients(model, model.embedding)`` does: the mask acts on the output of
``layer`` (for an embedding, on each token's vector) and the attributions have that output's
shape. The model still runs on the caller's inputs; a forward hook swaps the layer's output for its
masked version, so any layer can be masked, not only embeddings.

On a token layer, (N, L, D) for (N, L) token ids, the optimisation starts from the best single
token (the token whose deletion alone lowers the target's score most, or which alone keeps it
best, one forward pass per token) and each example keeps its lowest-loss mask
(``Optimization.keep_best``): a transformer's score can be a step in a token's embedding, flat
on both sides, which the last steps may cross with no gradient to lead back. A ``mask`` or
``layer_mask`` of the caller's, or ``keep_best=False``, turns these off.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from captum.attr import LayerAttribution, PerturbationAttribution
from captum.log import log_usage
from torch import Tensor, nn

from captum_masks._engine.call import MaskAttribution
from captum_masks._engine.checks import format_inputs, resolve_targets, run_forward
from captum_masks._engine.compat import (
    BaselineType,
    TargetType,
    _format_additional_forward_args,
)
from captum_masks._engine.hooks import check_layers, recording, replacing_output, single_outputs
from captum_masks._engine.layout import MaskLayout
from captum_masks._engine.model_state import leaves_model_as_found
from captum_masks._engine.model_structure import is_token_layer, padding_positions_of
from captum_masks._engine.scores import select_scores
from captum_masks.masks.sigmoid import SigmoidMask
from captum_masks.masks.upsampled import UpsampledMask
from captum_masks.meaningful_perturbation import MeaningfulPerturbation
from captum_masks.neuromask import NeuroMaskAttr
from captum_masks.optimization import Optimization
from captum_masks.perturbations import constant_reference


class _LayerMask(LayerAttribution, PerturbationAttribution):
    """Runs ``method`` on the output of ``layer``: the layer's clean output is the input the
    method masks, and the model with that output swapped in is its forward function."""

    method: type[MaskAttribution]
    #: the method's defaults that change when it masks a layer's positions
    layer_defaults: dict[str, Any] = {}
    #: what a masked-out token becomes by default (None: each example's mean token)
    token_baseline: float | None = None

    def __init__(
        self, forward_func: Callable, layer: nn.Module, device_ids: list[int] | None = None
    ) -> None:
        if not callable(forward_func):
            raise TypeError(f"forward_func must be callable, got {type(forward_func).__name__}")
        check_layers(forward_func, [layer], ["layer"])
        LayerAttribution.__init__(self, forward_func, layer, device_ids)
        PerturbationAttribution.__init__(self, forward_func)

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    @log_usage()
    @leaves_model_as_found
    def attribute(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: TargetType = None,
        additional_forward_args: Any = None,
        layer_baselines: BaselineType = None,
        layer_mask: Tensor | tuple[Tensor, ...] | None = None,
        *,
        padding_mask: Tensor | None = None,
        **kwargs: Any,
    ) -> Tensor | tuple[Tensor, Any]:
        r"""
        Args:
            inputs (Tensor or tuple[Tensor, ...]): the model's inputs, batch first, of any
                dtype (token ids included); they are not masked, ``layer``'s output is.
            target (int, tuple, Tensor, list or None, optional): the output index to explain,
                in any Captum form; None explains each example's predicted class.
                Default: None
            additional_forward_args (Any, optional): passed to the model after the inputs.
                Default: None
            layer_baselines (scalar, Tensor, optional): what a masked-out position of the
                layer's output becomes: a scalar, one value per feature (e.g. a pad token's
                embedding, ``model.embedding.weight[pad_id]``), or a tensor broadcastable to
                the layer's output. None: the method's own (the class docstring says which).
                Default: None
            layer_mask (Tensor, optional): Captum's ``layer_mask``: integer group ids
                broadcastable to the layer's output; positions with one id share one mask
                value (e.g. the tokens of one word). Default: None
            padding_mask (Tensor, optional): bool, True at padding positions: (N, L) for an
                (N, L, D) output (e.g. ``token_ids == pad_id``) or broadcastable to the output.
                Padding keeps its own output whatever the mask, so it is never evidence, and
                gets attribution 0. None: on a token layer of a model whose ``config`` names a
                padding token (Hugging Face's ``pad_token_id``), the positions of that token in
                the ids; no padding otherwise. Default: None
            **kwargs: any other keyword of the method's ``attribute`` (``optimization``,
                ``mask``, ``return_history``, ...); the defaults differ only as the class
                docstring says.

        Returns:
            *Tensor* of **attributions** with the shape of ``layer``'s output, in [0, 1],
            higher = more important; with ``return_history=True``, ``(attributions, history)``.

        Examples::

            >>> explainer = LayerNeuroMask(model, model.embedding)
            >>> pad = model.embedding.weight[0].detach()
            >>> attribution = explainer.attribute(token_ids, target=1, layer_baselines=pad)
        """
        model_inputs = format_inputs(inputs, masked=False)
        extra = _format_additional_forward_args(additional_forward_args) or ()
        with torch.no_grad(), recording([self.layer]) as recorded:
            clean_output = run_forward(self.forward_func, model_inputs, extra)
        (activation,) = single_outputs(recorded, [self.layer])
        tokens = is_token_layer(self.layer, model_inputs, activation)
        if tokens:
            kwargs.setdefault("channels_last", True)  # (N, L, D): mask the tokens
            if padding_mask is None:
                padding_mask = padding_positions_of(self.forward_func, model_inputs[0])
        padding = _padding_positions(padding_mask, activation)
        if tokens and "mask" not in kwargs and layer_mask is None:
            reference = self._token_reference(activation, layer_baselines)
            keep = self._keeps_a_token(kwargs)
            best = self._best_single_token(
                (model_inputs, extra, clean_output),
                activation,
                reference,
                padding,
                target,
                keep,
                kwargs,
            )
            start = activation.new_full(best.shape, UNCHOSEN_KEPT if keep else 1.0)
            start[best] = 1.0 if keep else 0.0
            kwargs["mask"] = self.layer_defaults["mask"].starting_at(start.unsqueeze(1))
            kwargs["optimization"] = _keeping_best(kwargs.get("optimization"))

        def masked_forward(layer_output: Tensor, clean: Tensor, pad: Tensor, *rest: Any) -> Any:
            # padding keeps its clean output whatever the mask says: it cannot be evidence
            kept = torch.where(pad, clean.to(layer_output.dtype), layer_output)
            with replacing_output(self.layer, kept):
                return self.forward_func(*rest)

        result = self.method(masked_forward).attribute(
            activation,
            target=target,
            # the clean output, the padding and the caller's inputs and arguments ride along,
            # sliced with the examples they belong to
            additional_forward_args=(activation, padding, *model_inputs, *extra),
            baselines=layer_baselines,
            feature_mask=layer_mask,
            **{**self.layer_defaults, **kwargs},
        )
        attribution, *history = result if isinstance(result, tuple) else (result,)
        attribution = attribution.masked_fill(padding, 0.0)
        return (attribution, *history) if history else attribution

    def _keeps_a_token(self, kwargs: dict) -> bool:
        """Whether the method's game keeps evidence (its start keeps one token) rather than
        deleting it (its start deletes one)."""
        raise NotImplementedError

    def _token_reference(self, activation: Tensor, layer_baselines: BaselineType) -> Tensor:
        """What a masked-out token becomes: ``layer_baselines``, or the method's default
        (:attr:`token_baseline`), as the method's constant reference makes it."""
        value = self.token_baseline if layer_baselines is None else layer_baselines
        layout = MaskLayout(channels_last=True)
        tokens = layout.to_channels_first(activation)
        baseline = layout.baseline_to_channels_first(value, tokens)
        return layout.to_caller(constant_reference(tokens, baseline))

    def _best_single_token(
        self,
        model_call: tuple[tuple, tuple, Tensor],
        activation: Tensor,
        reference: Tensor,
        padding: Tensor,
        target: TargetType,
        keep: bool,
        kwargs: dict,
    ) -> Tensor:
        """(N, L) bool, True at each example's one token that alone best keeps its target's
        score (``keep``) or whose deletion alone lowers it most: the token-level form of the
        Meaningful Perturbation paper's start, a search for the smallest region that
        suppresses the score. A transformer's score can be a step in a token's embedding
        (flat on both sides, where a gradient sees nothing); a start on the right side of the
        step leaves the optimisation to refine it. Padding is never chosen."""
        model_inputs, extra, clean_output = model_call
        apply_softmax = kwargs.get("apply_softmax", True)
        num, length = activation.shape[:2]
        targets = resolve_targets(target, clean_output)
        with torch.no_grad():
            scores = []
            for position in range(length):
                alone = torch.zeros(num, length, 1, dtype=torch.bool, device=activation.device)
                alone[:, position] = True
                shown = torch.where(alone == keep, activation, reference)
                with replacing_output(self.layer, torch.where(padding, activation, shown)):
                    output = run_forward(self.forward_func, model_inputs, extra)
                scores.append(select_scores(output, targets, apply_softmax))
        preference = torch.stack(scores, dim=1) * (1.0 if keep else -1.0)
        preference = preference.masked_fill(padding[..., 0], -torch.inf)
        return torch.nn.functional.one_hot(preference.argmax(dim=1), length).bool()


#: where the other tokens start when the start keeps one token: low, but where a token the
#: model also needs still has the gradient to rise
UNCHOSEN_KEPT = 0.05


def _keeping_best(optimization: Any) -> Any:
    """The caller's loop settings, keeping each example's lowest-loss mask unless they say
    otherwise: a start on the right side of a step in the score is lost if the last steps
    cross it."""
    if optimization is None:
        return Optimization(keep_best=True)
    if isinstance(optimization, Optimization) and "keep_best" not in optimization.given():
        return dataclasses.replace(optimization, keep_best=True)
    return optimization


def _padding_positions(padding_mask: Any, activation: Tensor) -> Tensor:
    """``padding_mask`` as a bool tensor broadcastable to the layer's output (an (N, L) mask of
    an (N, L, D) output gets a trailing axis); all False when None."""
    if padding_mask is None:
        return torch.zeros(
            (activation.shape[0],) + (1,) * (activation.dim() - 1),
            dtype=torch.bool,
            device=activation.device,
        ).expand_as(activation)
    if not isinstance(padding_mask, Tensor) or padding_mask.dtype != torch.bool:
        raise TypeError(
            f"padding_mask must be a bool tensor (True at padding), got "
            f"{getattr(padding_mask, 'dtype', type(padding_mask).__name__)}"
        )
    pad = padding_mask.to(activation.device)
    if pad.dim() == activation.dim() - 1:
        pad = pad.unsqueeze(-1)
    try:
        return torch.broadcast_to(pad, activation.shape)
    except RuntimeError:
        raise ValueError(
            f"padding_mask of shape {tuple(padding_mask.shape)} does not fit the layer's output "
            f"{tuple(activation.shape)}: give (N, L) for an (N, L, D) output, or a shape "
            "broadcastable to the output"
        ) from None


class LayerMeaningfulPerturbation(_LayerMask):
    r"""
    Meaningful Perturbation (:class:`~captum_masks.MeaningfulPerturbation`) of a layer's output:
    the mask keeps or deletes positions of ``layer``'s output (tokens of an embedding, cells of a
    feature map) and the attributions have that output's shape, as Captum's
    ``LayerIntegratedGradients`` returns them. A deleted position takes ``layer_baselines``
    (default: each example's mean over the positions, per feature, e.g. the mean token
    embedding).

    For a token layer, (N, L, D) for (N, L) token ids (an ``nn.Embedding``, a transformer's
    embeddings block, ``model.get_input_embeddings()``), the mask spans the L tokens
    (``channels_last=True`` is set for you); for other layers pass ``channels_last`` as for
    the method itself. The defaults give one mask value per position
    (``mask=UpsampledMask(factor=1, smooth_sigma=0, jitter=0)``: neighbouring tokens are not
    neighbouring pixels); pass another :class:`~captum_masks.UpsampledMask` for feature maps.

    Args:
        forward_func (Callable): the model, taking the caller's inputs (token ids included).
        layer (nn.Module): the module whose output is masked; it must run once per forward pass
            and return one tensor.
        device_ids (list of int, optional): as in Captum's Layer methods (DataParallel).

    Examples::

        >>> explainer = LayerMeaningfulPerturbation(text_model, text_model.embedding)
        >>> token_importance = explainer.attribute(token_ids, target=1)   # (N, L, D)
        >>> per_token = token_importance[..., 0]                           # (N, L)
    """

    method = MeaningfulPerturbation
    layer_defaults = {
        "perturbation": "constant",
        "mask": UpsampledMask(factor=1, smooth_sigma=0.0, jitter=0),
        "tv_weight": 0.0,
    }

    def _keeps_a_token(self, kwargs: dict) -> bool:
        return kwargs.get("game", "deletion") == "preservation"


class LayerNeuroMask(_LayerMask):
    r"""
    NeuroMask (:class:`~captum_masks.NeuroMaskAttr`) of a layer's output: a mask over the
    positions of ``layer``'s output (tokens of an embedding, cells of a feature map) whose product
    with that output keeps the prediction while being sparse. Attributions have the layer
    output's shape, as Captum's ``LayerIntegratedGradients`` returns them. A masked-out position
    becomes ``layer_baselines`` (default 0, the paper's multiplication m·h).

    For a token layer, (N, L, D) for (N, L) token ids (an ``nn.Embedding``, a transformer's
    embeddings block, ``model.get_input_embeddings()``), the mask spans the L tokens
    (``channels_last=True`` is set for you); for other layers pass ``channels_last`` as for
    :class:`~captum_masks.NeuroMaskAttr`. The Laplacian smoothness is off
    (``smooth_weight=0``): neighbouring tokens need not matter alike. Each position gets its
    own weight (``mask=SigmoidMask(block=1)``), on a feature map as on tokens.

    Args:
        forward_func (Callable): the model, taking the caller's inputs (token ids included).
        layer (nn.Module): the module whose output is masked; it must run once per forward pass
            and return one tensor.
        device_ids (list of int, optional): as in Captum's Layer methods (DataParallel).

    Examples::

        >>> explainer = LayerNeuroMask(text_model, text_model.embedding)
        >>> token_importance = explainer.attribute(token_ids, target=1)[..., 0]   # (N, L)
    """

    method = NeuroMaskAttr
    layer_defaults = {
        "smooth_weight": 0.0,
        "mask": SigmoidMask(block=1),
    }

    token_baseline = 0.0  # the paper's multiplication m·h

    def _keeps_a_token(self, kwargs: dict) -> bool:
        return True


__all__ = ["LayerMeaningfulPerturbation", "LayerNeuroMask"]
