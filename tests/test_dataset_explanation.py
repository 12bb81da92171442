"""``explain_dataset``: one process and ``torchrun``, resuming after a crash, refusing mixed
settings, storage, scores and bad arguments."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from distributed_explain import (
    ATTRIBUTE_KWARGS,
    N_EXAMPLES,
    SeededImages,
    run,
    tiny_model,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from captum_masks import (
    RISE,
    DatasetExplanations,
    MeaningfulPerturbation,
    explain_dataset,
)
from captum_masks.datasets.storage import MANIFEST

SCRIPT = Path(__file__).parent / "distributed_explain.py"
TESTS = Path(__file__).parent


def torchrun(nproc: int, *arguments: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={nproc}", str(SCRIPT), *map(str, arguments)]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=environment, check=False
    )


def logged_examples(log: Path) -> int:
    return sum(int(line) for f in log.glob("rank-*.txt") for line in f.read_text().split())


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    return run(tmp_path_factory.mktemp("one")).load()


def assert_same_results(results: dict, expected: dict) -> None:
    assert results["ids"].tolist() == list(range(N_EXAMPLES))
    assert set(results) == set(expected)
    for name in expected:
        torch.testing.assert_close(results[name], expected[name], equal_nan=True, msg=name)


def test_one_process_gives_each_example_what_the_method_gives_it(one_process):
    data = SeededImages()
    images = torch.stack([data[i][0] for i in range(N_EXAMPLES)])
    labels = torch.tensor([data[i][1] for i in range(N_EXAMPLES)])
    direct = MeaningfulPerturbation(tiny_model()).attribute(
        images, target=labels, **ATTRIBUTE_KWARGS
    )
    torch.testing.assert_close(one_process["attributions"], direct)
    assert one_process["targets"].tolist() == labels.tolist()
    probabilities = tiny_model()(images).softmax(1)[torch.arange(N_EXAMPLES), labels]
    torch.testing.assert_close(one_process["probabilities"], probabilities.float())
    assert one_process["history.loss"].shape == (
        N_EXAMPLES,
        ATTRIBUTE_KWARGS["optimization"].n_iter,
    )
    for score in ("pointing", "relevance_mass", "deletion_auc", "insertion_auc"):
        values = one_process[f"scores.{score}"]
        assert values.shape == (N_EXAMPLES,) and ((values >= 0) & (values <= 1)).all()


def test_torchrun_two_processes_match_one_process(tmp_path, one_process):
    result = torchrun(2, tmp_path / "two", "--journal", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_results(DatasetExplanations(tmp_path / "two").load(), one_process)
    # the batches were split: both ranks worked, and no example was explained twice
    assert logged_examples(tmp_path) == N_EXAMPLES
    assert all((tmp_path / f"rank-{r}.txt").read_text() for r in (0, 1))


def test_run_killed_by_a_rank_resumes_on_three_processes(tmp_path, one_process):
    out, log = tmp_path / "out", tmp_path / "log"
    log.mkdir()
    killed = torchrun(2, out, "--kill-rank", 1, "--kill-after", 2, "--journal", log)
    assert killed.returncode != 0
    partial = DatasetExplanations(out)
    assert 0 < len(partial) < N_EXAMPLES and not partial.is_complete()
    done_before = len(partial)
    for previous in log.glob("*.txt"):
        previous.unlink()
    resumed = torchrun(3, out, "--journal", log)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert logged_examples(log) == N_EXAMPLES - done_before  # only what was missing
    assert not list(out.glob("*.tmp"))
    assert_same_results(DatasetExplanations(out).load(), one_process)


class Interrupted(Exception):
    pass


class FailsAfter(torch.utils.data.Dataset):
    """SeededImages that raises once ``limit`` items have been read, like a run cut short."""

    def __init__(self, limit: int) -> None:
        self.data, self.limit, self.reads = SeededImages(), limit, 0

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        self.reads += 1
        if self.reads > self.limit:
            raise Interrupted
        return self.data[index]


def test_interrupted_run_resumes_and_an_unfinished_file_is_not_taken_as_done(tmp_path):
    model = tiny_model()
    kwargs = {"batch_size": 4, "attribute_kwargs": {"n_samples": 16}, "show_progress": False}
    expected = explain_dataset(RISE(model), SeededImages(), tmp_path / "whole", **kwargs).load()
    out = tmp_path / "cut"
    # the first read is the data's fingerprint (3 items), then batches of 4: two batches done
    with pytest.raises(Interrupted):
        explain_dataset(RISE(model), FailsAfter(3 + 8 + 1), out, **kwargs)
    assert [f.name for f in DatasetExplanations(out).files()] == [
        "batch-0000000.pt",
        "batch-0000001.pt",
    ]
    (out / "batch-0000002.pt.tmp").write_bytes(b"half a file")
    resumed_data = FailsAfter(limit=10**6)
    results = explain_dataset(RISE(model), resumed_data, out, **kwargs)
    assert resumed_data.reads == 3 + N_EXAMPLES - 8  # the fingerprint, then the missing rows
    assert not (out / "batch-0000002.pt.tmp").exists()
    assert results.is_complete()
    torch.testing.assert_close(results.load(), expected)


@pytest.mark.parametrize(
    "change, key",
    [
        ({"attribute_kwargs": {"n_samples": 32}}, "attribute_kwargs"),
        ({"batch_size": 3}, "batch_size"),
        ({"target": 1}, "target"),
        ({"precision": "float16"}, "precision"),
        ({"settings": {"suite": "other"}}, "settings"),
    ],
)
def test_other_settings_on_the_same_out_are_refused(tmp_path, change, key):
    model = tiny_model()
    kwargs = {"batch_size": 11, "attribute_kwargs": {"n_samples": 16}, "show_progress": False}
    explain_dataset(RISE(model), SeededImages(), tmp_path, **kwargs)
    before = {f.name: f.read_bytes() for f in tmp_path.iterdir()}
    with pytest.raises(ValueError, match=f"other settings.*{key}"):
        explain_dataset(RISE(model), SeededImages(), tmp_path, **{**kwargs, **change})
    assert {f.name: f.read_bytes() for f in tmp_path.iterdir()} == before


def test_another_model_method_or_dataset_on_the_same_out_is_refused(tmp_path):
    kwargs = {"batch_size": 11, "show_progress": False}
    explain_dataset(RISE(tiny_model()), SeededImages(), tmp_path, **kwargs)
    retrained = tiny_model()
    with torch.no_grad():
        retrained[0].bias.add_(1e-3)
    with pytest.raises(ValueError, match="other settings.*model"):
        explain_dataset(RISE(retrained), SeededImages(), tmp_path, **kwargs)
    with pytest.raises(ValueError, match="other settings.*method"):
        explain_dataset(MeaningfulPerturbation(tiny_model()), SeededImages(), tmp_path, **kwargs)
    other_data = [SeededImages()[i + 1] for i in range(N_EXAMPLES)]
    with pytest.raises(ValueError, match="other settings.*data"):
        explain_dataset(RISE(tiny_model()), other_data, tmp_path, **kwargs)


def test_storage_half_precision_and_one_copy_of_a_repeated_mask(tmp_path):
    from captum.attr import IntegratedGradients

    sizes = {}
    for precision in ("float32", "float16", "bfloat16"):
        results = explain_dataset(
            RISE(tiny_model()),
            SeededImages(),
            tmp_path / precision,
            batch_size=N_EXAMPLES,
            precision=precision,
            attribute_kwargs={"n_samples": 16},
            show_progress=False,
        )
        (path,) = results.files()
        stored = torch.load(path, weights_only=True)
        # RISE's mask is the same in every channel: stored once, repeated when read
        assert stored["attributions"].shape == (N_EXAMPLES, 1, 12, 12)
        assert stored["attributions"].dtype == getattr(torch, precision)
        loaded = results.load()["attributions"]
        assert loaded.shape == (N_EXAMPLES, 3, 12, 12)
        assert (loaded == loaded[:, :1]).all()
        sizes[precision] = stored["attributions"].untyped_storage().nbytes()
    assert sizes["float16"] == sizes["bfloat16"] == sizes["float32"] // 2
    full = torch.stack([SeededImages()[i][0] for i in range(N_EXAMPLES)])
    expected = RISE(tiny_model()).attribute(
        full, target=tiny_model()(full).argmax(1), n_samples=16
    )
    torch.testing.assert_close(
        DatasetExplanations(tmp_path / "float32").load()["attributions"], expected.float()
    )
    # a map that differs between channels is stored whole
    gradients = explain_dataset(
        IntegratedGradients(tiny_model()), SeededImages(), tmp_path / "ig", show_progress=False
    )
    assert next(gradients.batches())["attributions"].shape[1] == 3
    assert "attributions.repeated_channels" not in torch.load(
        gradients.files()[0], weights_only=True
    )


@settings(max_examples=8, deadline=None)
@given(
    n=st.integers(1, 9),
    batch_size=st.integers(1, 5),
    kind=st.sampled_from(["tensor", "tuple", "dict"]),
)
def test_every_item_form_and_batch_size_explains_every_example_once(
    tmp_path_factory, n, batch_size, kind
):
    data = SeededImages()
    items = {
        "tensor": lambda i: data[i][0],
        "tuple": lambda i: data[i][:2],
        "dict": lambda i: {"inputs": data[i][0], "mask": data[i][2]},
    }[kind]
    dataset = [items(i) for i in range(n)]
    out = tmp_path_factory.mktemp("forms")
    results = explain_dataset(
        RISE(tiny_model()),
        dataset,
        out,
        batch_size=batch_size,
        attribute_kwargs={"n_samples": 8},
        show_progress=False,
    )
    loaded = results.load()
    assert loaded["ids"].tolist() == list(range(n))
    assert loaded["attributions"].shape == (n, 3, 12, 12)
    assert len(results.files()) == -(-n // batch_size)
    assert ("scores.pointing" in loaded) == (kind == "dict")
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["data"]["length"] == n and manifest["batch_size"] == batch_size


def test_table_summarises_the_scores_over_the_dataset(tmp_path):
    results = run(tmp_path)
    table = results.table().splitlines()
    assert table[0] == "| score | mean ± std | examples |"
    assert {line.split("|")[1].strip() for line in table[2:]} == {
        "pointing",
        "relevance_mass",
        "deletion_auc",
        "insertion_auc",
    }
    assert all(line.rstrip(" |").endswith(str(N_EXAMPLES)) for line in table[2:])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": tiny_model()}, "method must be a Captum attribution"),
        ({"data": iter([torch.rand(3, 12, 12)])}, "data must be a map-style dataset"),
        ({"data": []}, "data is empty"),
        ({"target": "top"}, "target must be 'predicted', 'label'"),
        ({"batch_size": 0}, "batch_size must be a positive int"),
        ({"precision": "int8"}, "precision must be one of"),
        ({"attribute_kwargs": {"target": 1}}, r"attribute_kwargs must not set \['target'\]"),
        ({"num_workers": -1}, "num_workers must be an int >= 0"),
    ],
)
def test_bad_arguments_are_clear_errors_and_write_nothing(tmp_path, kwargs, message):
    arguments = {"method": RISE(tiny_model()), "data": SeededImages(), "out": tmp_path / "out"}
    with pytest.raises(ValueError, match=message):
        explain_dataset(**{**arguments, **kwargs})
    assert not (tmp_path / "out").exists()


def test_a_folder_without_manifest_is_not_read_as_results(tmp_path):
    with pytest.raises(ValueError, match="holds no manifest.json"):
        DatasetExplanations(tmp_path)


def explain_command(*arguments, nproc: int | None = None) -> subprocess.CompletedProcess:
    """``python -m captum_masks explain ...``, or under ``torchrun`` with ``nproc`` processes."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    environment["OMP_NUM_THREADS"] = "1"
    launcher = [sys.executable]
    if nproc is not None:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    command = [*launcher, "-m", "captum_masks", *map(str, arguments), "--threads", "1"]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=environment, check=False
    )


