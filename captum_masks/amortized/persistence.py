"""Explainer checkpoints as functions over an explicit config: a format tag and version around
the network's state and the settings (a plain dict) it was built with."""

from __future__ import annotations

import os
from typing import Any

import torch

CHECKPOINT_FORMAT = "captum_masks.AmortizedExplainer"
CHECKPOINT_VERSION = 2


def read_checkpoint(path: str | os.PathLike, map_location: Any = None) -> dict:
    """A file written by ``AmortizedExplainer.save`` or ``fit(checkpoint=...)``, read with
    ``weights_only=True`` (nothing in it is executed); anything else is a ``ValueError``."""
    try:
        saved = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:
        raise ValueError(
            f"{os.fspath(path)} is not a readable AmortizedExplainer file "
            f"({error.__class__.__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        ) from error
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{os.fspath(path)} is not an AmortizedExplainer file (written by "
            "AmortizedExplainer.save or fit(checkpoint=...))"
        )
    if saved.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"{os.fspath(path)} has format version {saved.get('version')!r}; this release reads "
            f"version {CHECKPOINT_VERSION}"
        )
    return saved


def checkpoint_header(config: dict) -> dict:
    """What every file written for an explainer starts with: the format, its version and the
    ``config`` the network was built with."""
    return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": config}


def check_config(saved: dict, current: dict) -> None:
    """A ``ValueError`` naming every setting in which a checkpoint's ``saved`` config differs
    from the ``current`` one."""
    different = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
    if different:
        raise ValueError(
            "the checkpoint was written for a different explainer: "
            + ", ".join(f"{k} {old!r} there, {new!r} here" for k, (old, new) in different.items())
        )


def feature_channels(state: dict, kind: str) -> int:
    """Channels of the classifier features the default explainer was fed, from its projection."""
    if kind != "compact" or "projection.weight" not in state:
        return 0
    return state["projection.weight"].shape[1]


__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "check_config",
    "checkpoint_header",
    "feature_channels",
    "read_checkpoint",
]
