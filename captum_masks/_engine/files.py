"""Files written so that an interruption never leaves a broken one behind."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def save_atomically(content: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then a rename: readers see the old
    file or the new one, never half of one.

    Args:
        content: what ``torch.save`` writes (a state dict, a checkpoint dict).
        path (str or path): the file to write.
    """
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(content, temporary)
    os.replace(temporary, path)


__all__ = ["save_atomically"]
