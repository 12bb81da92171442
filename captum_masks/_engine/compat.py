"""The only module that imports Captum's private helpers.

Captum renames its underscored helpers between releases; keeping every such import here means a
rename breaks one file, not the whole package.
"""

from captum._utils.common import (
    _format_additional_forward_args,
    _format_output,
)
from captum._utils.progress import progress
from captum._utils.typing import BaselineType, TargetType

__all__ = [
    "BaselineType",
    "TargetType",
    "_format_additional_forward_args",
    "_format_output",
    "progress",
]
