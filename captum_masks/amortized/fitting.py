"""``AmortizedExplainer.fit``: the training rows of a batch, the loss terms, and the training loop
with early stopping, checkpoints, resume and ``torchrun``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_masks._engine.checks import (
    check_bool,
    check_choice,
    check_positive,
    check_positive_int,
    check_seed,
)
from captum_masks._engine.distributed import rank_and_world_size
from captum_masks._engine.files import save_atomically
from captum_masks._engine.model_state import (
    modules_of,
    restored_buffers,
    warn_if_training,
)
from captum_masks.amortized.distributed import shard, wrap_distributed
from captum_masks.amortized.losses import LOSSES, ExplainedBatch, LossSettings
from captum_masks.amortized.network import ExplainerNetwork, ModelCall
from captum_masks.amortized.networks import checked_logits
from captum_masks.amortized.persistence import (
    check_config,
    checkpoint_header,
    read_checkpoint,
)
from captum_masks.amortized.training import (
    FitHistory,
    TrainingState,
    evaluating,
    frozen,
    mean_loss,
    record_epoch,
    train_epoch,
)

TARGET_SOURCES = ("labels", "predictions")


@dataclass
class _Batch:
    inputs: Tensor  # what the explainer masks, channels first, (B, C, *spatial)
    is_target: Tensor  # (N, num_classes) bool: the classes Y the row is explained for
    is_present: Tensor  # (N, num_classes) bool: all the classes of the row's input
    call: ModelCall  # what else the classifier takes, (B, ...)
    rows: Tensor | None = None  # (N,): the input each row explains; None when row i is input i


class Trainer:
    """Fits an :class:`~captum_masks.amortized.network.ExplainerNetwork` with the classifier
    frozen: the training rows of a batch, their loss terms, and the loop with early stopping,
    checkpoints, resume and ``torchrun``.

    Args:
        network (ExplainerNetwork): the network and what feeds it.
        settings (LossSettings): the loss and its weights.
        targets (str): ``"labels"`` or ``"predictions"``.
        separate_classes (bool): one training row per (input, class of that input).
    """

    def __init__(
        self,
        network: ExplainerNetwork,
        settings: LossSettings,
        targets: str,
        separate_classes: bool,
    ) -> None:
        settings.validate()
        check_choice("targets", targets, TARGET_SOURCES)
        check_bool("separate_classes", separate_classes)
        self.network, self.settings = network, settings
        self.targets, self.separate_classes = targets, separate_classes

    def targets_of(self, x: Tensor, labels: Tensor | None, call: ModelCall) -> Tensor:
        """(N, num_classes) bool: the classes Y each input is explained for."""
        network = self.network
        if self.targets == "predictions":
            with torch.no_grad():
                scores = network.classify(x, call)
            if not network.multilabel:
                return F.one_hot(scores.argmax(dim=1), network.num_classes).bool()
            present = scores.sigmoid() > 0.5
            top = F.one_hot(scores.argmax(dim=1), network.num_classes).bool()
            # an input with no class above 0.5 is explained for its top class
            return torch.where(present.any(dim=1, keepdim=True), present, top)
        if labels is None:
            raise ValueError(
                "the data gave inputs without labels; pass (inputs, labels) batches or "
                "targets='predictions'"
            )
        labels = labels.to(x.device)
        if network.multilabel:
            if labels.shape != (x.shape[0], network.num_classes):
                raise ValueError(
                    f"multi-label labels must be (N, num_classes) = ({x.shape[0]}, "
                    f"{network.num_classes}) multi-hot, got shape {tuple(labels.shape)}"
                )
            if not ((labels == 0) | (labels == 1)).all():
                raise ValueError("multi-label labels must hold only 0 and 1")
            return labels.bool()
        if labels.shape != (x.shape[0],) or labels.is_floating_point():
            raise ValueError(
                f"single-label labels must be ({x.shape[0]},) class indices, got "
                f"{labels.dtype} of shape {tuple(labels.shape)}"
            )
        if ((labels < 0) | (labels >= network.num_classes)).any():
            raise ValueError(
                f"labels must be in [0, {network.num_classes}), got values from "
                f"{int(labels.min())} to {int(labels.max())}"
            )
        return F.one_hot(labels.long(), network.num_classes).bool()

    def batch(self, batch: Any) -> _Batch:
        """The training rows of one batch of the data."""
        if isinstance(batch, Tensor):
            inputs, labels, additional = batch, None, ()
        elif isinstance(batch, (tuple, list)) and batch:
            inputs, labels, *rest = (*batch, None) if len(batch) == 1 else batch
            additional = tuple(rest)
        else:
            raise TypeError(
                "each batch must be an inputs tensor or an (inputs, labels, "
                f"*additional_forward_args) tuple, got {type(batch).__name__}"
            )
        x, call = self.network.check_inputs(inputs, additional)
        is_target = self.targets_of(x, labels, call)
        if self.separate_classes:  # one row per (input, class of that input)
            rows, classes = is_target.nonzero(as_tuple=True)
            one_class = F.one_hot(classes, self.network.num_classes).bool()
            return _Batch(x, one_class, is_target[rows], call, rows)
        return _Batch(x, is_target, is_target, call)

    def loss_terms(self, batch: _Batch, explainer: nn.Module) -> dict[str, Tensor]:
        """Per-example loss terms (each (N,)) of one batch, under the settings' loss."""
        network = self.network
        x, call = batch.inputs, batch.call
        logits = checked_logits(explainer, network.inputs(x, call), x, network.num_classes)
        if batch.rows is not None:
            # the explainer sees each input once, however many of its classes have a row: its
            # logits hold every class, so the rows share them (half the cost on pairs)
            x, logits, call = x[batch.rows], logits[batch.rows], call.take(batch.rows)
        explained = ExplainedBatch(
            x.to(logits.dtype),
            batch.is_target,
            batch.is_present,
            # the classifier in the data's dtype, on the rows' own inputs with ``layer``; the
            # loss stacks masked copies of the rows into one pass
            lambda masked: network.classify(
                masked, call.repeated(masked.shape[0] // x.shape[0]), x.dtype
            ),
            network.baselines,
            network.multilabel,
            call.padding,
            network.tokens,
        )
        return LOSSES[self.settings.loss](explained, logits, self.settings)

    def fit(
        self,
        train_data: Iterable,
        val_data: Iterable | None,
        epochs: int,
        lr: float,
        patience: int | None,
        checkpoint: str | os.PathLike | None,
        resume: bool,
        seed: int,
        show_progress: bool,
    ) -> FitHistory:
        """Train on ``train_data`` (see :meth:`~captum_masks.AmortizedExplainer.fit`)."""
        _check_fit_arguments(epochs, patience, lr, checkpoint, resume, seed)
        _check_reiterable(train_data=train_data, val_data=val_data)
        network = self.network
        network.seed = seed
        rank, world_size = rank_and_world_size()
        first = next(iter(train_data), None)
        if first is None:
            raise ValueError("train_data gave no batch")
        classifier = modules_of(network.forward_func)
        with restored_buffers(classifier), torch.no_grad():
            # builds the network from the first input (the classifier runs for its features too)
            first_batch = self.batch(first)
            network.logits(first_batch.inputs[:1], first_batch.call.take(slice(0, 1)))
        module = network.module
        assert module is not None
        optimizer = torch.optim.Adam(module.parameters(), lr=lr)
        state = TrainingState()
        if resume and checkpoint is not None and Path(checkpoint).exists():
            state = self._resume(checkpoint, optimizer)
        trained = wrap_distributed(module) if world_size > 1 else module

        def step(raw: Any) -> dict[str, Tensor]:
            return self.loss_terms(self.batch(raw), trained)

        def validation_step(raw: Any) -> dict[str, Tensor]:
            return self.loss_terms(self.batch(raw), module)

        module.train()
        warn_if_training(classifier, "the classifier (forward_func)")
        with frozen(classifier), restored_buffers(classifier):
            for epoch in range(state.next_epoch, epochs):
                if state.history.stopped_early:
                    break
                batches = shard(train_data, epoch, rank, world_size)
                description = f"Explainer epoch {epoch + 1}/{epochs}"
                means = train_epoch(
                    step, batches, optimizer, description, show_progress and rank == 0
                )
                monitored = record_epoch(state.history, means)
                if val_data is not None:
                    monitored = self._evaluate(val_data, validation_step)
                    state.history.val_loss.append(monitored)
                state.end_epoch(epoch, monitored, module, patience)
                if checkpoint is not None and rank == 0:
                    content = {"state": module.state_dict(), **state.to_checkpoint()}
                    content["optimizer"] = optimizer.state_dict()
                    save_atomically({**checkpoint_header(network.config()), **content}, checkpoint)
        module.eval()
        if state.best_state is not None:
            module.load_state_dict(state.best_state)
        network.trained = True
        return state.history

    def _evaluate(self, data: Iterable, step: Callable[[Any], dict[str, Tensor]]) -> float:
        """The mean validation loss, with the explainer in eval mode."""
        with evaluating(self.network.module):
            return mean_loss(step, data)

    def _resume(
        self, checkpoint: str | os.PathLike, optimizer: torch.optim.Optimizer
    ) -> TrainingState:
        """Load the network and optimiser from ``checkpoint``; returns its training state."""
        saved = read_checkpoint(checkpoint)
        check_config(saved["config"], self.network.config())
        assert self.network.module is not None
        self.network.module.load_state_dict(saved["state"])
        optimizer.load_state_dict(saved["optimizer"])
        return TrainingState.from_checkpoint(saved)


def _check_fit_arguments(
    epochs: Any, patience: Any, lr: Any, checkpoint: Any, resume: bool, seed: Any
) -> None:
    check_positive_int("epochs", epochs)
    check_positive_int("patience", patience, allow_none=True)
    check_positive("lr", lr)
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    check_seed(seed)


def _check_reiterable(**data: Iterable | None) -> None:
    for name, value in data.items():
        if value is not None and iter(value) is value:
            raise TypeError(
                f"{name} must be re-iterable, once per epoch (a DataLoader or a list of "
                "batches), not a one-shot iterator or generator"
            )


__all__ = ["TARGET_SOURCES", "Trainer"]
