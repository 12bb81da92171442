"""The release: one pyproject.toml, the version in one place, a wheel that holds the package and
its bench weights but no tests or notebooks, and metadata that ``twine check`` accepts."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

import captum_masks

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """The sdist and wheel, built from a copy of the sources (the checkout stays clean)."""
    pytest.importorskip("build")
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "captum_masks",
        source / "captum_masks",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return out


def test_twine_accepts_the_metadata(dist):
    pytest.importorskip("twine")
    files = sorted(str(p) for p in dist.iterdir())
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *files],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_wheel_holds_the_package_and_its_weights_but_no_tests_or_notebooks(dist):
    (wheel,) = dist.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "captum_masks/py.typed" in names
    assert any(n.startswith("captum_masks/bench/weights/") and n.endswith(".pt") for n in names)
    assert any(n.endswith("/licenses/LICENSE") for n in names)
    packaged = {n.split("/")[0] for n in names}
    assert packaged == {"captum_masks", f"captum_masks-{captum_masks.__version__}.dist-info"}
    assert not [n for n in names if n.endswith(".ipynb") or "/tests/" in n]


def test_the_version_is_written_once():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert not (ROOT / "setup.cfg").exists() and not (ROOT / "setup.py").exists()
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {captum_masks.__version__}" in changelog
