"""Low-resolution masks: ``history.low_resolution`` gives back each method's attribution, and
``explain_dataset(low_resolution=True)`` stores it instead of the full map."""

from __future__ import annotations

import pytest
import torch
from distributed_explain import N_EXAMPLES, SeededImages, tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from captum_masks import (
    RISE,
    DatasetExplanations,
    ExtremalPerturbation,
    GuidedFeatureInversion,
    InversionStage,
    LowResolutionMask,
    MeaningfulPerturbation,
    NeuroMaskAttr,
    Optimization,
    SmoothMaxMask,
    UpsampledMask,
    explain_dataset,
)
from captum_masks.datasets.storage import MANIFEST


def conv_model(dtype: torch.dtype, dims: int = 2) -> nn.Module:
    torch.manual_seed(0)
    conv, pool = {1: (nn.Conv1d, nn.AdaptiveAvgPool1d), 2: (nn.Conv2d, nn.AdaptiveAvgPool2d)}[dims]
    model = nn.Sequential(
        conv(3, 4, 3, padding=1), nn.ReLU(), pool(1), nn.Flatten(), nn.Linear(4, 3)
    )
    return model.to(dtype).eval()


def explained(method: str, model: nn.Module, images: torch.Tensor, option: object):
    """(attributions, history) of ``method`` with its one varied ``option``, in few steps."""
    if method == "MeaningfulPerturbation":
        return MeaningfulPerturbation(model).attribute(
            images,
            target=0,
            game=option,
            return_history=True,
            optimization=Optimization(n_iter=4),
            mask=UpsampledMask(factor=4),
        )
    if method == "ExtremalPerturbation":
        areas, stride = option
        return ExtremalPerturbation(model).attribute(
            images,
            target=1,
            areas=areas,
            return_history=True,
            optimization=Optimization(n_iter=4),
            mask=SmoothMaxMask(stride=stride, step=3, sigma=5.0),
        )
    return GuidedFeatureInversion(model, model[1]).attribute(
        images,
        target=2,
        stage=option,
        return_history=True,
        inversion=InversionStage(n_iter=3),
        optimization=Optimization(n_iter=3),
    )


OPTIONS = {
    "MeaningfulPerturbation": st.sampled_from(["deletion", "preservation"]),
    "ExtremalPerturbation": st.tuples(
        st.sampled_from([(0.1,), (0.05, 0.3)]), st.sampled_from([1, 2, 4])
    ),
    "GuidedFeatureInversion": st.sampled_from(["inversion", "target"]),
}


@settings(max_examples=12, deadline=None)
@given(
    method=st.sampled_from(sorted(OPTIONS)),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    height=st.integers(9, 20),
    width=st.integers(9, 20),
    n=st.integers(1, 3),
    data=st.data(),
)
def test_the_low_resolution_mask_expands_to_the_attribution(method, dtype, height, width, n, data):
    option = data.draw(OPTIONS[method])
    images = torch.rand(
        n, 3, height, width, generator=torch.Generator().manual_seed(n), dtype=dtype
    )
    attributions, history = explained(method, conv_model(dtype), images, option)
    (low,) = history.low_resolution
    assert low.values.shape[:2] == (n, 1) and low.values.dtype == dtype
    assert low.values[0].numel() <= attributions[0, 0].numel()
    expanded = low.expand((height, width))
    torch.testing.assert_close(expanded.expand_as(attributions), attributions)
    # recipe() holds every field but the values
    assert LowResolutionMask(low.values, **low.recipe()) == low


def test_mp_grid_has_28_cells_along_the_shorter_side_and_expands_along_one_axis_too():
    images = torch.rand(2, 3, 112, 224)
    attributions, history = MeaningfulPerturbation(conv_model(torch.float32)).attribute(
        images, target=0, return_history=True, optimization=Optimization(n_iter=3)
    )
    assert history.low_resolution[0].values.shape == (2, 1, 28, 56)  # factor 112 / 28
    signals = torch.rand(2, 3, 168)
    attributions, history = MeaningfulPerturbation(conv_model(torch.float32, dims=1)).attribute(
        signals,
        target=0,
        channels_last=False,
        return_history=True,
        optimization=Optimization(n_iter=3),
    )
    (low,) = history.low_resolution
    assert low.values.shape == (2, 1, 28)
    torch.testing.assert_close(low.expand((168,)).expand_as(attributions), attributions)


