"""The command line's argument types: each parses one value or raises
``argparse.ArgumentTypeError``, which argparse turns into a one-line error."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import captum_masks
from captum_masks.bench.zoo import SAMPLE_IMAGES


def target(text: str) -> int | str | None:
    """``--target``: predicted, label, none or a class index."""
    if text in ("predicted", "label"):
        return text
    if text == "none":
        return None
    try:
        index = int(text)
    except ValueError:
        index = -1
    if index < 0:
        raise argparse.ArgumentTypeError(
            f"expected predicted, label, none or a class index >= 0, got {text!r}"
        )
    return index


def positive_int(text: str) -> int:
    """An int of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}")
    return value


def image(text: str) -> str:
    """A sample image's name or an existing file."""
    if text in SAMPLE_IMAGES or Path(text).is_file():
        return text
    raise argparse.ArgumentTypeError(
        f"image must be one of {', '.join(SAMPLE_IMAGES)} or an existing file, got {text!r}"
    )


def setting(text: str) -> tuple[str, object]:
    """``NAME=VALUE`` for ``--set``. NAME is an argument, or ``argument.field`` for a field of
    an object argument (``optimization.n_iter``); VALUE a Python literal, a call of one of this
    package's classes with literal arguments (``Blur(sigma=5.0)``), else the bare word."""
    name, separator, value = text.partition("=")
    if not separator or not all(part.isidentifier() for part in name.split(".")):
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        pass
    made = _package_object(value)
    return name, value if made is None else made  # a bare word such as rmsprop


def _package_object(text: str) -> object | None:
    """``Class(name=literal, ...)`` for a class of ``captum_masks``, built; None for other text."""
    try:
        call = ast.parse(text, mode="eval").body
    except SyntaxError:
        return None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)):
        return None
    kind = getattr(captum_masks, call.func.id, None)
    if call.func.id not in captum_masks.__all__ or not isinstance(kind, type):
        raise argparse.ArgumentTypeError(f"{call.func.id} is not a class of captum_masks")
    try:
        args = [ast.literal_eval(a) for a in call.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg}
        return kind(*args, **kwargs)
    except (ValueError, TypeError) as error:
        raise argparse.ArgumentTypeError(f"cannot build {text}: {error}") from None


__all__ = ["image", "positive_int", "setting", "target"]
