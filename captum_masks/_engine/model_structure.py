"""What a model says about its inputs, read without importing the library it comes from: the
patch grid of a vision transformer and the padding token of a text transformer."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from torch import Tensor, nn

from captum_masks._engine.model_state import modules_of


def _configs(forward_func: Callable) -> Iterator[object]:
    """The ``config`` objects of the modules behind ``forward_func`` (Hugging Face models carry
    their settings there)."""
    for model in modules_of(forward_func):
        for module in model.modules():
            config = getattr(module, "config", None)
            if config is not None:
                yield config


def _side(value: object) -> int | None:
    """A patch size as one side in pixels: an int, or a tuple whose sides are equal."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, (tuple, list)) and value and all(v == value[0] for v in value):
        return _side(value[0])
    return None


def patch_size_of(forward_func: Callable) -> int | None:
    """The side in pixels of the square patches a vision transformer cuts its input into: a
    Hugging Face model's ``config.patch_size``, or the ``patch_size`` of a timm-style patch
    embedding (a module whose class name holds ``PatchEmbed``). None for any other model, and
    for patches that are not square."""
    for config in _configs(forward_func):
        if hasattr(config, "patch_size"):
            return _side(config.patch_size)
    for model in modules_of(forward_func):
        for module in model.modules():
            if "PatchEmbed" in type(module).__name__ and hasattr(module, "patch_size"):
                return _side(module.patch_size)
    return None


def padding_token_of(forward_func: Callable) -> int | None:
    """The id of a text transformer's padding token (a Hugging Face ``config.pad_token_id``),
    or None."""
    for config in _configs(forward_func):
        token = getattr(config, "pad_token_id", None)
        if isinstance(token, int) and not isinstance(token, bool):
            return token
    return None


def padding_positions_of(forward_func: Callable, ids: Tensor) -> Tensor | None:
    """True where the token ``ids`` hold the model's padding token (a Hugging Face model's
    ``config.pad_token_id``); None when the model names none or the inputs are not ids."""
    token = padding_token_of(forward_func)
    return None if token is None or ids.is_floating_point() else ids == token


def is_token_layer(layer: nn.Module, model_inputs: tuple, layer_output: object) -> bool:
    """Whether ``layer``'s output is (N, L, D), one vector per token of the token ids the model
    takes: an embedding, or an embeddings block whose first two axes are the ids'."""
    if isinstance(layer, nn.Embedding):
        return True
    ids = model_inputs[0] if model_inputs else None
    shape = getattr(layer_output, "shape", None)
    return (
        ids is not None
        and not ids.is_floating_point()
        and ids.dim() == 2
        and shape is not None
        and len(shape) == 3
        and tuple(shape[:2]) == tuple(ids.shape)
    )


__all__ = ["is_token_layer", "padding_positions_of", "padding_token_of", "patch_size_of"]
