"""Training under ``torchrun``: the wrapped explainer and each process's share of the data."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor, nn


def wrap_distributed(module: nn.Module) -> nn.Module:
    """``module`` in ``DistributedDataParallel``, on the device of its parameters."""
    from torch.nn.parallel import DistributedDataParallel

    device = next(module.parameters()).device
    return DistributedDataParallel(module, device_ids=None if device.type == "cpu" else [device])


def shard(data: Iterable, epoch: int, rank: int, world_size: int) -> Iterable:
    """This process's part of one epoch of ``data``: a ``DataLoader`` re-sharded with a
    ``DistributedSampler`` (``batch_size / world_size`` examples a step), any other iterable by
    taking every ``world_size``-th row of each batch."""
    if world_size == 1:
        return data
    from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

    if isinstance(data, DataLoader):
        if data.batch_size is None or data.batch_size % world_size:
            raise ValueError(
                f"under torchrun the DataLoader's batch_size ({data.batch_size}) must be a "
                f"multiple of the world size ({world_size})"
            )
        sampler: DistributedSampler = DistributedSampler(
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


__all__ = ["shard", "wrap_distributed"]