@pytest.fixture
def image_folder(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image

    folder = tmp_path / "images"
    (folder / "nested").mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    for k, name in enumerate(["a.png", "b.jpg", "nested/c.png"]):
        pixels = (torch.rand(40 + k, 50, 3, generator=generator) * 255).to(torch.uint8)
        Image.fromarray(pixels.numpy()).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_explain_command_explains_a_folder_of_images_and_resumes(tmp_path, image_folder):
    arguments = ["explain", "RISE", "--data", image_folder, "--out", tmp_path / "out"]
    arguments += ["--model", "distributed_explain:tiny_float_model", "--batch-size", "2"]
    arguments += ["--set", "n_samples=8", "seed=1", "--precision", "float16"]
    first = explain_command(*arguments)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "3 of 3 examples" in first.stdout
    results = DatasetExplanations(tmp_path / "out")
    loaded = results.load()
    assert loaded["attributions"].shape == (3, 3, 224, 224)
    assert loaded["attributions"].dtype == torch.float16
    assert results.manifest["attribute_kwargs"] == {"n_samples": 8, "seed": 1}
    stamps = {f.name: f.stat().st_mtime_ns for f in results.files()}
    again = explain_command(*arguments)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {f.name: f.stat().st_mtime_ns for f in results.files()} == stamps  # nothing redone
    other = explain_command(*arguments[:-4], "n_samples=16", "seed=1")
    assert other.returncode == 2 and "other settings (attribute_kwargs" in other.stderr


def test_explain_command_stores_low_resolution_masks_and_reports_the_size(tmp_path, image_folder):
    arguments = ["--data", image_folder, "--model", "distributed_explain:tiny_float_model"]
    arguments += ["--set", "optimization.n_iter=2"]
    sizes = {}
    for flags in ([], ["--low-resolution"]):
        out = tmp_path / ("grid" if flags else "full")
        result = explain_command(
            "explain", "ExtremalPerturbation", *arguments, "--out", out, *flags
        )
        assert result.returncode == 0, result.stderr[-3000:]
        reported = re.search(r"stored per example: attributions ([0-9.]+) KiB", result.stdout)
        sizes[bool(flags)] = float(reported.group(1))
        assert DatasetExplanations(out).load()["attributions"].shape == (3, 3, 224, 224)
    # one 224 × 224 channel in float32, against the 56 × 56 grid and its recipe
    assert sizes[False] == 224 * 224 * 4 / 1024
    assert sizes[True] == pytest.approx(56 * 56 * 4 / 1024, abs=0.1)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["NoSuchMethod"], "method must be one of MeaningfulPerturbation"),
        (["RISE", "--model", "nowhere"], "model must be 'module:function'"),
        (["RISE", "--model", "no_module_here:f"], "cannot be imported"),
        (["LayerGradCam", "--layer", "no.such"], "layer 'no.such' is not a submodule"),
    ],
)
def test_explain_command_errors_name_the_argument(tmp_path, image_folder, arguments, message):
    arguments = [*arguments, "--data", image_folder, "--out", tmp_path / "out"]
    if "--model" not in arguments:
        arguments += ["--model", "distributed_explain:tiny_float_model"]
    result = explain_command("explain", *arguments)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


