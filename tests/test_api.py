"""The public API's shape: every ``attribute`` in Captum's form, the settings objects, and a clear
error for each keyword that moved into them."""

import dataclasses
import functools
import inspect
import pickle

import pytest
import torch
from captum.attr import Attribution
from hypothesis import given
from hypothesis import strategies as st

import captum_masks
from captum_masks import (
    Blur,
    BlurPyramid,
    ExtremalPerturbation,
    GuidedFeatureInversion,
    InversionStage,
    MeaningfulPerturbation,
    NeuroMaskAttr,
    Noise,
    Optimization,
    SigmoidMask,
    SmoothMaxMask,
    UpsampledMask,
)
from captum_masks.masks import CellMask, GroupedMask, Mask

#: Captum's positional head, in order; a method takes the names it needs, from the start
HEAD = ("inputs", "target", "additional_forward_args")
#: what may follow the head positionally: Captum's baselines and feature groups, by their
#: input-space and layer names
OPTIONAL_HEAD = ("baselines", "feature_mask", "layer_baselines", "layer_mask")
MOST_PARAMETERS = 15

ATTRIBUTIONS = sorted(
    (
        getattr(captum_masks, name)
        for name in captum_masks.__all__
        if isinstance(getattr(captum_masks, name), type)
        and issubclass(getattr(captum_masks, name), Attribution)
    ),
    key=lambda cls: cls.__name__,
)
OPTIMIZING = [
    MeaningfulPerturbation,
    NeuroMaskAttr,
    ExtremalPerturbation,
    GuidedFeatureInversion,
]


def parameters(cls: type) -> list[inspect.Parameter]:
    """``cls.attribute``'s parameters without ``self``, through the decorators' ``__wrapped__``."""
    return list(inspect.signature(cls.attribute).parameters.values())[1:]


def test_every_public_attribution_class_is_found():
    names = {cls.__name__ for cls in ATTRIBUTIONS}
    assert {
        "MeaningfulPerturbation",
        "NeuroMaskAttr",
        "ExtremalPerturbation",
        "RISE",
    } <= names
    assert {"GuidedFeatureInversion", "AmortizedExplainer", "LayerNeuroMask"} <= names


@pytest.mark.parametrize("cls", ATTRIBUTIONS, ids=lambda cls: cls.__name__)
def test_attribute_has_captums_positional_head_and_keyword_only_tail(cls):
    params = parameters(cls)
    assert len(params) <= MOST_PARAMETERS, [p.name for p in params]
    positional = [p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert tuple(positional[: len(HEAD)]) == HEAD
    optional = positional[len(HEAD) :]
    assert all(name in OPTIONAL_HEAD for name in optional), optional
    # in Captum's order: baselines before the feature groups
    assert optional == sorted(optional, key=OPTIONAL_HEAD.index)
    rest = params[len(positional) :]
    assert all(
        p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_KEYWORD) for p in rest
    )


@pytest.mark.parametrize("cls", OPTIMIZING, ids=lambda cls: cls.__name__)
def test_optimising_methods_take_one_optimization_with_complete_defaults(cls):
    assert "optimization" in {p.name for p in parameters(cls)}
    defaults = cls.default_optimization
    assert isinstance(defaults, Optimization)
    assert set(defaults.given()) == {f.name for f in dataclasses.fields(Optimization)}


MOVED = [
    (MeaningfulPerturbation, "n_iter", 3, "optimization=Optimization(n_iter=...)"),
    (
        MeaningfulPerturbation,
        "tolerance",
        None,
        "optimization=Optimization(tolerance=...)",
    ),
    (MeaningfulPerturbation, "seed", 1, "optimization=Optimization(seed=...)"),
    (MeaningfulPerturbation, "mask_factor", 4, "mask=UpsampledMask(factor=...)"),
    (MeaningfulPerturbation, "blur_sigma", 3.0, "perturbation=Blur(sigma=...)"),
    (NeuroMaskAttr, "lr", 0.1, "optimization=Optimization(lr=...)"),
    (NeuroMaskAttr, "temperature", 1.0, "mask=SigmoidMask(temperature=...)"),
    (NeuroMaskAttr, "mask_factor", 2, "mask=SigmoidMask(block=...)"),
    (ExtremalPerturbation, "internal_batch_size", 2, "optimization=Optimization("),
    (ExtremalPerturbation, "step", 5, "mask=SmoothMaxMask(step=...)"),
    (ExtremalPerturbation, "max_blur", 5.0, "perturbation=BlurPyramid(max_sigma=...)"),
    (
        GuidedFeatureInversion,
        "target_iters",
        5,
        "optimization=Optimization(n_iter=...)",
    ),
    (
        GuidedFeatureInversion,
        "inversion_iters",
        5,
        "inversion=InversionStage(n_iter=...)",
    ),
    (GuidedFeatureInversion, "lr_step", 5, "scheduler=functools.partial("),
]


