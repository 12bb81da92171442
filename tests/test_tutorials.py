"""Every notebook in tutorials/ runs top to bottom without errors.

A notebook's sizes (images, epochs, iterations) sit in one cell tagged ``parameters``, papermill's
convention; the tests run the same code on less data by adding a cell after it that sets
:data:`QUICK`'s values, so the suite stays within its time budget.
"""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytestmark = [pytest.mark.tutorial, pytest.mark.real_model]

TUTORIALS = sorted((Path(__file__).parent.parent / "tutorials").glob("*.ipynb"))
QUICK = {
    "amortized_explainer.ipynb": {
        "TRAIN_SIZE": 128,
        "EPOCHS": 1,
        "TEST_SIZE": 4,
        "MP_ITERATIONS": 10,
        "CLASSIFIER_STEPS": 30,
        "SEQUENCE_EPOCHS": 1,
    },
    "beyond_images.ipynb": {"N_ROWS": 12, "N_ITER": 10, "TRAIN_STEPS": 100},
    "extremal_perturbation_and_rise.ipynb": {"N_ITER": 2, "N_SAMPLES": 16},
    "comparing_with_captum.ipynb": {
        "N_SYNTHETIC": 3,
        "N_PHOTOS": 1,
        "METHODS": ["GuidedFeatureInversion/inversion", "Saliency", "LayerGradCam"],
    },
    "guided_feature_inversion.ipynb": {"N_ITER": 2},
    "meaningful_perturbation.ipynb": {"N_ITER": 3},
    "neuromask.ipynb": {"N_ITER": 3},
    "transformers.ipynb": {"TRAIN_SIZE": 1200, "EPOCHS": 2, "N_EXPLAIN": 1},
}


def with_quick_parameters(notebook, values: dict):
    """``notebook`` with a cell setting ``values`` after its ``parameters`` cell, which must
    define every one of them."""
    cells = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "a tutorial with sizes has exactly one cell tagged 'parameters'"
    source = cells[0].source
    missing = [name for name in values if f"\n{name} = " not in f"\n{source}"]
    assert not missing, f"the parameters cell does not define {missing}"
    quick = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in values.items()))
    notebook.cells.insert(notebook.cells.index(cells[0]) + 1, quick)
    return notebook


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.name)
def test_notebook_executes(path):
    notebook = nbformat.read(path, as_version=4)
    if path.name in QUICK:
        notebook = with_quick_parameters(notebook, QUICK[path.name])
    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors
