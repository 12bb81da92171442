"""Explaining a whole dataset: in batches, on one process or sharded over ``torchrun``'s, each
batch written to its own file as soon as it is done, resumable, and scored where ground truth is
given."""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from captum_masks import metrics
from captum_masks._engine.call import reject_moved_keywords
from captum_masks._engine.checks import (
    check_bool,
    check_choice,
    check_non_negative,
    check_positive,
    check_positive_int,
    model_scores,
)
from captum_masks._engine.compat import progress
from captum_masks._engine.distributed import rank_and_world_size
from captum_masks._engine.files import save_atomically
from captum_masks._engine.model_state import modules_of
from captum_masks._engine.scores import select_scores
from captum_masks.datasets.storage import (
    FORMAT_VERSION,
    DatasetExplanations,
    agree_on_manifest,
    as_tuple,
    attribution_entries,
    batch_file,
    batch_length,
    collate,
    describe,
    fingerprint_data,
    fingerprint_model,
    history_entries,
    method_description,
)

TARGETS = ("predicted", "label")
PRECISIONS = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def explain_dataset(
    method: Any,
    data: Any,
    out: str | os.PathLike,
    target: int | str | None = "predicted",
    batch_size: int = 8,
    attribute_kwargs: Mapping[str, Any] | None = None,
    precision: str | None = None,
    low_resolution: bool = False,
    settings: Mapping[str, Any] | None = None,
    deletion_steps: int = 16,
    pointing_tolerance: int = 15,
    pointing_sigma: float = 0.0,
    blur_sigma: float = 10.0,
    device: torch.device | str | None = None,
    num_workers: int = 0,
    show_progress: bool = True,
) -> DatasetExplanations:
    r"""Explain every example of ``data`` with ``method`` and write the results to ``out``.

    The dataset is cut into batches of ``batch_size`` consecutive examples, and each batch's
    results go to their own file in ``out`` (``batch-0000012.pt``), written to a temporary name
    and then renamed, so a file that exists is complete. Started again on the same ``out``, only
    the batches without a file are explained: a run that was interrupted, killed or ran with
    another number of processes carries on where it stopped.

    Under ``torchrun`` (``torch.distributed`` initialised: gloo on CPU, NCCL on GPU), rank 0
    lists the batches still to do and each rank takes every ``world_size``-th of them, so no
    example is explained twice and none is skipped. ``out`` must then be a folder that every rank
    can write (on several machines, a shared file system; batch files from separate folders can
    also be merged by copying, since their names do not depend on the rank). Because every method
    of this package gives a batch the result of its examples one by one, the results do not
    depend on the number of processes.

    Each batch file holds tensors only, read back with ``torch.load(weights_only=True)`` (see
    :class:`DatasetExplanations`): ``ids`` (dataset indices), ``targets``, ``probabilities``
    (softmax of the target on the clean input), ``attributions`` (at ``precision``; a mask
    repeated over the channels, as mask methods return it, is stored once and repeated again when
    it is read, which is lossless and a third of the size for RGB), the method's
    optimisation history where it returns one (``history.loss``, ``history.probability``: one row
    per example and step; ``history.steps``), and ``scores.*`` where the dataset gives masks.
    ``manifest.json`` records the method, its arguments and fingerprints of the model and the
    data; a later run with other settings on the same ``out`` is refused.

    Args:
        method (Attribution): a Captum attribution, this package's or Captum's
            (e.g. ``MeaningfulPerturbation(model)``, ``Occlusion(model)``); its
            ``forward_func`` is the model that gives the targets and the scores.
        data (Dataset): a map-style dataset (``len`` and indexing), read one batch at a time
            through a ``DataLoader``, so it is never loaded whole. An item is the input
            (Tensor), a tuple ``(input, label)`` or ``(input, label, mask)`` as torchvision's
            datasets give, or a dict with ``"inputs"`` (a Tensor or a tuple of them) and any of
            ``"label"``, ``"mask"`` (ground truth, (H, W) or (1, H, W)) and ``"other_mask"`` (a
            second object, of another class, for the discrimination score).
        out (str or path): the results' folder; created if missing.
        target (int, str or None, optional): ``"predicted"`` (default) explains each example's
            top class, ``"label"`` the item's label, an int that class for every example, and
            None passes Captum's ``target=None`` (models with one output per example).
        batch_size (int, optional): examples per call of ``method.attribute`` and per file.
            Part of the files' layout: a resumed run must use the same one.
        attribute_kwargs (dict, optional): other arguments of ``method.attribute``, such as
            ``{"optimization": Optimization(n_iter=150, seed=0)}``; ``inputs`` and ``target``
            are set here.
        precision (str, optional): the stored attributions' dtype: ``"float32"``,
            ``"float16"`` or ``"bfloat16"`` (half the size of float32), or None (default) for
            the dtype the method returns. Scores are computed before any reduction.
        low_resolution (bool, optional): store each mask as the grid the method optimised
            (:class:`~captum_masks.LowResolutionMask`: MeaningfulPerturbation's 28 × 28 at
            224 px, ExtremalPerturbation's 56 × 56, GuidedFeatureInversion's mask layer's),
            expanded back to the attributions when read: 16 to 1000 times smaller. Methods
            without one raise a ``ValueError``. Combines with ``precision``. Default: False
        settings (dict, optional): anything else that tells runs apart (e.g. a suite's name),
            recorded in the manifest and compared like the rest.
        deletion_steps (int, optional): steps of the deletion and insertion curves scored where
            the dataset gives masks (:func:`captum_masks.metrics.deletion_insertion_curve`).
        pointing_tolerance (int, optional): pixels; see :func:`captum_masks.metrics.pointing_game`.
        pointing_sigma (float, optional): smoothing of the map before pointing, in pixels.
        blur_sigma (float, optional): the insertion and deletion curves' blurred substrate.
        device (torch.device or str, optional): where each batch goes; by default the device of
            the model's parameters (the rank's GPU under ``torchrun`` when the model is there).
        num_workers (int, optional): the ``DataLoader``'s worker processes.
        show_progress (bool, optional): one progress bar (rank 0) over the whole dataset, with
            images per second and the time left (under ``torchrun`` projected from rank 0's pace).

    Returns:
        :class:`DatasetExplanations`: the results in ``out``, complete on every rank once this
        returns.

    Examples::

        >>> from captum_masks import MeaningfulPerturbation, Optimization, explain_dataset
        >>> results = explain_dataset(
        ...     MeaningfulPerturbation(model), val_set, "runs/mp", batch_size=16,
        ...     attribute_kwargs={"optimization": Optimization(n_iter=150)}, precision="float16",
        ... )
        >>> print(results.table())           # where the dataset gives masks
        >>> maps = results.load()["attributions"]

        Under ``torchrun --nproc_per_node=4 explain.py``, the same call after
        ``torch.distributed.init_process_group("gloo")`` splits the batches over the 4 processes.
    """
    kwargs = _checked_arguments(
        method, data, target, batch_size, attribute_kwargs, precision, low_resolution
    )
    check_positive_int("deletion_steps", deletion_steps)
    check_non_negative(pointing_tolerance=pointing_tolerance, pointing_sigma=pointing_sigma)
    check_positive("blur_sigma", blur_sigma)
    if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 0:
        raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
    out = Path(out)
    model = _model_of(method)
    device = torch.device(device) if device is not None else _device_of(model)
    manifest = {
        "format": FORMAT_VERSION,
        "method": method_description(method, model),
        "attribute_kwargs": describe(kwargs),
        "model": fingerprint_model(model),
        "data": fingerprint_data(data),
        "target": target,
        "batch_size": batch_size,
        "precision": precision,
        "low_resolution": low_resolution,
        "scoring": {
            "deletion_steps": deletion_steps,
            "pointing_tolerance": pointing_tolerance,
            "pointing_sigma": pointing_sigma,
            "blur_sigma": blur_sigma,
        },
        "settings": describe(dict(settings or {})),
    }
    rank, world_size = rank_and_world_size()
    agree_on_manifest(out, manifest, rank, world_size)

    n_batches = math.ceil(len(data) / batch_size)
    pending = _pending_batches(out, n_batches, rank, world_size, device)
    mine = pending[rank::world_size]
    batches = [
        list(range(b * batch_size, b * batch_size + batch_length(manifest, b))) for b in mine
    ]
    loader = torch.utils.data.DataLoader(
        data, batch_sampler=batches, num_workers=num_workers, collate_fn=collate
    )
    done_before = len(data) - sum(batch_length(manifest, b) for b in pending)
    bar = progress(
        desc=f"Explaining ({type(method).__name__})",
        total=len(data),
        initial=done_before,
        unit="image",
        disable=not show_progress or rank != 0,
    )
    scoring = manifest["scoring"]
    for index, ids, batch in zip(mine, batches, loader):
        record = _explain_batch(method, batch, target, kwargs, device, scoring, low_resolution)
        record["ids"] = torch.tensor(ids, dtype=torch.long)
        if precision is not None:
            record = {
                name: value.to(PRECISIONS[precision])
                if name.startswith("attributions") and value.is_floating_point()
                else value
                for name, value in record.items()
            }
        save_atomically(record, out / batch_file(index))
        # under torchrun, rank 0 projects the others' progress from its own
        bar.update(min(len(ids) * world_size, len(data) - bar.n))
    bar.update(len(data) - bar.n)
    bar.close()
    if world_size > 1:
        torch.distributed.barrier()
    return DatasetExplanations(out)