@pytest.mark.real_model  # the reference CNN of the synthetic suite
def test_benchmark_under_torchrun_matches_one_process(tmp_path):
    from captum_masks.bench.benchmark import format_table, run_benchmark

    methods = ["Saliency", "RISE"]
    result = explain_command(
        "benchmark",
        "--suite",
        "synthetic",
        "--n-images",
        3,
        "--methods",
        *methods,
        "--workdir",
        tmp_path / "work",
        "--out",
        tmp_path / "figure.png",
        nproc=2,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    single = format_table(run_benchmark("synthetic", methods, n=3, show_progress=False))

    def without_costs(table: str) -> list:  # the passes and seconds, the last three columns
        return [line.rsplit("|", 4)[0] for line in table.splitlines()]

    printed = [line for line in result.stdout.splitlines() if line.startswith("|")]
    assert without_costs("\n".join(printed)) == without_costs(single)
    # the passes ran in the other processes: not counted here, and not shown as 0
    assert all(line.split("|")[-4:-2] == [" – ", " – "] for line in printed[2:])
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == sorted(methods)


def test_scaling_table_shows_the_rates_and_the_imagenet_arithmetic():
    from captum_masks.bench.scaling import IMAGENET_VAL, ScalingRow, format_scaling

    rows = [ScalingRow("RISE", images=6, seconds={1: 12.0, 2: 8.0})]
    table = format_scaling(rows, machines=(1, 10)).splitlines()
    assert table[0].startswith("| method | images / s, 1 process | images / s, 2 processes |")
    cells = [cell.strip() for cell in table[2].strip("|").split("|")]
    assert cells[:3] == ["RISE", "0.500", "0.750"]
    # the faster count (2 processes, 0.75 images / s) times the number of machines
    assert cells[3] == f"{IMAGENET_VAL:,} ÷ (0.750 × 1) s = {IMAGENET_VAL / 0.75 / 3600:.1f} h"
    assert cells[4].endswith(f"= {IMAGENET_VAL / 7.5 / 3600:.1f} h")
    # three significant figures however slow the method
    slow = format_scaling([ScalingRow("RISE", images=2, seconds={1: 411.0})]).splitlines()[2]
    assert "| 0.00487 |" in slow