@pytest.mark.parametrize(
    "cls, name, value, spelling",
    MOVED,
    ids=[f"{c.__name__}-{n}" for c, n, _, _ in MOVED],
)
def test_an_old_flat_setting_is_a_type_error_that_shows_the_new_spelling(
    cls, name, value, spelling, tiny_model, images
):
    explainer = (
        cls(tiny_model, layer=tiny_model.features[1])
        if cls is GuidedFeatureInversion
        else cls(tiny_model)
    )
    with pytest.raises(TypeError) as error:
        explainer.attribute(images, target=0, **{name: value})
    assert f"no argument {name!r}" in str(error.value) and spelling in str(error.value)


def test_a_misspelt_keyword_is_pythons_own_type_error(tiny_model, images):
    with pytest.raises(TypeError, match="unexpected keyword argument 'gmae'"):
        MeaningfulPerturbation(tiny_model).attribute(images, target=0, gmae="deletion")


def test_settings_after_the_head_cannot_be_positional(tiny_model, images):
    with pytest.raises(TypeError, match="positional"):
        MeaningfulPerturbation(tiny_model).attribute(images, 0, None, None, None, "preservation")


def test_optimization_keeps_only_the_fields_given_and_fills_the_rest_from_the_method():
    quick = Optimization(n_iter=5)
    assert quick.given() == {"n_iter": 5} and repr(quick) == "Optimization(n_iter=5)"
    resolved = quick.over(NeuroMaskAttr.default_optimization)
    assert resolved.n_iter == 5
    assert resolved.optimizer == NeuroMaskAttr.default_optimization.optimizer == "rmsprop"
    assert (
        Optimization(tolerance=None).over(MeaningfulPerturbation.default_optimization).tolerance
        is None
    )


@pytest.mark.parametrize(
    "fields, error, message",
    [
        ({"n_iter": 0}, ValueError, "n_iter must be a positive int"),
        ({"lr": 0.0}, ValueError, "lr must be a number > 0"),
        ({"optimizer": "lbfgs"}, ValueError, "optimizer must be one of"),
        ({"optimizer": 3}, TypeError, "optimizer must be a string or a callable"),
        ({"scheduler": "step"}, TypeError, "scheduler must be None or a callable"),
        ({"tolerance": -1.0}, ValueError, "tolerance must be None or a number >= 0"),
        ({"patience": 0}, ValueError, "patience must be a positive int"),
        ({"internal_batch_size": 0}, ValueError, "internal_batch_size must be"),
        ({"show_progress": 1}, TypeError, "show_progress must be a bool"),
        ({"seed": 0.5}, TypeError, "seed must be an int"),
    ],
)
def test_a_bad_optimization_field_is_a_clear_error_when_built(fields, error, message):
    with pytest.raises(error, match=message):
        Optimization(**fields)


def test_optimization_is_frozen_and_survives_pickling():
    settings = Optimization(
        n_iter=7,
        scheduler=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=2),
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.n_iter = 3  # type: ignore[misc]
    again = pickle.loads(pickle.dumps(settings))
    assert again.given().keys() == settings.given().keys() and again.n_iter == 7


