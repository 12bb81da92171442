"""The command line's argument types: each parses one value or raises
``argparse.ArgumentTypeError``, which argparse turns into a one-line error."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

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
    """``NAME=VALUE`` for ``--set``: the value as a Python literal, else the bare word."""
    name, separator, value = text.partition("=")
    if not separator or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value  # a bare word such as rmsprop


__all__ = ["image", "positive_int", "setting", "target"]
