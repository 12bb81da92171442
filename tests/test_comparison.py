"""The comparison harness and ``python -m captum_masks benchmark``, on few images."""

import inspect
import sys

import pytest
import torch

pytest.importorskip("captum_masks.bench.zoo")

from conftest import run_cli

from captum_masks import AmortizedExplainer
from captum_masks.bench.benchmark import (
    COST_COLUMNS,
    METRIC_COLUMNS,
    format_rows,
    format_table,
    run_benchmark,
    save_figure,
)
from captum_masks.bench.runners import ALL_METHODS, REFERENCE_METHODS, method_runners
from captum_masks.bench.suites import photos_pairs_suite, synthetic_suite

pytestmark = pytest.mark.real_model  # trains (or loads) the reference CNN
FAST_METHODS = ["Saliency", "LayerGradCam"]
#: every column but ``discrimination``, which only the pair suites have
SINGLE_COLUMNS = [c for c in METRIC_COLUMNS if c != "discrimination"]


@pytest.fixture(scope="module")
def fast_result():
    return run_benchmark("synthetic", FAST_METHODS, n=3, show_progress=False)


def test_scores_every_image_with_every_metric_in_range(fast_result):
    assert list(fast_result.scores) == FAST_METHODS
    for name in FAST_METHODS:
        score = fast_result.scores[name]
        assert set(score) == {*SINGLE_COLUMNS, *COST_COLUMNS}
        # a gradient method: one forward and one backward pass of the model per image
        assert score["forward_passes"] == score["backward_passes"] == [1.0]
        for column in SINGLE_COLUMNS:
            assert len(score[column]) == 3
            assert all(0.0 <= value <= 1.0 for value in score[column]), (name, column)
        attribution = fast_result.attributions[name]
        assert attribution.shape[0] == 3 and attribution.shape[-2:] == (64, 64)
        assert score["seconds"][0] > 0
        deletion = fast_result.curves[name]["deletion"]
        insertion = fast_result.curves[name]["insertion"]
        assert deletion.shape == insertion.shape == (3, 17)
        # both curves join the same two ends: the whole image and the fully removed one
        torch.testing.assert_close(deletion[:, 0], insertion[:, -1])
        torch.testing.assert_close(deletion[:, -1], insertion[:, 0])


def test_table_has_one_row_per_method_with_mean_and_std(fast_result):
    table = format_table(fast_result).splitlines()
    assert table[0].startswith("| method | pointing ↑ | relevance_mass ↑")
    assert len(table) == 2 + len(FAST_METHODS)
    for line, name in zip(table[2:], FAST_METHODS):
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[0] == name
        assert len(cells) == 1 + len(SINGLE_COLUMNS) + len(COST_COLUMNS)
        assert all("±" in cell for cell in cells[1 : 1 + len(SINGLE_COLUMNS)])
        assert cells[-3:-1] == ["1", "1"]  # forward and backward passes per image


def test_row_table_gives_each_rows_own_scores(fast_result):
    table = format_rows(fast_result).splitlines()
    assert table[0] == (
        "| row | image | Saliency: pointing | Saliency: relevance_mass | "
        "LayerGradCam: pointing | LayerGradCam: relevance_mass |"
    )
    assert len(table) == 2 + 3
    for row, line in enumerate(table[2:]):
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[0] == str(row)
        expected = [
            fast_result.scores[name][column][row]
            for name in FAST_METHODS
            for column in ("pointing", "relevance_mass")
        ]
        assert [float(cell) for cell in cells[2:]] == pytest.approx(expected, abs=0.005)


