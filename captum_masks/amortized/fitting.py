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

from captum_masks._engine.checks import check_choice, check_positive, check_positive_int
from captum_masks._engine.distributed import rank_and_world_size
from captum_masks._engine.files import save_atomically
from captum_masks._engine.model_state import (
    check_seed,
    modules_of,
    restored_buffers,
    warn_if_training,
)
from captum_masks.amortized.distributed import shard, wrap_distributed
from captum_masks.amortized.losses import LOSSES, ExplainedBatch, LossSettings
from captum_masks.amortized.networks import checked_logits
from captum_masks.amortized.persistence import read_checkpoint
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
    model_inputs: Tensor | None = None  # with ``layer``: the classifier's own inputs, (B, ...)
    rows: Tensor | None = None  # (N,): the input each row explains; None when row i is input i


class FittingMixin:
    """The training half of :class:`~captum_masks.AmortizedExplainer`."""

    def _targets_of(
        self, x: Tensor, labels: Tensor | None, source: str, model_inputs: Tensor | None
    ) -> Tensor:
        """(N, num_classes) bool: the classes Y each input is explained for."""
        if source == "predictions":
            with torch.no_grad():
                scores = self._classify(x, model_inputs=model_inputs)
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
        x, model_inputs = self._check_inputs(inputs)
        is_target = self._targets_of(x, labels, source, model_inputs)
        if separate_classes:  # one row per (input, class of that input)
            rows, classes = is_target.nonzero(as_tuple=True)
            one_class = F.one_hot(classes, self.num_classes).bool()
            return _Batch(x, one_class, is_target[rows], model_inputs, rows)
        return _Batch(x, is_target, is_target, model_inputs)

    def _loss_terms(
        self, batch: _Batch, settings: LossSettings, explainer: nn.Module
    ) -> dict[str, Tensor]:
        """Per-example loss terms (each (N,)) of one batch, under ``settings.loss``."""
        x, model_inputs = batch.inputs, batch.model_inputs
        logits = checked_logits(explainer, self._explainer_inputs(x), x, self.num_classes)
        if batch.rows is not None:
            # the explainer sees each input once, however many of its classes have a row: its
            # logits hold every class, so the rows share them (half the cost on pairs)
            x, logits = x[batch.rows], logits[batch.rows]
            model_inputs = None if model_inputs is None else model_inputs[batch.rows]
        explained = ExplainedBatch(
            x.to(logits.dtype),
            batch.is_target,
            batch.is_present,
            # the classifier in the data's dtype, on the rows' own inputs with ``layer``
            lambda masked: self._classify(masked, x.dtype, _rows_of(model_inputs, masked)),
            self.baselines,
            self.multilabel,
        )
        return LOSSES[settings.loss](explained, logits, settings)

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
        tv_weight: float = 1.0,
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
                multi-hot.
            val_data (iterable, optional): the same, evaluated after every epoch; early stopping
                and the kept explainer follow its loss (else the training loss).
            epochs (int, optional): maximum number of passes over ``train_data``. Default: 10
            loss (str, optional): ``"stalder"`` (Eq. 1–8) or ``"phillips"``. Default: "stalder"
            targets (str, optional): explain the ``"labels"`` of the data (Stalder et al.'s
                choice) or the classifier's ``"predictions"``. Default: "labels"
            lr (float, optional): Adam's learning rate. Default: 4e-3
            entropy_weight (float, optional): λ_e. Default: 1
            area_weight (float, optional): λ_a. Default: 1
            tv_weight (float, optional): λ_tv. Default: 1
            area_bounds (tuple of float, optional): (a, b), the least and largest area of a
                present class's mask (Eq. 4–5). Default: (0.05, 0.3)
            mask_area_weights (tuple of float, optional): the weights of A(m) and A(n) inside
                λ_a's term: the authors' code's (0.1, 0.3), under which the classification term
                outweighs the area and each class's mask leaves the other classes' objects
                sooner; (1, 1) is Eq. 6 as written, with tighter masks that take longer to
                become class-specific (README). Default: (0.1, 0.3)
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
        _check_fit_arguments(
            settings, targets, epochs, patience, lr, checkpoint, resume, seed, separate_classes
        )
        _check_reiterable(train_data=train_data, val_data=val_data)
        self._seed = seed
        rank, world_size = rank_and_world_size()
        first = next(iter(train_data), None)
        if first is None:
            raise ValueError("train_data gave no batch")
        classifier = modules_of(self.forward_func)
        with restored_buffers(classifier):  # the classifier runs for its features here too
            self._logits_shape_check(self._batch(first, targets, separate_classes))
        optimizer = torch.optim.Adam(self.explainer.parameters(), lr=lr)
        state = TrainingState()
        if resume and Path(checkpoint).exists():
            state = self._resume(checkpoint, optimizer)
        trained = wrap_distributed(self.explainer) if world_size > 1 else self.explainer

        def step(raw: Any) -> dict[str, Tensor]:
            return self._loss_terms(self._batch(raw, targets, separate_classes), settings, trained)

        def validation_step(raw: Any) -> dict[str, Tensor]:
            return self._loss_terms(
                self._batch(raw, targets, separate_classes), settings, self.explainer
            )

        self.explainer.train()
        warn_if_training(classifier, "the classifier (forward_func)")
        with frozen(classifier), restored_buffers(classifier):
            for epoch in range(state.next_epoch, epochs):
                if state.history.stopped_early:
                    break
                batches = shard(train_data, epoch, rank, world_size)
                description = f"Explainer epoch {epoch + 1}/{epochs}"
                means = train_epoch(step, batches, optimizer, description, show_progress and rank == 0)
                monitored = record_epoch(state.history, means)
                if val_data is not None:
                    monitored = self._evaluate(val_data, validation_step)
                    state.history.val_loss.append(monitored)
                state.end_epoch(epoch, monitored, self.explainer, patience)
                if checkpoint is not None and rank == 0:
                    content = {"state": self.explainer.state_dict(), **state.to_checkpoint()}
                    content["optimizer"] = optimizer.state_dict()
                    save_atomically({**self._checkpoint_header(), **content}, checkpoint)
        self.explainer.eval()
        if state.best_state is not None:
            self.explainer.load_state_dict(state.best_state)
        self._trained = True
        return state.history

    def _evaluate(self, data: Iterable, step: Callable[[Any], dict[str, Tensor]]) -> float:
        """The mean validation loss, with the explainer in eval mode."""
        with evaluating(self.explainer):
            return mean_loss(step, data)

    def _resume(self, checkpoint: str | os.PathLike, optimizer: torch.optim.Optimizer):
        """Load the networks and optimiser from ``checkpoint``; returns its training state."""
        saved = read_checkpoint(checkpoint)
        self._check_config(saved["config"])
        self.explainer.load_state_dict(saved["state"])
        optimizer.load_state_dict(saved["optimizer"])
        return TrainingState.from_checkpoint(saved)

    def _logits_shape_check(self, batch: _Batch) -> None:
        """Build the explainer from the first batch and check its output shape once."""
        with torch.no_grad():
            self._logits(batch.inputs[:1])