def _checked_arguments(
    method: Any,
    data: Any,
    target: Any,
    batch_size: Any,
    attribute_kwargs: Mapping[str, Any] | None,
    precision: Any,
    low_resolution: Any,
) -> dict:
    """The checks that run before anything is written; returns the ``attribute`` kwargs."""
    if not callable(getattr(method, "attribute", None)) or not callable(
        getattr(method, "forward_func", None)
    ):
        raise ValueError(
            f"method must be a Captum attribution (with attribute and forward_func), such as "
            f"MeaningfulPerturbation(model); got {type(method).__name__}"
        )
    if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        raise ValueError(
            f"data must be a map-style dataset (len and indexing), so that processes can share "
            f"it and a restart can find what is missing; got {type(data).__name__}"
        )
    if len(data) == 0:
        raise ValueError("data is empty: nothing to explain")
    valid_target = target is None or target in TARGETS
    valid_target |= isinstance(target, int) and not isinstance(target, bool) and target >= 0
    if not valid_target:
        raise ValueError(
            f"target must be 'predicted', 'label', a class index >= 0 or None, got {target!r}"
        )
    check_positive_int("batch_size", batch_size)
    if precision is not None:
        check_choice("precision", precision, tuple(PRECISIONS))
    check_bool("low_resolution", low_resolution)
    if low_resolution and "return_history" not in _parameters(method):
        raise ValueError(
            f"low_resolution=True needs a method that returns its masks' low-resolution form "
            f"(MeaningfulPerturbation, ExtremalPerturbation, GuidedFeatureInversion); "
            f"{type(method).__name__} has none"
        )
    kwargs = dict(attribute_kwargs or {})
    reject_moved_keywords(method, kwargs)
    reserved = sorted({"inputs", "target"} & set(kwargs))
    if reserved:
        raise ValueError(
            f"attribute_kwargs must not set {reserved}: explain_dataset passes each batch's "
            f"inputs and targets (choose them with target=)"
        )
    return kwargs


