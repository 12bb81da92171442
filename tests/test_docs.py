"""The docs site builds with warnings as errors: every public docstring renders, and the site
has a page per method, the rendered tutorials and the changelog; every table it includes was
written by a command of docs/tables.sh."""

import re
import shlex
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


def included_tables() -> set[Path]:
    """Every file under docs/tables/ that a page includes."""
    pattern = re.compile(r"```\{include\} (\S*tables/\S+\.md)")
    return {
        (page.parent / name).resolve()
        for page in DOCS.rglob("*.md")
        for name in pattern.findall(page.read_text())
    }


def normalised(command: str) -> tuple[str, ...]:
    """A command's words without ``--out FIGURE``, which the shell may expand."""
    words = shlex.split(command)
    if "--out" in words:
        at = words.index("--out")
        del words[at : at + 2]
    return tuple(words)


def test_every_included_table_names_the_command_in_docs_tables_sh_that_wrote_it():
    script = (DOCS / "tables.sh").read_text().replace("\\\n", " ")
    commands = {
        normalised(line.removeprefix("run "))
        for line in script.splitlines()
        if line.startswith("run ")
    }
    tables = included_tables()
    assert tables, "no page includes a table"
    for table in tables:
        head = table.read_text().splitlines()[0]
        written_by = re.fullmatch(r"<!-- written by `python -m captum_masks (.+)`: .* -->", head)
        assert written_by, f"{table.name} does not name the command that wrote it"
        command = normalised(written_by.group(1))
        assert command in commands, f"{table.name}'s command is not in docs/tables.sh"
        assert f"docs/tables/{table.name}" in command
