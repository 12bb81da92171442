"""The library and its bench are separate layers: importing the library never imports the bench
(nor the bench's extra dependencies)."""

import subprocess
import sys


def test_importing_the_library_does_not_import_the_bench():
    code = (
        "import sys, captum_masks; "
        "print(sorted(m for m in sys.modules if m.startswith('captum_masks.bench') "
        "or m.split('.')[0] in ('skimage', 'sklearn', 'efficientnet_lite_pytorch', 'timm', "
        "'transformers')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"


def test_the_command_line_entry_point_is_the_benchs():
    result = subprocess.run(
        [sys.executable, "-m", "captum_masks", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert all(command in result.stdout for command in ("demo", "speed", "benchmark"))