def test_figure_is_written(fast_result, tmp_path):
    path = tmp_path / "grid.png"
    save_figure(fast_result, str(path), rows=2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_runner_gives_input_sized_maps_on_the_same_suite():
    suite = synthetic_suite(2, seed=3)
    runners = method_runners(suite)
    assert set(runners) == set(ALL_METHODS)
    for name, runner in runners.items():
        if name.startswith("MeaningfulPerturbation") or name == "AmortizedExplainer":
            continue  # covered below: with the suite's settings, on the pair suite
        if name in REFERENCE_METHODS:
            continue  # covered below: installed in the benchmark's environment only
        attribution = runner(suite.inputs, suite.targets)
        assert attribution.shape[0] == 2 and attribution.shape[-2:] == (64, 64), name
        assert torch.isfinite(attribution).all(), name


def test_torchray_row_without_torchray_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchray", None)
    monkeypatch.setitem(sys.modules, "torchray.attribution", None)
    monkeypatch.setitem(sys.modules, "torchray.attribution.extremal_perturbation", None)
    suite = synthetic_suite(1, seed=3)
    runner = method_runners(suite)["TorchRay/ExtremalPerturbation"]
    with pytest.raises(ImportError, match="pip install --no-deps torchray"):
        runner(suite.inputs, suite.targets)


def test_torchray_row_gives_maps_and_leaves_the_model_trainable():
    """TorchRay freezes the parameters it is given; its row must not change the later rows."""
    pytest.importorskip("torchray.attribution.extremal_perturbation")
    suite = synthetic_suite(2, seed=3)
    before = [p.requires_grad for p in suite.model.parameters()]
    from torchray.attribution import extremal_perturbation as torchray_ep

    calls = []
    real = torchray_ep.extremal_perturbation

    def few_steps(*args, **kwargs):
        calls.append(args[2])
        return real(*args, **kwargs, max_iter=3)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torchray_ep, "extremal_perturbation", few_steps)
        maps = method_runners(suite)["TorchRay/ExtremalPerturbation"](suite.inputs, suite.targets)
    assert calls == suite.targets.tolist()
    assert maps.shape == (2, 1, 64, 64) and torch.isfinite(maps).all()
    assert [p.requires_grad for p in suite.model.parameters()] == before


def test_default_benchmark_leaves_out_the_reference_implementations():
    from captum_masks.bench.benchmark import _chosen_methods

    chosen = _chosen_methods("photos", None, 1, {})
    assert not set(chosen) & set(REFERENCE_METHODS)
    assert _chosen_methods("photos", list(REFERENCE_METHODS), 1, {}) == list(REFERENCE_METHODS)


def test_pair_suite_explains_every_image_for_both_objects():
    methods = ["GuidedFeatureInversion/inversion", "LayerGradCam"]
    result = run_benchmark("synthetic-pairs", methods, n=6, show_progress=False)
    suite = result.suite
    assert suite.inputs.shape[0] == 12
    torch.testing.assert_close(suite.inputs[:6], suite.inputs[6:])
    assert (suite.targets[:6] != suite.targets[6:]).all()
    torch.testing.assert_close(suite.masks[:6], suite.other_masks[6:])
    assert not (suite.masks.bool() & suite.other_masks.bool()).any()
    for name in methods:
        assert len(result.scores[name]["discrimination"]) == 12
    # stage 1 never sees the class: one map per image, so at most one of its two rows can win
    inversion = result.attributions["GuidedFeatureInversion/inversion"]
    torch.testing.assert_close(inversion[:6], inversion[6:])
    wins = torch.tensor(result.scores["GuidedFeatureInversion/inversion"]["discrimination"])
    assert (wins[:6] + wins[6:] <= 1).all()
    # Grad-CAM is class-discriminative on the multi-label reference CNN
    assert sum(result.scores["LayerGradCam"]["discrimination"]) >= 10
    table = format_table(result)
    assert "discrimination ↑" in table.splitlines()[0]


def test_photos_pairs_suite_targets_each_objects_own_class():
    from captum_masks.bench import zoo

    suite = photos_pairs_suite(3, split="calibration", objects=("cat", "coffee"))
    categories = zoo.imagenet_categories()
    assert all(categories[t] in zoo.OBJECTS["cat"].classes for t in suite.targets[:3].tolist())
    assert all(categories[t] in zoo.OBJECTS["coffee"].classes for t in suite.targets[3:].tolist())
    assert all(text.startswith("cat next to coffee on ") for text in suite.descriptions[:3])
    torch.testing.assert_close(suite.masks[:3], suite.other_masks[3:])
    assert not (suite.masks.bool() & suite.other_masks.bool()).any()


def test_objects_fix_the_two_objects_of_every_benchmark_image():
    result = run_benchmark(
        "photos-pairs",
        ["LayerGradCam"],
        n=2,
        split="calibration",
        show_progress=False,
        objects=("coffee", "cat"),
    )
    descriptions = result.suite.descriptions
    assert len(descriptions) == 4
    assert all(text.startswith("coffee next to cat on ") for text in descriptions[:2])
    assert all(text.startswith("cat next to coffee on ") for text in descriptions[2:])
    assert len(result.scores["LayerGradCam"]["discrimination"]) == 4


