"""Warnings that point at the caller's own line, however deep in the package they are raised."""

from __future__ import annotations

import os
import sys
import warnings
from types import FrameType

import captum.log

_INSIDE = (os.path.dirname(__file__), os.path.dirname(captum.log.__file__))


def warn_user(message: str) -> None:
    """A ``UserWarning`` attributed to the first frame outside this package and Captum's
    ``log_usage`` wrapper, so the user sees the line of theirs that made the call."""
    frame: FrameType | None = sys._getframe(1)
    level = 2
    while frame is not None and frame.f_code.co_filename.startswith(_INSIDE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


__all__ = ["warn_user"]
