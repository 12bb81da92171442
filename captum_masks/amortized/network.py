"""The explainer network and what feeds it: the classifier's features, the inputs it masks, the
classifier's scores on masked inputs. :class:`~captum_masks.AmortizedExplainer` holds one and
hands it to training and checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from captum_masks._engine.call import work_dtype
from captum_masks._engine.checks import format_inputs, run_forward
from captum_masks._engine.hooks import last_feature_map, replacing_output, run_recording
from captum_masks._engine.layout import MaskLayout
from captum_masks._engine.model_state import seeded_global_rng
from captum_masks._engine.model_structure import is_token_layer, padding_positions_of
from captum_masks._engine.user_warnings import warn_user
from captum_masks.amortized.networks import MaskNet, checked_logits, deeplab_explainer
from captum_masks.amortized.persistence import feature_channels
from captum_masks.masks.interpolation import upsample_linearly

#: wider maps (an ImageNet network's head) are left out of the automatic choice
AUTO_MAX_CHANNELS = 256


@dataclass(frozen=True)
class ModelCall:
    """What the classifier takes besides what the explainer masks, batch-first.

    Attributes:
        model_inputs (Tensor or None): with ``layer``, the caller's inputs (token ids) that the
            classifier runs on with the layer's output swapped in.
        additional (tuple): the classifier's arguments after its inputs (an attention mask).
        padding (Tensor or None): ``(N, 1, *positions)`` bool, True at padding tokens: masked
            inputs keep them as they are, and their mask is 0.
    """

    model_inputs: Tensor | None = None
    additional: tuple = ()
    padding: Tensor | None = None

    def take(self, rows: Tensor | slice) -> ModelCall:
        """The examples at ``rows``."""
        return ModelCall(
            None if self.model_inputs is None else self.model_inputs[rows],
            tuple(arg[rows] for arg in self.additional),
            None if self.padding is None else self.padding[rows],
        )

    def repeated(self, copies: int) -> ModelCall:
        """For ``copies`` masked versions of the batch stacked in one classifier pass."""
        return ModelCall(
            _repeat(self.model_inputs, copies),
            tuple(_repeat(arg, copies) for arg in self.additional),
            _repeat(self.padding, copies),
        )


def _repeat(value: Any, copies: int) -> Any:
    if not isinstance(value, Tensor):
        return value
    return value.repeat(copies, *[1] * (value.dim() - 1))


class ExplainerNetwork:
    """The explainer network of a classifier, with its settings (all checked by
    :class:`~captum_masks.AmortizedExplainer`).

    Attributes:
        forward_func (Callable): the classifier.
        num_classes (int): its number of classes.
        kind (str): ``"compact"`` (:class:`MaskNet`), ``"deeplabv3_resnet50"`` or ``"custom"``.
        module (nn.Module or None): the network; the default one is built on the first input.
        multilabel (bool): several classes per input.
        feature_layer (nn.Module, "auto" or None): the classifier's features fed to it.
        layer (nn.Module or None): explain through this module's output.
        layout (MaskLayout): where the channels of what it masks are (for a token layer, found
            on the first input unless given).
        tokens (bool): ``layer`` outputs one vector per token (known after the first input).
        width, depth (int): the default :class:`MaskNet`'s size.
        baselines (float): what masked-out input becomes.
        input_shape (tuple or None): (input channels, spatial axes) it was built for.
        trained (bool): fitted or loaded (a network handed over counts as trained).
        seed (int): seeds the default network's initial weights.
    """

    def __init__(
        self,
        forward_func: Callable,
        num_classes: int,
        kind: str,
        module: nn.Module | None,
        multilabel: bool,
        feature_layer: nn.Module | str | None,
        layer: nn.Module | None,
        layout: MaskLayout,
        width: int,
        depth: int,
        baselines: float,
    ) -> None:
        self.forward_func, self.num_classes, self.kind, self.module = (
            forward_func,
            num_classes,
            kind,
            module,
        )
        self.multilabel, self.feature_layer, self.layer, self.layout = (
            multilabel,
            feature_layer,
            layer,
            layout,
        )
        self.width, self.depth, self.baselines = width, depth, baselines
        # None: an (N, L, D) token layer's output, found on the first input, is channels last
        self.layout_is_known = layout.explicit or layer is None
        self.tokens = isinstance(layer, nn.Embedding)  # the mask's positions are tokens
        self.input_shape: tuple[int, int] | None = None
        self.trained = module is not None
        self.seed = 0

    def config(self) -> dict:
        """The settings a checkpoint stores and checks, as plain values."""
        channels, dims = self.input_shape or (None, None)
        return {
            "num_classes": self.num_classes,
            "multilabel": self.multilabel,
            "channels_last": self.layout.channels_last,
            "width": self.width,
            "depth": self.depth,
            "baselines": self.baselines,
            "explainer": self.kind,
            "input_channels": channels,
            "spatial_dims": dims,
            "feature_layer": self._module_name(self.feature_layer),
            "layer": self._module_name(self.layer),
        }

    def _module_name(self, layer: nn.Module | str | None) -> str | None:
        """The name of ``layer`` inside the classifier, the form a checkpoint stores it in."""
        if not isinstance(layer, nn.Module) or not isinstance(self.forward_func, nn.Module):
            return None
        return next(name for name, module in self.forward_func.named_modules() if module is layer)

    def features(self, x: Tensor, call: ModelCall) -> Tensor | None:
        """The classifier's features of ``x`` at ``feature_layer``, at their own resolution."""
        if isinstance(self.feature_layer, str):  # "auto", resolved on the first input
            self.feature_layer = (
                None if self.layout.channels_last else self.last_feature_map(x, call)
            )
        if self.feature_layer is None:
            return None
        with torch.no_grad():
            (features,) = run_recording(
                lambda: self.forward_func(self.layout.to_caller(x), *call.additional),
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

    def last_feature_map(self, x: Tensor, call: ModelCall) -> nn.Module | None:
        """The module ``feature_layer="auto"`` stands for, found on one input (the
        constructor keeps "auto" only for a classifier that is a module)."""
        assert isinstance(self.forward_func, nn.Module)
        return last_feature_map(
            self.forward_func,
            lambda: self.forward_func(
                self.layout.to_caller(x[:1]), *(arg[:1] for arg in call.additional)
            ),
            x.shape[2:],
            AUTO_MAX_CHANNELS,
        )

    def inputs(self, x: Tensor, call: ModelCall) -> tuple[Tensor, ...]:
        """The explainer network's arguments in the work dtype (float32 for half precision): ``x``
        and the classifier's features, native for MaskNet, else resized and concatenated."""
        features = self.features(x, call)
        x = x.to(work_dtype(x.dtype))  # the explainer trains in full precision
        if features is None:
            return (x,)
        features = features.to(x.dtype)
        if self.kind == "compact":
            return x, features
        return (torch.cat([x, upsample_linearly(features, x.shape[2:])], dim=1),)

    def build(self, explainer_inputs: tuple[Tensor, ...], input_channels: int) -> nn.Module:
        """The network, built for these inputs the first time (the default one), on their device
        and dtype."""
        explainer_input = explainer_inputs[0]
        spatial_dims = explainer_input.dim() - 2
        if self.module is None:
            with seeded_global_rng(self.seed):
                if self.kind == "deeplabv3_resnet50":
                    if spatial_dims != 2 or explainer_input.shape[1] != 3:
                        raise ValueError(
                            "explainer='deeplabv3_resnet50' takes (N, 3, H, W) images without "
                            f"feature_layer; got an explainer input of shape "
                            f"{tuple(explainer_input.shape)}"
                        )
                    self.module = deeplab_explainer(self.num_classes)
                else:
                    self.module = MaskNet(
                        explainer_input.shape[1],
                        self.num_classes,
                        spatial_dims,
                        self.width,
                        self.depth,
                        feature_channels=sum(f.shape[1] for f in explainer_inputs[1:]),
                    )
            self.module.eval()  # fit switches it to training mode while it trains
            self.input_shape = (input_channels, spatial_dims)
        return self.module.to(device=explainer_input.device, dtype=explainer_input.dtype)

    def restore(self, config: dict, state: dict) -> None:
        """Build the network a checkpoint's ``config`` describes (the default one from the input
        shape it recorded) and load its ``state``: the network is then trained."""
        if self.module is None:
            channels, dims = config["input_channels"], config["spatial_dims"]
            features = feature_channels(state, self.kind)
            probe = torch.zeros(1, channels, *([8] * dims))
            fed = (torch.zeros(1, features, *([1] * dims)),) if features else ()
            self.build((probe, *fed), channels)
        assert self.module is not None
        self.module.load_state_dict(state)
        self.trained = True
        if config["input_channels"] is not None:
            self.input_shape = (config["input_channels"], config["spatial_dims"])

    def target_logits(self, x: Tensor, classes: Tensor, call: ModelCall) -> Tensor:
        """The logits S_c (N, 1, *spatial) of one class c per example."""
        explainer_inputs = self.inputs(x, call)
        module = self.build(explainer_inputs, x.shape[1])
        if isinstance(module, MaskNet) and module.head.out_channels == self.num_classes:
            return module.class_logits(explainer_inputs[0], classes, *explainer_inputs[1:])
        rows = torch.arange(x.shape[0], device=x.device)
        return checked_logits(module, explainer_inputs, x, self.num_classes)[
            rows, classes
        ].unsqueeze(1)

    def logits(self, x: Tensor, call: ModelCall) -> Tensor:
        """Class logits S (N, num_classes, *spatial) for channels-first inputs."""
        explainer_inputs = self.inputs(x, call)
        module = self.build(explainer_inputs, x.shape[1])
        return checked_logits(module, explainer_inputs, x, self.num_classes)

    def check_inputs(self, inputs: Any, additional: tuple = ()) -> tuple[Tensor, ModelCall]:
        """The tensor the explainer masks, channels first, and what else the classifier takes:
        (with ``layer``) the caller's inputs, the ``additional`` arguments after them, and
        the padding of token ids (a Hugging Face model's ``config.pad_token_id``)."""
        if self.layer is None:
            (x,) = format_inputs(
                inputs if isinstance(inputs, Tensor) else tuple(inputs), (1, 2, 3)
            )
            return self._checked_shape(self.layout.to_channels_first(x)), ModelCall(
                additional=additional
            )
        (model_inputs,) = format_inputs(
            inputs if isinstance(inputs, Tensor) else tuple(inputs), masked=False
        )
        with torch.no_grad():
            (x,) = run_recording(
                lambda: self.forward_func(model_inputs, *additional), [self.layer]
            )
        if x.dim() not in (3, 4, 5):
            raise ValueError(
                f"layer {type(self.layer).__name__} returns shape {tuple(x.shape)}; the "
                "explainer masks outputs with 1 to 3 axes of positions: (N, L, D), "
                "(N, C, L), (N, C, H, W) or (N, C, D, H, W)"
            )
        tokens = is_token_layer(self.layer, (model_inputs,), x)
        self.tokens = tokens
        if not self.layout_is_known:
            self.layout, self.layout_is_known = MaskLayout(tokens), True
        padding = None
        if tokens and self.layout.channels_last:
            padding = padding_positions_of(self.forward_func, model_inputs)
        call = ModelCall(
            model_inputs, additional, None if padding is None else padding.unsqueeze(1)
        )
        return self._checked_shape(self.layout.to_channels_first(x)), call

    def _checked_shape(self, x: Tensor) -> Tensor:
        if self.input_shape is not None and (x.shape[1], x.dim() - 2) != self.input_shape:
            channels, dims = self.input_shape
            raise ValueError(
                f"inputs must have {channels} channels and {dims} spatial axes like the data "
                f"the explainer was built for, got shape {tuple(x.shape)}"
            )
        return x

    def warn_if_untrained(self) -> None:
        if not self.trained:
            warn_user(
                "the explainer network has not been trained: its masks (about 0.5 everywhere) "
                "say nothing about the model. Call fit(...) or AmortizedExplainer.load(...) "
                "first"
            )

    def classify(self, x: Tensor, call: ModelCall, dtype: torch.dtype | None = None) -> Tensor:
        """The classifier's scores for channels-first ``x``, which is cast to ``dtype`` (the
        data's own) first; the scores come back in the work dtype. With ``layer``, ``x`` is that
        layer's (masked) output and the classifier runs on the call's inputs with it swapped
        in."""
        caller = self.layout.to_caller(x if dtype is None else x.to(dtype))
        if self.layer is None:
            scores = run_forward(self.forward_func, (caller,), call.additional)
        else:
            assert call.model_inputs is not None, "a layer's output needs the model's own inputs"
            with replacing_output(self.layer, caller):
                scores = run_forward(self.forward_func, (call.model_inputs,), call.additional)
        scores = scores.to(work_dtype(x.dtype))
        if scores.dim() != 2 or scores.shape[1] != self.num_classes:
            raise ValueError(
                f"forward_func must return (N, {self.num_classes}) scores for num_classes="
                f"{self.num_classes}, got {tuple(scores.shape)}"
            )
        return scores


__all__ = ["AUTO_MAX_CHANNELS", "ExplainerNetwork", "ModelCall"]