def test_calls_without_a_grid_have_no_low_resolution_mask():
    model = conv_model(torch.float32)
    images = torch.rand(2, 3, 16, 16)
    groups = (torch.arange(256).view(1, 1, 16, 16) // 64).expand(2, 1, 16, 16)
    _, grouped = MeaningfulPerturbation(model).attribute(
        images,
        target=0,
        feature_mask=groups,
        return_history=True,
        optimization=Optimization(n_iter=2),
    )
    _, pixels = NeuroMaskAttr(model).attribute(
        images, target=0, return_history=True, optimization=Optimization(n_iter=2)
    )
    assert grouped.low_resolution is None and pixels.low_resolution is None


def test_bad_upsampling_is_refused():
    with pytest.raises(ValueError, match="upsampling must be one of"):
        LowResolutionMask(torch.zeros(1, 1, 2, 2), upsampling="nearest")


def dataset_run(out, method, **kwargs):
    return explain_dataset(
        method, SeededImages(), out, batch_size=5, show_progress=False, **kwargs
    )


@pytest.mark.parametrize(
    "method", ["MeaningfulPerturbation", "ExtremalPerturbation", "GuidedFeatureInversion"]
)
def test_explain_dataset_stores_the_grid_and_reads_back_the_attributions(tmp_path, method):
    model = tiny_model()
    build = {
        "MeaningfulPerturbation": lambda: (
            MeaningfulPerturbation(model),
            {"mask": UpsampledMask(factor=4), "optimization": Optimization(n_iter=4)},
        ),
        "ExtremalPerturbation": lambda: (
            ExtremalPerturbation(model),
            {
                "optimization": Optimization(n_iter=4),
                "mask": SmoothMaxMask(step=3, sigma=5.0, stride=3),
            },
        ),
        "GuidedFeatureInversion": lambda: (
            GuidedFeatureInversion(model, model[2]),
            {"inversion": InversionStage(n_iter=3), "optimization": Optimization(n_iter=3)},
        ),
    }[method]
    attribution, kwargs = build()
    full = dataset_run(tmp_path / "full", attribution, attribute_kwargs=kwargs)
    small = dataset_run(
        tmp_path / "small", attribution, attribute_kwargs=kwargs, low_resolution=True
    )
    half = dataset_run(
        tmp_path / "half",
        attribution,
        attribute_kwargs=kwargs,
        low_resolution=True,
        precision="float16",
    )
    expected = full.load()
    loaded = small.load()
    assert set(loaded) == set(expected)
    torch.testing.assert_close(loaded["attributions"], expected["attributions"])
    torch.testing.assert_close(loaded["scores.pointing"], expected["scores.pointing"])
    halved = half.load()["attributions"]
    assert halved.dtype == torch.float16 and halved.shape == (N_EXAMPLES, 3, 12, 12)
    torch.testing.assert_close(halved.float(), expected["attributions"].float(), atol=2e-3, rtol=0)
    stored = torch.load(small.files()[0], weights_only=True)
    assert "attributions" not in stored
    grid = stored["attributions.low_resolution"]
    assert grid.shape[:2] == (5, 1) and grid[0].numel() < 12 * 12


def test_low_resolution_is_refused_for_methods_without_a_grid(tmp_path):
    with pytest.raises(ValueError, match="low_resolution=True needs.*RISE has none"):
        dataset_run(tmp_path / "rise", RISE(tiny_model()), low_resolution=True)
    assert not (tmp_path / "rise").exists()
    with pytest.raises(TypeError, match="low_resolution must be a bool"):
        dataset_run(tmp_path / "rise", RISE(tiny_model()), low_resolution="yes")
    # NeuroMask's mask is pixel-level: found at its first batch, before any batch file
    neuromask = NeuroMaskAttr(tiny_model())
    out = tmp_path / "neuromask"
    with pytest.raises(ValueError, match="NeuroMaskAttr returned no low-resolution masks"):
        dataset_run(
            out,
            neuromask,
            attribute_kwargs={"optimization": Optimization(n_iter=2)},
            low_resolution=True,
        )
    assert [f.name for f in out.iterdir()] == [MANIFEST]
    # a folder without results takes other settings
    results = dataset_run(
        out, neuromask, attribute_kwargs={"optimization": Optimization(n_iter=2)}
    )
    assert results.is_complete() and DatasetExplanations(out).manifest["low_resolution"] is False
