"""The main job, ``python -m captum_masks demo``, end to end (shortened optimisation)."""

import datetime

import pytest
import torch
from conftest import run_cli

pytest.importorskip("captum_masks.bench.zoo")
pytestmark = pytest.mark.real_model


def test_demo_explains_each_object_of_the_photo_and_saves_the_figure(tmp_path):
    from captum_masks.bench.demo import DEMO_METHODS

    out = tmp_path / "demo.png"
    result = run_cli("demo", "--out", str(out), "--n-iter", "20")
    assert result.returncode == 0, result.stderr
    explaining = next(line for line in result.stdout.splitlines() if line.startswith("Explaining"))
    assert "cat" in explaining and "espresso" in explaining
    rows = [line for line in result.stdout.splitlines() if "relevance on its object" in line]
    assert [row.split()[0] for row in rows] == list(DEMO_METHODS)
    assert out.stat().st_size > 10_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_of_one_photo_explains_its_top_class():
    from captum_masks.bench import zoo
    from captum_masks.bench.suites import image_suite

    suite = image_suite("coffee")  # what ``demo --image coffee`` explains, without the methods
    assert zoo.imagenet_categories()[int(suite.targets)] == "espresso"
    assert suite.other_masks is None and not suite.masks.any()
    torch.testing.assert_close(zoo.normalize(suite.display), suite.inputs, atol=1e-5, rtol=0)


def test_unknown_image_is_a_clear_error(tmp_path):
    result = run_cli("demo", "--image", "nothing", "--out", str(tmp_path / "x.png"))
    assert result.returncode != 0 and "image must be one of" in result.stderr


@pytest.fixture(scope="module")
def speed_rows():
    """One ``speed`` run for three methods: each row's cells by method name."""
    methods = [
        "MeaningfulPerturbation",
        "GuidedFeatureInversion",
        "AmortizedExplainer",
        "LayerGradCam",
    ]
    quick = ("--repeats", "1", "--images", "1", "--run-lengths", "2", "6")
    result = run_cli("speed", "--methods", *methods, *quick)
    assert result.returncode == 0, result.stderr
    header, _, *rows = result.stdout.strip().splitlines()[: 2 + len(methods)]
    assert header.startswith("| method | batch | images / iteration | forward+backward (s)")
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    assert [row[0] for row in cells] == methods
    return {row[0]: row for row in cells}


def test_speed_prints_one_row_per_method(speed_rows):
    cells = speed_rows["MeaningfulPerturbation"]
    assert cells[:3] == ["MeaningfulPerturbation", "1", "1"]
    bare, per_iteration, ratio = (float(cell) for cell in cells[3:6])
    assert ratio == pytest.approx(per_iteration / bare, rel=0.01)
    # the page faults a bare pass and an iteration took: whole numbers, counted on Linux
    assert all(cell.isdigit() for cell in cells[6:8])
    # at most 300 iterations; each image stops once its loss settles (the per-iteration time
    # comes from runs without early stopping, so it does not depend on where that happens)
    assert cells[8] == "300" and 20 < float(cells[9]) <= 300 and float(cells[12]) > 0
    # the model's passes: one forward and one backward per iteration, and two more forward
    # ones (the clean image and the floor of the deletion score, everything deleted)
    assert float(cells[10]) == float(cells[9]) + 2 and cells[11] == cells[9]


def test_speed_with_early_stopping_reports_the_iterations_run():
    from captum_masks.bench.speed import format_speed, measure_speed

    result = measure_speed(
        "NeuroMaskAttr",
        short_iters=2,
        long_iters=4,
        repeats=1,
        settings={"optimization.tolerance": 1e9},
        before={"optimization.tolerance": None, "optimization.n_iter": 15},
        images=2,
    )
    # no step improves by 1e9: every image stops after its patience (10) plus the first step
    assert result["iterations_run"] == 11 and result["default_iters"] == 100
    # the run to compare with, in the same call, ran its own settings to the end
    assert result["iterations_run_before"] == 15 and result["seconds_per_image_before"] > 0
    table = format_speed([result]).splitlines()
    assert table[0].endswith(
        "| iterations run (before) | passes (before): forward | backward | s / image (before) |"
    )
    assert table[2].split("|")[-5].strip() == "15"
    with pytest.raises(ValueError, match=r"\['tolerance'\] are not arguments"):
        measure_speed("GuidedFeatureInversion", settings={"tolerance": 1e-3})


def test_speed_of_guided_feature_inversion_counts_both_stages_and_passes(speed_rows):
    cells = speed_rows["GuidedFeatureInversion"]
    # stage 2 scores the kept and the removed image; a default run is 10 + 70 iterations
    assert cells[:3] == ["GuidedFeatureInversion", "1", "2"]
    assert cells[8] == cells[9] == "80" and float(cells[12]) > 0
    # backward passes through the model's output: stage 2's 70 × 2 and the target's gradient
    # that starts it (stage 1 stops at its layer)
    assert cells[11] == "141"