def _model_of(method: Any) -> nn.Module | None:
    modules = modules_of(method.forward_func)
    return modules[0] if modules else None


def _device_of(model: nn.Module | None) -> torch.device:
    tensors = [] if model is None else [*model.parameters(), *model.buffers()]
    return tensors[0].device if tensors else torch.device("cpu")


def _pending_batches(
    out: Path, n_batches: int, rank: int, world_size: int, device: torch.device
) -> list[int]:
    """The batches without a finished file, as rank 0 sees them, so that every rank splits
    the same list."""
    pending: list[list[int] | None] = [None]
    if rank == 0:
        done = {int(f.stem.split("-")[1]) for f in out.glob("batch-*.pt")}
        pending = [[b for b in range(n_batches) if b not in done]]
    if world_size > 1:
        torch.distributed.broadcast_object_list(
            pending, src=0, device=device if device.type != "cpu" else None
        )
    assert pending[0] is not None
    return pending[0]


def _explain_batch(
    method: Any,
    batch: dict,
    target: Any,
    kwargs: dict,
    device: torch.device,
    scoring: dict,
    low_resolution: bool,
) -> dict[str, Tensor]:
    inputs = tuple(t.to(device) for t in as_tuple(batch["inputs"]))
    single = not isinstance(batch["inputs"], tuple)
    with torch.no_grad():
        extra = as_tuple(kwargs.get("additional_forward_args") or ())
        output = model_scores(method.forward_func(*inputs, *extra))
    targets = _targets(target, batch, output)
    record: dict[str, Tensor] = {
        "targets": torch.full((output.shape[0],), -1) if targets is None else targets.cpu(),
        "probabilities": _probabilities(output, targets).float().cpu(),
    }
    wants_history = "return_history" in _parameters(method) and "return_history" not in kwargs
    result = method.attribute(
        inputs[0] if single else inputs,
        target=None if targets is None else targets.to(device),
        **kwargs,
        **({"return_history": True} if wants_history else {}),
    )
    attributions, history = result if wants_history else (result, None)
    grids = _low_resolution_masks(method, history) if low_resolution else None
    for position, attribution in enumerate(as_tuple(attributions)):
        name = "attributions" if single else f"attributions.{position}"
        grid = None if grids is None else grids[position]
        record.update(attribution_entries(name, attribution.detach().cpu(), grid))
    record.update(history_entries(history))
    if "mask" in batch and single and inputs[0].dim() == 4 and targets is not None:
        record.update(_scores(method, inputs[0], attributions, targets, batch, scoring))
    return record


