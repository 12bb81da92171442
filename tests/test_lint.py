"""The code, tests and tutorials are clean under ruff's lint and format, with the version and
the configuration that the pre-commit hooks use."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("ruff")


def ruff(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_ruff_finds_nothing_to_fix():
    result = ruff("check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_code_is_formatted():
    result = ruff("format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_pre_commit_runs_the_ruff_the_tests_run():
    installed = ruff("--version").stdout.split()[-1]
    hooks = (ROOT / ".pre-commit-config.yaml").read_text()
    assert re.search(rf"ruff-pre-commit\n\s+rev: v{re.escape(installed)}\n", hooks)
    assert "id: ruff-check" in hooks and "id: ruff-format" in hooks and "id: mypy" in hooks
