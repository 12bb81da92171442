"""The ``torch.distributed`` facts every multi-process feature needs (training, explaining a
dataset)."""

from __future__ import annotations

import torch


def rank_and_world_size() -> tuple[int, int]:
    """This process's rank and the number of processes (0 and 1 outside ``torchrun``)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


__all__ = ["rank_and_world_size"]