def test_speed_of_the_amortized_explainer_is_one_pass(speed_rows):
    cells = speed_rows["AmortizedExplainer"]
    assert cells[:3] == ["AmortizedExplainer", "1", "1"] and cells[8] == "1"
    _bare, whole, ratio = (float(cell) for cell in cells[3:6])
    # one explanation is the classifier pass plus the explainer pass: the same as the model's
    # cost, not the hundreds of passes of an optimisation
    assert float(cells[12]) == pytest.approx(whole, rel=0.05) and ratio < 10
    # the classifier's passes: the target's check and its features for the explainer
    assert cells[10:12] == ["2", "0"]


def test_speed_of_captums_grad_cam_is_one_forward_and_one_backward_pass(speed_rows):
    cells = speed_rows["LayerGradCam"]
    assert cells[8:12] == ["1", "1", "1", "1"]


def test_speed_table_states_the_amortized_speedup_per_batch_size():
    from captum_masks.bench.speed import format_speed

    def row(method, batch_size, seconds_per_image, iterations=100):
        return {
            "method": method,
            "batch_size": batch_size,
            "passes": batch_size,
            "bare_seconds": 0.1,
            "iteration_seconds": 0.1,
            "ratio": 1.0,
            "bare_faults": 0.0,
            "iteration_faults": None,
            "default_iters": iterations,
            "seconds_per_image": seconds_per_image,
            "iterations_run": float(iterations),
            "forward_passes": float(iterations),
            "backward_passes": float(iterations),
        }

    table = format_speed(
        [
            row("MeaningfulPerturbation", 1, 12.0),
            row("AmortizedExplainer", 1, 0.04, iterations=1),
            row("LayerGradCam", 1, 0.04, iterations=1),  # no optimisation: nothing to compare
            row("MeaningfulPerturbation", 4, 10.0),
        ]
    )
    assert (
        "AmortizedExplainer takes 300× less time per image than MeaningfulPerturbation at "
        "batch 1." in table
    )
    assert "batch 4" not in table  # no amortized row at batch 4 to compare with
    assert "than LayerGradCam" not in table


def test_speed_counts_the_page_faults_of_memory_taken_fresh_from_the_system():
    import mmap

    from captum_masks.bench.speed import _faults_per, page_faults

    assert page_faults() >= 0
    fresh = mmap.mmap(-1, 64 << 20)  # anonymous memory: each page is faulted in on first touch

    def touch():
        for offset in range(0, len(fresh), 4096):
            fresh[offset] = 1
        return sum(fresh[offset] for offset in range(0, len(fresh), 4096))

    touched, faults = _faults_per(touch, 1)
    assert touched == (64 << 20) // 4096 and faults > 0
    _, again = _faults_per(touch, 1)  # the same pages, now present
    assert again < faults
    fresh.close()


def test_speed_of_an_unknown_method_is_a_clear_error():
    from captum_masks.bench.speed import measure_speed

    with pytest.raises(ValueError, match="method must be one of"):
        measure_speed("GradCam")


def test_tabular_ranks_breast_cancer_features_against_shapley():
    from captum_masks.bench.tabular import breast_cancer_task

    task = breast_cancer_task()
    assert task.accuracy > 0.9
    calibration, held_out = task.rows["calibration"], task.rows["held-out"]
    # the two splits are disjoint rows, none of them trained on
    assert not (calibration[:, None] == held_out[None]).all(dim=2).any()
    result = run_cli("tabular", "--n", "12", "--split", "calibration")
    assert result.returncode == 0, result.stderr
    table = {
        line.split("|")[1].strip(): line.split("|")[2:-1]
        for line in result.stdout.splitlines()
        if line.startswith("| ") and not line.startswith("| method")
    }
    assert {"MeaningfulPerturbation", "NeuroMaskAttr", "ShapleyValueSampling"} <= set(table)
    assert float(table["ShapleyValueSampling"][0]) == 1.0
    # the masks rank the features the way Shapley values do, far from chance (0)
    assert float(table["NeuroMaskAttr"][0]) > 0.5
    assert float(table["MeaningfulPerturbation/preservation"][0]) > 0.5


def test_a_table_is_written_under_a_head_naming_its_command_machine_and_date(tmp_path):
    table = tmp_path / "tables" / "saliency.md"
    arguments = ["benchmark", "--suite", "synthetic", "--methods", "Saliency", "--n", "1"]
    result = run_cli(*arguments, "--out", str(tmp_path / "x.png"), "--table", str(table))
    assert result.returncode == 0, result.stderr
    head, separator, body = table.read_text().partition("| method |")
    assert separator and "python -m captum_masks benchmark --suite synthetic" in head
    assert "Measured on" in head and "cores" in head
    assert datetime.date.today().isoformat() in head
    assert (separator + body).strip() in result.stdout
