"""The main job, ``python -m captum_masks demo``, end to end (shortened optimisation)."""

import pytest
from conftest import run_cli

pytest.importorskip("captum_masks.zoo")
pytestmark = pytest.mark.real_model

METHODS = ["MeaningfulPerturbation", "Saliency", "IntegratedGradients", "Occlusion", "LayerGradCam"]


def test_demo_prints_predictions_timings_and_saves_the_figure(tmp_path):
    out = tmp_path / "demo.png"
    result = run_cli("demo", "--image", "coffee", "--out", str(out), "--n-iter", "20")
    assert result.returncode == 0, result.stderr
    assert "Top-5 predictions for coffee" in result.stdout and "espresso" in result.stdout
    assert all(method in result.stdout for method in METHODS)
    assert out.stat().st_size > 10_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_image_is_a_clear_error(tmp_path):
    result = run_cli("demo", "--image", "nothing", "--out", str(tmp_path / "x.png"))
    assert result.returncode != 0 and "image must be one of" in result.stderr
