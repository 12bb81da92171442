"""What :func:`captum_masks.explain_dataset` reads and writes: dataset items, the manifest and
its fingerprints, the batch files, and :class:`DatasetExplanations`, their reader."""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from captum_masks._engine.call import work_dtype
from captum_masks.amortized.network import ExplainerNetwork
from captum_masks.masks.low_resolution import LowResolutionMask

#: bump when the files' layout changes, so that old folders are refused rather than misread
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
#: what a dataset item may hold besides its input (see :func:`captum_masks.explain_dataset`)
ITEM_KEYS = ("inputs", "label", "mask", "other_mask")
SCORES = ("pointing", "relevance_mass", "discrimination", "deletion_auc", "insertion_auc")
#: suffix of the entry that marks an attribution stored as one channel of a repeated mask
CHANNELS = ".repeated_channels"
#: suffixes of an attribution stored as a low-resolution mask, and of its recipe (JSON bytes)
LOW_RESOLUTION = ".low_resolution"
RECIPE = ".recipe"


class DatasetExplanations:
    r"""The results of :func:`captum_masks.explain_dataset` in a folder, read without unpickling
    code.

    Args:
        out (str or path): the folder :func:`captum_masks.explain_dataset` wrote.

    Attributes:
        manifest (dict): the settings the folder was written with.

    Examples::

        >>> results = DatasetExplanations("runs/mp")
        >>> results.is_complete(), len(results)
        (True, 50000)
        >>> for batch in results.batches():     # one file at a time: any size of dataset
        ...     heat = batch["attributions"].float().sum(1)
        >>> print(results.table())
    """

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out)
        manifest = self.out / MANIFEST
        if not manifest.is_file():
            raise ValueError(f"out {str(self.out)!r} holds no {MANIFEST}: not a results folder")
        self.manifest = json.loads(manifest.read_text())

    def files(self) -> list[Path]:
        """The finished batch files, in batch order."""
        return sorted(self.out.glob("batch-*.pt"))

    def __len__(self) -> int:
        """Examples explained so far."""
        return sum(batch_length(self.manifest, int(f.stem.split("-")[1])) for f in self.files())

    def is_complete(self) -> bool:
        """Whether every example of the dataset has been explained."""
        return len(self) == self.manifest["data"]["length"]

    def batches(self) -> Iterator[dict[str, Tensor]]:
        """Each finished batch's tensors (see :func:`captum_masks.explain_dataset`), one file at a
        time."""
        for path in self.files():
            yield _expanded(torch.load(path, map_location="cpu", weights_only=True))

    def load(self, keys: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Every finished batch's tensors concatenated in the order of the example ids.

        Args:
            keys (sequence of str, optional): only these entries
                (e.g. ``["ids", "scores.pointing"]``),
                to keep large attributions out of memory.

        Returns:
            dict of Tensor, one row per example explained.
        """
        parts: dict[str, list[Tensor]] = {}
        for batch in self.batches():
            for name, value in batch.items():
                if keys is None or name in keys or name == "ids":
                    parts.setdefault(name, []).append(value)
        if not parts:
            return {}
        merged = {name: _concatenate(values) for name, values in parts.items()}
        order = torch.argsort(merged["ids"])
        return {
            name: value[order]
            for name, value in merged.items()
            if keys is None or name in keys or name == "ids"
        }

    def bytes_per_example(self) -> dict[str, float]:
        """What the finished files take per example explained: ``"attributions"`` (the stored
        attribution entries, as they are kept: one channel, low resolution, reduced precision)
        and ``"files"`` (everything, on disk)."""
        stored = {"attributions": 0, "files": 0}
        for path in self.files():
            batch = torch.load(path, map_location="cpu", weights_only=True)
            stored["attributions"] += sum(
                value.numel() * value.element_size()
                for name, value in batch.items()
                if name.startswith("attributions")
            )
            stored["files"] += path.stat().st_size
        return {kind: size / max(len(self), 1) for kind, size in stored.items()}

    def scores(self) -> dict[str, Tensor]:
        """Each score over the examples explained so far (empty without ground truth)."""
        loaded = self.load([f"scores.{name}" for name in SCORES])
        return {name.split(".", 1)[1]: v for name, v in loaded.items() if name != "ids"}

    def table(self) -> str:
        """The scores as one markdown table: mean ± standard deviation over the examples."""
        scores = self.scores()
        if not scores:
            return "no scores: the dataset gives no ground-truth masks"
        lines = ["| score | mean ± std | examples |", "|---|---|---|"]
        for name in SCORES:
            if name in scores:
                values = scores[name].double().tolist()
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                lines.append(
                    f"| {name} | {statistics.fmean(values):.3f} ± {spread:.3f} | {len(values)} |"
                )
        return "\n".join(lines)


def method_description(method: Any, model: nn.Module | None) -> dict:
    """The method's class, and the modules and plain settings it was built with (a Layer
    method's layer, by its name in the model)."""
    names = {} if model is None else {id(m): name for name, m in model.named_modules()}
    built_with: dict[str, Any] = {}
    for name, value in sorted(vars(method).items()):
        if name == "forward_func" or name.startswith("_"):
            continue
        if isinstance(value, nn.Module):
            built_with[name] = f"module {names.get(id(value), type(value).__name__)}"
        elif isinstance(value, (bool, int, float, str)) or value is None:
            built_with[name] = value
        elif isinstance(value, ExplainerNetwork):  # AmortizedExplainer's settings
            built_with[name] = value.config()
    return {"class": f"{type(method).__module__}.{type(method).__qualname__}", **built_with}


def describe(value: Any) -> Any:
    """``value`` as JSON that changes whenever the value does (tensors by a hash of their
    contents, other objects by their repr)."""
    if isinstance(value, Mapping):
        return {str(k): describe(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [describe(v) for v in value]
    if isinstance(value, Tensor):
        return f"tensor {tuple(value.shape)} {value.dtype} sha256:{_hash_tensors([value])}"
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return repr(value)


def _hash_tensors(tensors: Sequence[Tensor]) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(str((tuple(tensor.shape), tensor.dtype)).encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()[:16]


def fingerprint_model(model: nn.Module | None) -> str | None:
    if model is None:
        return None
    state = model.state_dict()
    return f"{type(model).__qualname__} sha256:{_hash_tensors([state[k] for k in sorted(state)])}"


def fingerprint_data(data: Any) -> dict:
    """The dataset's type and length, and a hash of its first, middle and last items: enough to
    tell datasets apart without reading a large one."""
    probes = sorted({0, len(data) // 2, len(data) - 1})
    items = collate([data[i] for i in probes])
    tensors = [t for key in ITEM_KEYS if key in items for t in as_tuple(items[key])]
    return {
        "type": type(data).__qualname__,
        "length": len(data),
        "sha256": _hash_tensors(tensors),
    }


def agree_on_manifest(out: Path, manifest: dict, rank: int, world_size: int) -> None:
    """Rank 0 writes the manifest of a folder without results (new, or one whose first batch
    failed); then every rank compares it with its own settings, so that all of them refuse a
    folder of other settings alike."""
    path = out / MANIFEST
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob("batch-*.pt.tmp"):  # left by a process killed while writing
            stale.unlink()
        if not any(out.glob("batch-*.pt")):
            temporary = path.with_name(MANIFEST + ".tmp")
            temporary.write_text(json.dumps(manifest, indent=1, sort_keys=True))
            os.replace(temporary, path)
    if world_size > 1:
        torch.distributed.barrier()
    recorded = json.loads(path.read_text())
    expected = json.loads(json.dumps(manifest))  # as JSON reads it back: tuples become lists
    different = sorted(
        k for k in expected.keys() | recorded.keys() if recorded.get(k) != expected.get(k)
    )
    if different:
        details = "; ".join(
            f"{k}: {json.dumps(recorded.get(k))} there, {json.dumps(expected.get(k))} now"
            for k in different
        )
        raise ValueError(
            f"out {str(out)!r} holds results of other settings ({details}); use another out "
            f"folder, or remove this one to start again"
        )


def batch_file(index: int) -> str:
    return f"batch-{index:07d}.pt"


def batch_length(manifest: dict, index: int) -> int:
    size, length = manifest["batch_size"], manifest["data"]["length"]
    return min(size, length - index * size)


def as_tuple(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def collate(items: list) -> dict:
    """A list of dataset items (see :func:`captum_masks.explain_dataset`) as one dict of stacked
    tensors."""
    parsed = [_item_dict(item) for item in items]
    keys = set(parsed[0])
    if any(set(p) != keys for p in parsed):
        raise ValueError("every item of data must hold the same entries (inputs, label, mask)")
    batch = {}
    for key in ITEM_KEYS:
        if key not in keys:
            continue
        values = [p[key] for p in parsed]
        stacked: Tensor | tuple[Tensor, ...]
        if key == "inputs" and isinstance(values[0], (tuple, list)):
            stacked = tuple(torch.stack(parts) for parts in zip(*values))
        else:
            stacked = torch.stack([torch.as_tensor(v) for v in values])
        batch[key] = stacked
    return batch


def _item_dict(item: Any) -> dict:
    if isinstance(item, Tensor):
        return {"inputs": item}
    if isinstance(item, Mapping):
        unknown = sorted(set(item) - set(ITEM_KEYS))
        if "inputs" not in item or unknown:
            raise ValueError(
                f"a dict item of data needs 'inputs' and may hold {ITEM_KEYS[1:]}; got keys "
                f"{sorted(item)}"
            )
        return dict(item)
    if isinstance(item, (tuple, list)) and 1 <= len(item) <= 4:
        return dict(zip(ITEM_KEYS, item))
    raise ValueError(
        f"an item of data must be a Tensor, a tuple (input, label[, mask[, other_mask]]) or a "
        f"dict; got {type(item).__name__}"
    )


def attribution_entries(
    name: str, attribution: Tensor, grid: LowResolutionMask | None = None
) -> dict[str, Tensor]:
    """The batch-file entries of one input's attributions: the ``grid`` they expand from
    (its values, and its recipe with the attributions' shape as JSON bytes: tensors only),
    else one channel of a mask repeated over the channels (lossless), else the attributions."""
    if grid is not None:
        recipe = json.dumps({**grid.recipe(), "shape": list(attribution.shape[1:])}).encode()
        return {
            name + LOW_RESOLUTION: grid.values.detach().cpu(),
            name + RECIPE: torch.tensor(list(recipe), dtype=torch.uint8),
        }
    if (
        attribution.dim() > 2
        and attribution.shape[1] > 1
        and bool((attribution == attribution[:, :1]).all())
    ):
        return {
            name: attribution[:, :1].contiguous(),
            name + CHANNELS: torch.full((attribution.shape[0],), attribution.shape[1]),
        }
    return {name: attribution}


def history_entries(history: Any) -> dict[str, Tensor]:
    """The batch-file entries of a method's history (an :class:`~captum_masks.OptimizationHistory`
    or any dataclass of tensors): its tensors, one row per example."""
    if history is None or not is_dataclass(history):
        return {}
    # histories are (steps, N): stored one row per example, like everything else
    return {
        f"history.{field.name}": (value.mT if value.dim() == 2 else value).cpu()
        for field in fields(history)
        if isinstance(value := getattr(history, field.name), Tensor)
    }


def _expanded(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """A batch file's entries, with attributions stored as one channel or as a low-resolution
    mask made full again."""
    for entry in [name for name in batch if name.endswith(LOW_RESOLUTION)]:
        name = entry[: -len(LOW_RESOLUTION)]
        recipe = json.loads(bytes(batch.pop(name + RECIPE).tolist()))
        channels, *spatial = recipe.pop("shape")
        values = batch.pop(entry)
        # half precision is expanded in the work dtype (as the methods compute), then stored back
        work = LowResolutionMask(values.to(work_dtype(values.dtype)), **recipe)
        mask = work.expand(spatial).to(values.dtype)
        batch[name] = mask.expand(mask.shape[0], channels, *spatial)
    for marker in [name for name in batch if name.endswith(CHANNELS)]:
        name, channels = marker[: -len(CHANNELS)], int(batch.pop(marker)[0])
        single = batch[name]
        batch[name] = single.expand(single.shape[0], channels, *single.shape[2:])
    return batch


def _concatenate(values: list[Tensor]) -> Tensor:
    """Batches' rows as one tensor; histories of batches that ran different numbers of steps
    are padded with NaN, the value of a step an example did not run."""
    if values[0].dim() == 2 and len({v.shape[1] for v in values}) > 1:
        width = max(v.shape[1] for v in values)
        values = [
            torch.nn.functional.pad(v, (0, width - v.shape[1]), value=math.nan) for v in values
        ]
    return torch.cat(values)


__all__ = [
    "CHANNELS",
    "FORMAT_VERSION",
    "ITEM_KEYS",
    "MANIFEST",
    "SCORES",
    "DatasetExplanations",
    "agree_on_manifest",
    "as_tuple",
    "attribution_entries",
    "batch_file",
    "batch_length",
    "collate",
    "describe",
    "fingerprint_data",
    "fingerprint_model",
    "history_entries",
    "method_description",
]
