"""Amortised explanation: a network trained once that gives every class's mask in one forward pass
(Stalder, Pittet, Gerber & Zimmermann, "What You See is What You Classify: Black Box Attributions",
NeurIPS 2022; Phillips, Schmidt & Stevens, "Explanatory Masks for Neural Network
Interpretability")."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import torch
from captum.log import log_usage
from torch import Tensor, nn

from captum_masks._engine.call import MaskAttribution
from captum_masks._engine.checks import (
    check_bool,
    check_choice,
    check_one_tensor,
    check_positive_ints,
    format_inputs,
)
from captum_masks._engine.compat import (
    TargetType,
    _format_additional_forward_args,
    _format_output,
)
from captum_masks._engine.files import save_atomically
from captum_masks._engine.hooks import check_layers
from captum_masks._engine.layout import MaskLayout
from captum_masks._engine.model_state import leaves_model_as_found
from captum_masks.amortized.fitting import Trainer
from captum_masks.amortized.losses import LossSettings, without_padding
from captum_masks.amortized.network import ExplainerNetwork
from captum_masks.amortized.persistence import (
    checkpoint_header,
    read_checkpoint,
)
from captum_masks.amortized.training import FitHistory, evaluating

#: ``feature_layer``'s default: the classifier's last feature map
AUTO_FEATURES = "auto"


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
    image's classes Y and n = σ(max_{c∉P} S_c) the mask of the classes P it does not hold:

    .. math::
        L = L_c(f(m \odot x), Y)
            + \lambda_e \tfrac{1}{C}\textstyle\sum_c \tilde p_c \log \tilde p_c
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
            epochs (measured on the docs' AmortizedExplainer page). None: the input alone, as in
            Stalder et al.
            Default: "auto"
        channels_last (bool, optional): inputs (or ``layer``'s output) are (N, L, D) sequences
            with the features last; the mask spans the positions. None: True for a token layer
            (an ``nn.Embedding``, or a layer whose output is (N, L, D) for (N, L) token ids, such
            as a transformer's embeddings block), found on the first input; False otherwise.
            Default: None
        width (int, optional): width of the default :class:`MaskNet`. Default: 16
        depth (int, optional): number of halvings of the default :class:`MaskNet`. Default: 2
        baselines (float, optional): the value masked-out input takes. Default: 0
        layer (nn.Module, optional): explain through this module's output instead of the
            input, in Captum's Layer convention: the explainer sees and masks the output of
            ``layer`` (for a token-id model, its ``nn.Embedding``: one mask value per token),
            the classifier runs on the caller's inputs with that output swapped in, and
            :meth:`attribute` returns attributions shaped like it. Inputs may then be token
            ids; on a model whose ``config`` names a padding token (Hugging Face's
            ``pad_token_id``), its positions keep their own output, are left out of the
            mask and its area terms, and get attribution 0. Default: None

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
        check_bool("multilabel", multilabel)
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
        self.network = ExplainerNetwork(
            forward_func,
            num_classes,
            kind="custom" if isinstance(explainer, nn.Module) else explainer or "compact",
            module=explainer if isinstance(explainer, nn.Module) else None,
            multilabel=multilabel,
            feature_layer=feature_layer,
            layer=layer,
            # None with a layer: its output on the first input says whether it holds tokens
            layout=MaskLayout(True if isinstance(layer, nn.Embedding) else channels_last),
            width=width,
            depth=depth,
            baselines=float(baselines),
        )

    @property
    def explainer(self) -> nn.Module | None:
        """The explainer network (None until it is built on the first input, fit or load)."""
        return self.network.module

    @property
    def num_classes(self) -> int:
        return self.network.num_classes

    @property
    def multilabel(self) -> bool:
        return self.network.multilabel

    @property
    def feature_layer(self) -> nn.Module | str | None:
        return self.network.feature_layer

    @property
    def layer(self) -> nn.Module | None:
        return self.network.layer

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
                the inputs, e.g. a text transformer's attention mask. Default: None

        Returns:
            *Tensor* (or a 1-tuple for a 1-tuple input) of **attributions** with the input's
            shape (``layer``'s output's with ``layer``), in [0, 1]: the mask σ(S_target), the
            same for every feature channel; exactly 0 at padding tokens.

        Examples::

            >>> explainer.attribute(images, target=torch.tensor([0, 3]))
        """
        check_one_tensor(inputs)
        spatial_dims = (1, 2, 3) if self.network.layer is None else None
        formatted = format_inputs(inputs, spatial_dims, masked=self.network.layer is None)
        call = self._prepare(inputs, formatted, target, additional_forward_args)
        if call.targets.shape[1] != 1 or call.clean_output.shape[1] != self.network.num_classes:
            raise ValueError(
                f"forward_func must return (N, {self.network.num_classes}) scores for num_classes="
                f"{self.network.num_classes}, got {tuple(call.clean_output.shape)}"
            )
        x, model_call = self.network.check_inputs(call.inputs[0], call.additional_args or ())
        self.network.warn_if_untrained()
        with torch.no_grad(), evaluating(self.network.module):
            logits = self.network.target_logits(x, call.targets[:, 0], model_call)
            mask = without_padding(torch.sigmoid(logits), model_call.padding)
        attribution = self.network.layout.to_caller(mask.expand_as(x)).to(x.dtype).contiguous()
        return _format_output(call.is_inputs_tuple, (attribution,))

    @leaves_model_as_found
    def explain_all(self, inputs: Tensor, additional_forward_args: Any = None) -> Tensor:
        """Every class's mask in one forward pass.

        Args:
            inputs (Tensor): as for :meth:`attribute`.
            additional_forward_args (Any, optional): as for :meth:`attribute`. Default: None

        Returns:
            Tensor (N, num_classes, \\*spatial) in [0, 1] in the input's dtype; the spatial axes
            are (H, W) or (L,) (also for ``channels_last`` inputs).

        Examples::

            >>> masks = explainer.explain_all(images)     # masks[:, c] explains class c
        """
        additional = _format_additional_forward_args(additional_forward_args) or ()
        x, model_call = self.network.check_inputs(inputs, additional)
        self.network.warn_if_untrained()
        with torch.no_grad(), evaluating(self.network.module):
            masks = torch.sigmoid(self.network.logits(x, model_call))
            return without_padding(masks, model_call.padding).to(x.dtype)

    def fit(
        self,
        train_data: Iterable,
        val_data: Iterable | None = None,
        epochs: int = 10,
        loss: str = "stalder",
        targets: str = "labels",
        lr: float = 4e-3,
        entropy_weight: float = 1.0,
        area_weight: float = 1.0,
        tv_weight: float | None = None,
        area_bounds: tuple[float, float] = (0.05, 0.3),
        mask_area_weights: tuple[float, float] = (0.1, 0.3),
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
                multi-hot. Items after the labels, ``(inputs, labels, *args)``, are passed to
                ``forward_func`` after the inputs, as ``additional_forward_args`` (e.g. a text
                transformer's attention mask).
            val_data (iterable, optional): the same, evaluated after every epoch; early stopping
                and the kept explainer follow its loss (else the training loss).
            epochs (int, optional): maximum number of passes over ``train_data``. Default: 10
            loss (str, optional): ``"stalder"`` (Eq. 1–8) or ``"phillips"``. Default: "stalder"
            targets (str, optional): explain the ``"labels"`` of the data (Stalder et al.'s
                choice) or the classifier's ``"predictions"``. Default: "labels"
            lr (float, optional): Adam's learning rate. Default: 4e-3
            entropy_weight (float, optional): λ_e. Default: 1
            area_weight (float, optional): λ_a. Default: 1
            tv_weight (float, optional): λ_tv. None: 1, and 0 through a token layer, whose
                neighbouring tokens need not matter alike (as for the Layer classes).
                Default: None
            area_bounds (tuple of float, optional): (a, b), the least and largest area of a
                present class's mask (Eq. 4–5). Default: (0.05, 0.3)
            mask_area_weights (tuple of float, optional): the weights of A(m) and A(n) inside
                λ_a's term: the authors' code's (0.1, 0.3), under which the classification term
                outweighs the area and each class's mask leaves the other classes' objects
                sooner; (1, 1) is Eq. 6 as written, with tighter masks that take longer to
                become class-specific (the docs' AmortizedExplainer page). Default: (0.1, 0.3)
            l1_weight, l2_weight (float, optional): Phillips et al.'s penalties on the mask
                (their values). Default: 1e-3, 1e-4
            separate_classes (bool, optional): train on one row per (input, class of that
                input): the target set Y is that class alone, and every other class, present
                or not, is a non-target, so m ⊙ x must show that class without the others and a
                class's mask has to leave out the other classes' objects. False is Eq. 2 as
                written, all of an input's classes in one m; on the two-object synthetic suite
                that gave every class the same mask (the docs' AmortizedExplainer page).
                Single-label data is the same either way. Default: True
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
        settings = LossSettings(
            loss,
            entropy_weight,
            area_weight,
            tv_weight,
            area_bounds,
            mask_area_weights,
            l1_weight,
            l2_weight,
        )
        trainer = Trainer(self.network, settings, targets, separate_classes)
        return trainer.fit(
            train_data,
            val_data,
            epochs=epochs,
            lr=lr,
            patience=patience,
            checkpoint=checkpoint,
            resume=resume,
            seed=seed,
            show_progress=show_progress,
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write the trained explainer and its settings (atomically: a temporary file, then a
        rename).

        Args:
            path (str or path): the file to write.

        Examples::

            >>> explainer.save("explainer.pt")
        """
        module = self.network.module
        if module is None:
            raise ValueError("nothing to save: fit the explainer (or call attribute) first")
        save_atomically(
            {**checkpoint_header(self.network.config()), "state": module.state_dict()}, path
        )

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
        saved = read_checkpoint(path, map_location)
        config = saved["config"]
        if config["explainer"] == "custom" and explainer is None:
            raise ValueError(
                f"{os.fspath(path)} holds a custom explainer network: pass an instance of it as "
                "explainer="
            )
        layers = {}
        for key in ("feature_layer", "layer"):  # checkpoints before layer= have no "layer"
            if config.get(key) is not None:
                if not isinstance(forward_func, nn.Module):
                    raise ValueError(f"the explainer used a {key}: forward_func must be the model")
                layers[key] = forward_func.get_submodule(config[key])
        restored = cls(
            forward_func,
            config["num_classes"],
            explainer={"custom": explainer, "compact": None}.get(
                config["explainer"], config["explainer"]
            ),
            multilabel=config["multilabel"],
            feature_layer=layers.get("feature_layer"),
            layer=layers.get("layer"),
            channels_last=config["channels_last"],
            width=config["width"],
            depth=config["depth"],
            baselines=config["baselines"],
        )
        restored.network.restore(config, saved["state"])
        return restored


__all__ = ["AmortizedExplainer"]