def _low_resolution_masks(method: Any, history: Any) -> tuple:
    grids = getattr(history, "low_resolution", None)
    if grids is None:
        raise ValueError(
            f"low_resolution=True: {type(method).__name__} returned no low-resolution masks "
            f"for this call (a pixel-level mask, or a call with feature_mask or "
            f"channels_last); explain with low_resolution=False"
        )
    return grids


def _parameters(method: Any) -> set[str]:
    return set(inspect.signature(method.attribute).parameters)


def _targets(target: Any, batch: dict, output: Tensor) -> Tensor | None:
    if target is None:
        return None
    if target == "predicted":
        if output.dim() != 2:
            raise ValueError(
                f"target='predicted' needs (N, classes) outputs; the model returned "
                f"{tuple(output.shape)}: pass target=None or a class index"
            )
        return output.argmax(1)
    if target == "label":
        if "label" not in batch:
            raise ValueError("target='label' needs items with a label, such as (input, label)")
        return batch["label"].to(device=output.device, dtype=torch.long).reshape(-1)
    return torch.full((output.shape[0],), target, dtype=torch.long, device=output.device)


def _probabilities(output: Tensor, targets: Tensor | None) -> Tensor:
    if targets is None or output.dim() != 2:
        return torch.full((output.shape[0],), math.nan)
    return select_scores(output.float(), targets.view(-1, 1), apply_softmax=True)


def _scores(
    method: Any, inputs: Tensor, attributions: Tensor, targets: Tensor, batch: dict, scoring: dict
) -> dict[str, Tensor]:
    maps = attributions.detach().float()
    masks = batch["mask"].to(maps.device)
    scores = {
        "scores.pointing": metrics.pointing_game(
            maps, masks, scoring["pointing_tolerance"], scoring["pointing_sigma"]
        ),
        "scores.relevance_mass": metrics.relevance_mass(maps, masks),
    }
    if "other_mask" in batch:
        scores["scores.discrimination"] = metrics.class_discrimination(
            maps, masks, batch["other_mask"].to(maps.device)
        )
    for mode in ("deletion", "insertion"):
        scores[f"scores.{mode}_auc"] = metrics.deletion_insertion_curve(
            method.forward_func,
            inputs,
            maps,
            targets,
            mode,
            scoring["deletion_steps"],
            blur_sigma=scoring["blur_sigma"],
        )[0]
    return {name: value.detach().float().cpu() for name, value in scores.items()}


__all__ = ["DatasetExplanations", "explain_dataset"]