def test_a_wrong_object_for_a_setting_names_the_argument(tiny_model, images):
    explainer = MeaningfulPerturbation(tiny_model)
    with pytest.raises(TypeError, match="optimization must be a captum_masks.Optimization"):
        explainer.attribute(images, target=0, optimization={"n_iter": 3})
    with pytest.raises(TypeError, match="mask must be a UpsampledMask or None"):
        explainer.attribute(images, target=0, mask=SigmoidMask())
    with pytest.raises(TypeError, match="perturbation must be a name or one of Blur"):
        explainer.attribute(images, target=0, perturbation=BlurPyramid())


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: UpsampledMask(factor=0), "factor must be a positive int"),
        (lambda: UpsampledMask(init_value=1.5), "init_value must be in"),
        (lambda: SigmoidMask(temperature=0.0), "temperature must be"),
        (lambda: SigmoidMask(block=0), "block must be a positive int or None"),
        (lambda: SmoothMaxMask(stride=0), "stride must be a positive int"),
        (lambda: Blur(sigma=-1.0), "sigma must be a number >= 0"),
        (lambda: Noise(std=-1.0), "std must be a number >= 0"),
        (lambda: BlurPyramid(levels=1), "levels must be at least 2"),
        (lambda: InversionStage(n_iter=0), "n_iter must be a positive int"),
    ],
)
def test_a_bad_mask_or_perturbation_is_a_clear_error_when_built(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("mask", [UpsampledMask(), SigmoidMask(), SmoothMaxMask()], ids=repr)
def test_every_grid_mask_implements_the_one_interface(mask):
    assert isinstance(mask, CellMask)
    for method in (
        "init",
        "render",
        "project_",
        "grids",
        "mean",
        "total",
        "low_resolution",
    ):
        assert callable(getattr(mask, method))
    assert {name for name in dir(Mask) if not name.startswith("_")} <= set(dir(mask))


@given(
    sides=st.lists(st.integers(1, 40), min_size=1, max_size=3),
    batch=st.integers(1, 3),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_a_grid_mask_renders_in_the_unit_interval_at_the_inputs_shape(sides, batch, dtype):
    inputs = [torch.zeros(batch, 2, *sides, dtype=dtype)]
    rows = torch.arange(batch)
    for mask in (UpsampledMask(factor=4, smooth_sigma=1.0), SigmoidMask(block=3)):
        params = mask.init(inputs, torch.Generator().manual_seed(0))
        (rendered,) = mask.render(params, inputs, rows, torch.Generator().manual_seed(1))
        assert rendered.shape == (batch, 1, *sides) and rendered.dtype == dtype
        assert rendered.min() >= 0 and rendered.max() <= 1


def test_feature_groups_are_a_mask_like_the_grids():
    from captum_masks._engine.layout import MaskLayout
    from captum_masks.masks.groups import mask_over_inputs

    rows = [torch.randn(2, 5)]
    grouped = mask_over_inputs(UpsampledMask(), None, rows, MaskLayout(None), "test")
    assert isinstance(grouped, GroupedMask)
    (params,) = grouped.init(rows, torch.Generator())
    assert params.shape == (2, 5) and grouped.grids([params]) == []
    (rendered,) = grouped.render([params], rows, torch.arange(2))
    assert torch.equal(rendered, torch.full((2, 5), UpsampledMask().init_value))
    images = [torch.randn(2, 3, 8, 8)]
    assert mask_over_inputs(UpsampledMask(), None, images, MaskLayout(None), "test") is not None


def test_the_step_index_reaches_the_objective():
    from captum_masks._engine.loop import ExampleRows, MaskProblem, optimize_masks

    seen = []

    def objective(params, rows, step):
        seen.append(step)
        return params[0].square().sum(1), params[0].new_ones(len(rows.indices))

    x = torch.zeros(2, 3)
    rows = ExampleRows([x], [x], torch.zeros(2, 1, dtype=torch.long), None, torch.arange(2))
    settings = Optimization(n_iter=4, lr=0.1).over(MeaningfulPerturbation.default_optimization)
    optimize_masks(
        lambda batch: MaskProblem([torch.ones(2, 3)], objective, rows),
        2,
        settings,
        "test",
        False,
    )
    assert seen == [0, 1, 2, 3]


def test_explain_dataset_refuses_an_old_flat_setting_before_it_writes_anything(
    tmp_path, tiny_model
):
    data = [torch.zeros(3, 8, 8)] * 2
    with pytest.raises(TypeError, match=r"optimization=Optimization\(n_iter=\.\.\.\)"):
        captum_masks.explain_dataset(
            MeaningfulPerturbation(tiny_model),
            data,
            tmp_path / "run",
            attribute_kwargs={"n_iter": 3},
        )
    assert not (tmp_path / "run").exists()


class TokenModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(10, 4)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, ids):
        return self.head(self.embedding(ids).mean(dim=1))


@pytest.mark.parametrize(
    "cls", [captum_masks.LayerMeaningfulPerturbation, captum_masks.LayerNeuroMask]
)
def test_a_layer_method_passes_an_old_flat_setting_on_to_the_same_error(cls):
    model = TokenModel().eval()
    explainer = cls(model, model.embedding)
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    with pytest.raises(TypeError, match=r"optimization=Optimization\(n_iter=\.\.\.\)"):
        explainer.attribute(ids, target=0, n_iter=3)
    quick = explainer.attribute(ids, target=0, optimization=Optimization(n_iter=3))
    assert quick.shape == (2, 3, 4)