def test_meaningful_perturbation_games_point_at_the_shape():
    result = run_benchmark(
        "synthetic",
        ["MeaningfulPerturbation/preservation", "MeaningfulPerturbation/deletion"],
        n=4,
        show_progress=False,
    )
    preservation = result.scores["MeaningfulPerturbation/preservation"]
    # a random map puts about the object's share of the image (~0.08) inside it
    assert sum(preservation["relevance_mass"]) / 4 > 0.3
    assert sum(preservation["pointing"]) >= 3
    deleted = result.attributions["MeaningfulPerturbation/deletion"]
    kept = result.attributions["MeaningfulPerturbation/preservation"]
    assert not torch.equal(deleted, kept)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"suite": "mnist"}, "suite must be one of"),
        ({"methods": ["GradCam"]}, "unknown methods"),
        ({"n": 0}, "n must be >= 1"),
        ({"methods": ["AmortizedExplainer"]}, "trained explainer only for the suites"),
        ({"objects": ("cat", "coffee")}, "objects picks the two objects of a photo pair suite"),
        ({"methods": ["Occlusion[n_iter=3]"]}, "one of this package's methods followed by"),
        ({"methods": ["NeuroMaskAttr[mask.temperature=1.0"]}, "one of this package's methods"),
        ({"methods": ["NeuroMaskAttr[tv_weight=1.0]"]}, r"NeuroMaskAttr takes no setting"),
        ({"methods": ["RISE[n_samples]"]}, "expected NAME=VALUE"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        run_benchmark(**{"suite": "synthetic", "n": 1, **kwargs})


def test_command_prints_a_table_every_row_and_saves_the_grid(tmp_path):
    out = tmp_path / "bench.png"
    result = run_cli(
        "benchmark",
        "--suite",
        "photos",
        "--methods",
        *FAST_METHODS,
        "--n",
        "2",
        "--rows",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "photos suite, held-out split, 2 images" in result.stdout
    assert all(f"| {name} |" in result.stdout for name in FAST_METHODS)
    rows = result.stdout.split("Every row:")[1].strip().splitlines()
    assert rows[0].startswith("| row | image | Saliency: pointing |")
    assert [line.split("|")[1].strip() for line in rows[2:4]] == ["0", "1"]
    assert all(" on " in line.split("|")[2] for line in rows[2:4])  # "cat on hubble, ..."
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_overrides_reach_this_packages_methods(tmp_path):
    one, three = (
        run_benchmark(
            "synthetic",
            ["NeuroMaskAttr"],
            n=2,
            show_progress=False,
            overrides={"optimization.n_iter": n_iter},
        )
        for n_iter in (1, 3)
    )
    assert not torch.equal(one.attributions["NeuroMaskAttr"], three.attributions["NeuroMaskAttr"])
    result = run_cli(
        "benchmark",
        "--suite",
        "synthetic",
        "--methods",
        "NeuroMaskAttr",
        "--n",
        "1",
        "--set",
        "optimization.n_iter=2",
        "optimization.optimizer=adam",
        "--out",
        str(tmp_path / "x.png"),
    )
    assert result.returncode == 0, result.stderr
    assert "--set optimization.n_iter=2 optimization.optimizer=adam" in result.stdout
    bad = run_cli("benchmark", "--set", "n_iter", "--out", str(tmp_path / "y.png"))
    assert bad.returncode != 0 and "expected NAME=VALUE" in bad.stderr


def test_overrides_go_only_to_the_methods_that_take_them():
    both = ["NeuroMaskAttr", "GuidedFeatureInversion"]
    short = run_benchmark(
        "synthetic", both, n=1, show_progress=False, overrides={"mask.temperature": 0.5}
    )
    variant = "NeuroMaskAttr[mask.temperature=0.5]"
    plain = run_benchmark("synthetic", [*both, variant], n=1, show_progress=False)
    assert not torch.equal(
        short.attributions["NeuroMaskAttr"], plain.attributions["NeuroMaskAttr"]
    )
    torch.testing.assert_close(  # GFI's mask has no temperature: unchanged
        short.attributions["GuidedFeatureInversion"], plain.attributions["GuidedFeatureInversion"]
    )
    # a row with its own settings is the method run with them, beside its defaults
    assert list(plain.scores) == [*both, variant]
    torch.testing.assert_close(plain.attributions[variant], short.attributions["NeuroMaskAttr"])
    with pytest.raises(ValueError, match=r"overrides \['mask.temperature'\] are not arguments"):
        run_benchmark(
            "synthetic",
            ["GuidedFeatureInversion", "Saliency"],
            n=1,
            show_progress=False,
            overrides={"mask.temperature": 1.0},
        )


@pytest.fixture
def quick_explainer_settings(monkeypatch):
    """A few seconds of training instead of minutes (its own cache entry)."""
    from captum_masks.bench import synthetic

    monkeypatch.setitem(synthetic.EXPLAINER_SETTINGS, "train_size", 64)
    monkeypatch.setitem(synthetic.EXPLAINER_SETTINGS, "val_size", 16)
    monkeypatch.setitem(synthetic.EXPLAINER_SETTINGS, "epochs", 1)


def test_class_masking_report_scores_the_explainer_next_to_the_ground_truth(
    quick_explainer_settings,
):
    from captum_masks.bench.class_masking import (
        class_masking_report,
        format_class_masking,
    )

    report = class_masking_report(n=12, retrain=True)
    assert report["history"] is not None and len(report["history"].train_loss) == 1
    truth = report["ground truth"]
    # the pasted shapes themselves: the right one keeps its class, the other object's removes it
    assert truth["same_relative"] > 0.95 and truth["other_co_occurring_relative"] < 0.1
    for source in ("explainer", "ground truth"):
        assert report[source]["table"].shape == (4, 4)
    text = format_class_masking(report)
    rows = [line for line in text.splitlines() if line.startswith("| circle |")]
    assert len(rows) == 2 and "ms per image" in text  # one row per table
    again = class_masking_report(n=12)  # now from the cache, with the same masks
    other = class_masking_report(n=12, retrain=True, overrides={"separate_classes": False})
    assert other["history"] is not None  # another setting trains (and caches) its own
    assert again["history"] is None
    torch.testing.assert_close(
        again["explainer"]["co_occurring_table"],
        report["explainer"]["co_occurring_table"],
        equal_nan=True,
    )


def test_a_new_default_of_fit_retrains_the_cached_explainer(
    quick_explainer_settings, monkeypatch, tmp_path
):
    """The cache key holds fit's defaults: after a release changes one, the benchmark trains
    a new explainer instead of loading one trained with the old value."""
    from captum_masks.bench.synthetic import load_synthetic_explainer

    monkeypatch.setenv("CAPTUM_MASKS_CACHE", str(tmp_path))
    _, history = load_synthetic_explainer(verbose=False)
    assert history is not None
    _, history = load_synthetic_explainer(verbose=False)
    assert history is None  # cached
    values = AmortizedExplainer.fit.__defaults__
    names = list(inspect.signature(AmortizedExplainer.fit).parameters)[-len(values) :]
    defaults = dict(zip(names, values))
    defaults["mask_area_weights"] = (1.0, 1.0)
    monkeypatch.setattr(AmortizedExplainer.fit, "__defaults__", tuple(defaults.values()))
    _, history = load_synthetic_explainer(verbose=False)
    assert history is not None
    assert len(list(tmp_path.glob("amortized_explainer_multi_*.pt"))) == 2


def test_amortized_explainer_is_a_method_of_the_pair_suite(quick_explainer_settings):
    result = run_benchmark(
        "synthetic-pairs", ["AmortizedExplainer", "Saliency"], n=2, show_progress=False
    )
    maps = result.attributions["AmortizedExplainer"]
    assert maps.shape == (4, 3, 64, 64) and 0 <= maps.min() and maps.max() <= 1
    assert len(result.scores["AmortizedExplainer"]["discrimination"]) == 4


def test_explainer_overrides_must_be_training_settings():
    from captum_masks.bench.synthetic import load_synthetic_explainer

    with pytest.raises(ValueError, match="overrides must be keys of EXPLAINER_SETTINGS"):
        load_synthetic_explainer(verbose=False, separate=False)