def _rows_of(model_inputs: Tensor | None, masked: Tensor) -> Tensor | None:
    """The classifier's inputs for a stack of masked copies of the batch (the loss classifies
    the kept and the removed parts in one pass): the batch's inputs repeated to match."""
    if model_inputs is None:
        return None
    copies = masked.shape[0] // model_inputs.shape[0]
    return model_inputs.repeat(copies, *[1] * (model_inputs.dim() - 1))


def _check_fit_arguments(
    settings: LossSettings,
    targets: str,
    epochs: Any,
    patience: Any,
    lr: Any,
    checkpoint: Any,
    resume: bool,
    seed: Any,
    separate_classes: Any,
) -> None:
    settings.validate()
    check_choice("targets", targets, TARGET_SOURCES)
    check_positive_int("epochs", epochs)
    check_positive_int("patience", patience, allow_none=True)
    check_positive("lr", lr)
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    check_seed(seed)
    if not isinstance(separate_classes, bool):
        raise TypeError(f"separate_classes must be a bool, got {type(separate_classes).__name__}")


def _check_reiterable(**data: Iterable | None) -> None:
    for name, value in data.items():
        if value is not None and iter(value) is value:
            raise TypeError(
                f"{name} must be re-iterable, once per epoch (a DataLoader or a list of "
                "batches), not a one-shot iterator or generator"
            )


__all__ = ["FittingMixin", "TARGET_SOURCES"]
