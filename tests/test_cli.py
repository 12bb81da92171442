"""The main job, ``python -m captum_masks demo``, end to end (shortened optimisation)."""

import subprocess
import sys

import pytest

pytest.importorskip("captum_masks.zoo")
pytestmark = pytest.mark.real_model


def test_demo_prints_predictions_timings_and_saves_the_figure(tmp_path):
    out = tmp_path / "demo.png"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "captum_masks",
            "demo",
            "--image",
            "coffee",
            "--out",
            str(out),
            "--n-iter",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "Top-5 predictions for coffee" in result.stdout and "espresso" in result.stdout
    for method in [
        "MeaningfulPerturbation",
        "Saliency",
        "IntegratedGradients",
        "Occlusion",
        "LayerGradCam",
    ]:
        assert method in result.stdout
    assert out.stat().st_size > 10_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_image_is_a_clear_error(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "captum_masks",
            "demo",
            "--image",
            "nothing",
            "--out",
            str(tmp_path / "x.png"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode != 0 and "image must be one of" in result.stderr
