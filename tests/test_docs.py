"""The docs site builds with warnings as errors: every public docstring renders, and the site
has a page per method, the rendered tutorials and the changelog."""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx")

DOCS = Path(__file__).resolve().parent.parent / "docs"
TUTORIALS = sorted((DOCS.parent / "tutorials").glob("*.ipynb"))
METHOD_PAGES = (
    "meaningful_perturbation",
    "neuromask",
    "guided_feature_inversion",
    "extremal_perturbation",
    "rise",
    "amortized_explainer",
)


def test_the_docs_site_builds_without_warnings(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
        + [str(DOCS), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    pages = {
        "getting_started",
        "changelog",
        "architecture",
        "adding_a_method",
        *(f"methods/{name}" for name in METHOD_PAGES),
        *(f"tutorials/{notebook.stem}" for notebook in TUTORIALS),
    }
    assert all((tmp_path / f"{page}.html").is_file() for page in pages), sorted(
        page for page in pages if not (tmp_path / f"{page}.html").is_file()
    )
