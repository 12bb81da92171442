"""Saving and loading the explainer: a format tag and version around the network's state and
the settings it was built with."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from captum_masks._engine.files import save_atomically

if TYPE_CHECKING:
    from captum_masks.amortized.explainer import AmortizedExplainer

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


class PersistenceMixin:
    """``save`` and ``load`` of :class:`~captum_masks.AmortizedExplainer`."""

    def _config(self) -> dict:
        channels, dims = self._input_shape or (None, None)
        return {
            "num_classes": self.num_classes,
            "multilabel": self.multilabel,
            "channels_last": self.layout.channels_last,
            "width": self.width,
            "depth": self.depth,
            "baselines": self.baselines,
            "explainer": self._kind,
            "input_channels": channels,
            "spatial_dims": dims,
            "feature_layer": self._module_name(self.feature_layer),
            "layer": self._module_name(self.layer),
        }

    def _module_name(self, layer: nn.Module | None) -> str | None:
        """The name of ``layer`` inside the classifier, the form a checkpoint stores it in."""
        if layer is None or not isinstance(self.forward_func, nn.Module):
            return None
        return next(
            name for name, module in self.forward_func.named_modules() if module is layer
        )

    def _checkpoint_header(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": self._config(),
        }

    def _check_config(self, saved: dict) -> None:
        current = self._config()
        different = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
        if different:
            raise ValueError(
                "the checkpoint was written for a different explainer: "
                + ", ".join(
                    f"{k} {old!r} there, {new!r} here" for k, (old, new) in different.items()
                )
            )

    def save(self, path: str | os.PathLike) -> None:
        """Write the trained explainer and its settings (atomically: a temporary file, then a
        rename).

        Args:
            path (str or path): the file to write.

        Examples::

            >>> explainer.save("explainer.pt")
        """
        if self.explainer is None:
            raise ValueError("nothing to save: fit the explainer (or call attribute) first")
        save_atomically({**self._checkpoint_header(), "state": self.explainer.state_dict()}, path)

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
        if restored.explainer is None:
            channels, dims = config["input_channels"], config["spatial_dims"]
            features = _feature_channels(saved["state"], restored._kind)
            probe = torch.zeros(1, channels, *([8] * dims))
            fed = (torch.zeros(1, features, *([1] * dims)),) if features else ()
            restored._build((probe, *fed), channels)
        restored.explainer.load_state_dict(saved["state"])
        restored._trained = True
        if config["input_channels"] is not None:
            restored._input_shape = (config["input_channels"], config["spatial_dims"])
        return restored


def _feature_channels(state: dict, kind: str) -> int:
    """Channels of the classifier features the default explainer was fed, from its projection."""
    if kind != "compact" or "projection.weight" not in state:
        return 0
    return state["projection.weight"].shape[1]


__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "PersistenceMixin", "read_checkpoint"]
