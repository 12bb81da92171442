"""Every kind of input Captum takes: rows, sequences, images, volumes, tuples, feature_mask
groups and token ids through a layer, with ground truth known by construction."""

import inspect
import operator
import warnings

import pytest
import torch
from captum.attr import NoiseTunnel
from captum.testing.attr.helpers.test_config import config as captum_config
from conftest import assert_same_state, model_state
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from torch import nn

from captum_masks import (
    AmortizedExplainer,
    LayerMeaningfulPerturbation,
    LayerNeuroMask,
    MeaningfulPerturbation,
    NeuroMaskAttr,
    Optimization,
)

METHODS = [MeaningfulPerturbation, NeuroMaskAttr]
LAYER_METHODS = [LayerMeaningfulPerturbation, LayerNeuroMask]


class UsesSomeFeatures(nn.Module):
    """A confident 3-class classifier of (N, 12) rows that reads features 1, 4 and 7 only."""

    USED = [1, 4, 7]

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 3))
        with torch.no_grad():
            for parameter in self.net.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator))

    def forward(self, x):
        return 2 * self.net(x[:, self.USED])


class EvidenceToken(nn.Module):
    """Token ids (N, L) -> 2 logits; class 1 says whether token 7 occurs. Its embedding gives
    token 7 (and only it) a large first coordinate, and the head reads the largest one."""

    TOKEN = 7

    def __init__(self, vocabulary: int = 20, width: int = 8):
        super().__init__()
        self.embedding = nn.Embedding(vocabulary, width)
        with torch.no_grad():
            self.embedding.weight.copy_(
                0.1 * torch.randn(vocabulary, width, generator=torch.Generator().manual_seed(1))
            )
            self.embedding.weight[self.TOKEN, 0] = 3.0

    def forward(self, ids):
        evidence = self.embedding(ids)[..., 0].amax(dim=1) - 1.5
        return torch.stack([-2 * evidence, 2 * evidence], dim=1)


class SubCube(nn.Module):
    """(N, 1, 32, 32, 32) volumes -> 2 logits: class 1 is the brightness of the cube [16:24]³."""

    def forward(self, x):
        evidence = x[:, :, 16:24, 16:24, 16:24].mean(dim=(1, 2, 3, 4)) - 0.5
        return torch.stack([-4 * evidence, 4 * evidence], dim=1)


def token_batch(count: int, length: int = 10):
    generator = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 20, (count, length), generator=generator)
    ids[ids == EvidenceToken.TOKEN] = 3
    where = torch.randint(0, length, (count,), generator=generator)
    ids[torch.arange(count), where] = EvidenceToken.TOKEN
    return ids, where


# ---------------------------------------------------------------- ground truth by construction
@pytest.mark.parametrize("method", METHODS)
def test_a_tabular_model_is_explained_by_the_features_it_reads(method):
    model = UsesSomeFeatures().eval()
    rows = torch.randn(40, 12, generator=torch.Generator().manual_seed(3))
    attribution = method(model).attribute(rows)
    assert attribution.shape == rows.shape
    # deleted features become 0 (the default baseline): where the all-zero row already gets
    # the predicted class, no feature is needed to keep or to destroy it
    explainable = model(rows).argmax(dim=1) != model(torch.zeros(1, 12)).argmax(dim=1)
    assert explainable.sum() >= 10
    kept = attribution[explainable]
    # an empty map points at nothing: it counts as mass 0
    mass = kept[:, UsesSomeFeatures.USED].sum(dim=1) / kept.sum(dim=1).clamp_min(1e-12)
    assert mass.mean() >= 0.9


@pytest.mark.parametrize("method", LAYER_METHODS)
def test_a_token_model_is_explained_by_its_evidence_token(method):
    model = EvidenceToken().eval()
    ids, where = token_batch(40)
    attribution = method(model, model.embedding).attribute(ids, target=1)
    assert attribution.shape == (40, 10, 8)  # the embedding's output, as LayerIntegratedGradients
    per_token = attribution[..., 0]
    # every embedding dimension of a token has its token's value
    assert torch.equal(attribution, per_token.unsqueeze(-1).expand_as(attribution))
    assert (per_token.argmax(dim=1) == where).float().mean() >= 0.95


class StepToken(EvidenceToken):
    """Class 1 when token 7's first embedding coordinate is above half its own, as a step: the
    score is flat on both sides, as a saturated text transformer's is in a token's embedding,
    so no gradient anywhere says which token matters."""

    def forward(self, ids):
        present = (self.embedding(ids)[..., 0].amax(dim=1) > 1.5).float()
        return torch.stack([-4 * present + 2, 4 * present - 2], dim=1)


@pytest.mark.parametrize("method", LAYER_METHODS)
def test_the_token_a_step_model_decides_by_is_found_in_long_sentences(method):
    model = StepToken().eval()
    # 24 tokens: every token the start leaves out costs the sparseness or area term, and
    # together they outweigh the target's score when the mask is empty
    ids, where = token_batch(12, length=24)
    explainer = method(model, model.embedding)
    per_token = explainer.attribute(ids, target=1)[..., 0]
    assert (per_token.argmax(dim=1) == where).all()
    # the lowest-loss mask: as much of the token deleted (or kept) as the step needs, and the
    # others (almost) left alone, though past the step the regulariser pulls the token back
    others = torch.ones_like(per_token, dtype=torch.bool)
    others[torch.arange(12), where] = False
    assert (per_token[others] < 0.01).all() and (per_token[~others] > 0.5).all()
    one_by_one = torch.cat([explainer.attribute(ids[i : i + 1], target=1) for i in range(3)])
    assert torch.equal(explainer.attribute(ids[:3], target=1), one_by_one)


#: SubCube averages over its cube, so each of the cube's 512 voxels carries a 512th of the
#: evidence; NeuroMask's default pull per cell is sized for models whose evidence sits in a few
#: cells (max-pooled CNNs, photos' objects at 4 × 4 blocks) and outweighs that
VOLUME_SETTINGS = {MeaningfulPerturbation: {}, NeuroMaskAttr: {"sparse_weight": 1e-4}}


@pytest.mark.parametrize("method", METHODS)
def test_a_volume_model_is_pointed_at_its_evidence_cube(method):
    volumes = 0.2 * torch.rand(10, 1, 32, 32, 32, generator=torch.Generator().manual_seed(4))
    volumes[:, :, 16:24, 16:24, 16:24] += 1.0
    attribution = method(SubCube().eval()).attribute(volumes, target=1, **VOLUME_SETTINGS[method])
    assert attribution.shape == volumes.shape
    peaks = [divmod_3d(a[0].argmax().item()) for a in attribution]
    inside = [all(16 <= c < 24 for c in peak) for peak in peaks]
    assert sum(inside) / len(inside) >= 0.9


def divmod_3d(flat: int, side: int = 32) -> tuple[int, int, int]:
    depth, rest = divmod(flat, side * side)
    return (depth, *divmod(rest, side))


@pytest.mark.parametrize("method", METHODS)
def test_feature_mask_groups_share_one_value_and_the_evidence_group_ranks_first(method):
    # four 6 x 6 quadrants of a 12 x 12 image; the spot detector's evidence is in quadrant 3
    quadrants = (torch.arange(12) // 6).view(-1, 1) * 2 + (torch.arange(12) // 6).view(1, -1)
    feature_mask = quadrants.view(1, 1, 12, 12)

    class Quadrant(nn.Module):
        def forward(self, x):
            spot = x[:, :, 7:11, 7:11].mean(dim=(1, 2, 3))
            return torch.stack([-3 * spot, 3 * spot], dim=1)

    images = 0.2 * torch.rand(3, 2, 12, 12, generator=torch.Generator().manual_seed(5))
    images[:, :, 7:11, 7:11] += 1.0
    attribution = method(Quadrant().eval()).attribute(images, target=1, feature_mask=feature_mask)
    for group in range(4):
        values = attribution.masked_select((feature_mask == group).expand_as(images)).view(3, -1)
        assert torch.equal(values, values[:, :1].expand_as(values))
    per_group = torch.stack(
        [attribution[:, 0][:, quadrants == group][:, 0] for group in range(4)], dim=1
    )
    assert (per_group.argmax(dim=1) == 3).all()


@pytest.mark.parametrize("method", METHODS)
def test_per_example_groupings_give_one_by_one_results(method):
    model = UsesSomeFeatures().eval()
    rows = torch.randn(3, 12, generator=torch.Generator().manual_seed(6))
    groupings = torch.stack([torch.arange(12) // 2, torch.arange(12) % 3, torch.arange(12)])
    batch = method(model).attribute(rows, target=0, feature_mask=groupings)
    alone = torch.cat(
        [
            method(model).attribute(rows[i : i + 1], target=0, feature_mask=groupings[i : i + 1])
            for i in range(3)
        ]
    )
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- every rank, as properties
class AnyRank(nn.Module):
    """A fixed random linear read-out of any input: (N, *shape) -> (N, 3)."""

    def __init__(self, shape):
        super().__init__()
        weight = torch.randn(3, int(torch.tensor(shape).prod()), generator=torch.Generator())
        self.register_buffer("weight", weight)

    def forward(self, x):
        flat = x.reshape(x.shape[0], -1)
        return 3 * flat @ self.weight.to(x.dtype).T / flat.shape[1] ** 0.5


SHAPES = st.sampled_from([(), (5,), (2, 7), (3, 4, 5), (1, 3, 4, 4)])


@hypothesis_settings(max_examples=12, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(METHODS),
    shape=SHAPES,
    rows=st.lists(st.integers(0, 3), min_size=1, max_size=3),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float16]),
)
def test_every_rank_gives_an_input_shaped_mask_that_depends_only_on_its_example(
    method, shape, rows, dtype
):
    torch.manual_seed(0)
    model = AnyRank(shape).to(dtype).eval()
    pool = torch.randn(4, *shape, generator=torch.Generator().manual_seed(7)).to(dtype)
    inputs = pool[rows]
    targets = [row % 3 for row in rows]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 3-D inputs without channels_last are warned about
        batch = method(model).attribute(
            inputs, target=targets, optimization=Optimization(n_iter=6)
        )
        alone = torch.cat(
            [
                method(model).attribute(
                    inputs[i : i + 1], target=t, optimization=Optimization(n_iter=6)
                )
                for i, t in enumerate(targets)
            ]
        )
    assert batch.shape == inputs.shape and batch.dtype == dtype
    assert torch.isfinite(batch).all() and batch.min() >= 0 and batch.max() <= 1
    atol = 1e-5 if dtype != torch.float16 else 1e-3
    torch.testing.assert_close(batch.float(), alone.float(), atol=atol, rtol=0)


class NormalisedAnyRank(AnyRank):
    """AnyRank with a batch norm in front: in training mode every call updates its buffers."""

    def __init__(self, shape):
        super().__init__(shape)
        self.norm = nn.BatchNorm1d(int(torch.tensor(shape).prod()))

    def forward(self, x):
        flat = self.norm(x.reshape(x.shape[0], -1))
        return super().forward(flat)


#: two groupings of an 8 × 8 image: four horizontal bands, and four interleaved columns
PER_EXAMPLE_GROUPS = torch.stack([torch.arange(64) // 16, torch.arange(64) % 4]).view(2, 1, 8, 8)
INPUT_KINDS = {
    "rows": ((12,), {}),
    "sequence": ((2, 16), {"channels_last": False}),
    "volume": ((1, 6, 6, 6), {}),
    "rows, grouped": ((12,), {"feature_mask": torch.arange(12).view(1, 12) // 3}),
    "image, per-example groups": (
        (1, 8, 8),
        {"feature_mask": PER_EXAMPLE_GROUPS},
    ),
}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", list(INPUT_KINDS))
def test_the_captum_contract_holds_for_every_input_kind(method, kind):
    shape, options = INPUT_KINDS[kind]
    inputs = torch.randn(2, *shape, generator=torch.Generator().manual_seed(10))
    model = NormalisedAnyRank(shape).train()  # buffers that a forward pass would change
    before = model_state(model)
    explainer = method(model)
    with pytest.warns(UserWarning, match="training mode"):
        single = explainer.attribute(
            inputs, **options, target=[0, 2], optimization=Optimization(n_iter=5)
        )
    assert_same_state(before, model_state(model))
    assert isinstance(single, torch.Tensor) and single.shape == inputs.shape
    model.eval()
    single = explainer.attribute(
        inputs, **options, target=[0, 2], optimization=Optimization(n_iter=5)
    )
    for target in (torch.tensor([0, 2]), [0, 2]):
        assert torch.equal(
            explainer.attribute(
                inputs, **options, target=target, optimization=Optimization(n_iter=5)
            ),
            single,
        )
    tuple_options = {k: (v,) if k == "feature_mask" else v for k, v in options.items()}
    as_tuple = explainer.attribute(
        (inputs,), **tuple_options, target=[0, 2], optimization=Optimization(n_iter=5)
    )
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], single)
    double = method(model.double()).attribute(
        inputs.double(), **options, target=[0, 2], optimization=Optimization(n_iter=5)
    )
    assert double.dtype == torch.float64 and double.shape == inputs.shape
    tunnel = NoiseTunnel(explainer).attribute(
        inputs.double(),
        **options,
        target=[0, 2],
        nt_samples=2,
        stdevs=0.0,
        optimization=Optimization(n_iter=5),
    )
    torch.testing.assert_close(tunnel, double, atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_three_dimensional_inputs_without_a_layout_are_warned_about(method):
    embeddings = torch.randn(2, 5, 16)  # (N, L, D) or (N, C, L): the shape cannot tell

    class Pool(nn.Module):
        def forward(self, x):
            return x.mean(dim=1)[:, :3]

    with pytest.warns(UserWarning, match="channels_last=True"):
        method(Pool()).attribute(embeddings, target=0, optimization=Optimization(n_iter=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for channels_last in (True, False):
            method(Pool()).attribute(
                embeddings,
                target=0,
                channels_last=channels_last,
                optimization=Optimization(n_iter=2),
            )


# ---------------------------------------------------------------- Layer classes
@pytest.mark.parametrize("method", LAYER_METHODS)
def test_layer_methods_leave_the_model_as_found_also_when_it_raises(method):
    model = EvidenceToken()
    ids, _ = token_batch(3)
    before = model_state(model)
    method(model, model.embedding).attribute(ids, target=1, optimization=Optimization(n_iter=3))
    assert_same_state(before, model_state(model))

    calls = {"n": 0}

    def fail_on_third(module, args, output):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")

    handle = model.head_hook = model.embedding.register_forward_hook(fail_on_third)
    before = model_state(model)
    with pytest.raises(RuntimeError, match="boom"):
        method(model, model.embedding).attribute(
            ids, target=1, optimization=Optimization(n_iter=3)
        )
    assert_same_state(before, model_state(model))
    handle.remove()


@pytest.mark.parametrize("method", LAYER_METHODS)
def test_layer_methods_take_baselines_groups_history_and_reject_tuple_outputs(method):
    model = EvidenceToken().eval()
    ids, where = token_batch(4)
    pad = model.embedding.weight[0].detach()
    words = (torch.arange(10) // 2).view(1, 10, 1)  # pairs of tokens share a mask value
    attribution, history = method(model, model.embedding).attribute(
        ids, target=1, layer_baselines=pad, layer_mask=words, return_history=True
    )
    assert torch.equal(attribution[:, 0::2], attribution[:, 1::2])
    assert (attribution[..., 0].argmax(dim=1) // 2 == where // 2).all()
    assert history.loss.shape[1] == 4

    class TupleLayer(nn.Module):
        def forward(self, x):
            return x, x

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.pair = TupleLayer()

        def forward(self, x):
            return self.pair(x)[0][:, :2]

    wrapper = Wrapper()
    with pytest.raises(ValueError, match="must return one tensor"):
        method(wrapper, wrapper.pair).attribute(
            torch.randn(2, 4), target=0, optimization=Optimization(n_iter=2)
        )


@pytest.mark.parametrize("method", LAYER_METHODS)
def test_padding_is_left_out_of_the_mask_even_when_the_model_reads_it(method):
    model = EvidenceToken().eval()
    with torch.no_grad():
        model.embedding.weight[0, 0] = 1.0  # the pad token counts, below the evidence's 3
    ids, where = token_batch(12)
    ids[:, -3:] = 0
    keep = where < 7
    ids, where = ids[keep], where[keep]
    padding = ids == 0
    attribution = method(model, model.embedding).attribute(ids, target=1, padding_mask=padding)
    assert (attribution[padding] == 0).all()
    assert (attribution[..., 0].argmax(dim=1) == where).all()
    with pytest.raises(ValueError, match="padding_mask of shape"):
        method(model, model.embedding).attribute(ids, target=1, padding_mask=padding[:, :4])
    with pytest.raises(TypeError, match="padding_mask must be a bool"):
        method(model, model.embedding).attribute(ids, target=1, padding_mask=padding.long())


@pytest.mark.parametrize("method", LAYER_METHODS)
def test_layer_methods_take_every_target_form_and_follow_the_dtype(method):
    model = EvidenceToken().eval()
    ids, _ = token_batch(3)
    explainer = method(model, model.embedding)
    targets = [1, 0, 1]
    batch = explainer.attribute(ids, target=targets, optimization=Optimization(n_iter=5))
    for form in (torch.tensor(targets), targets):
        torch.testing.assert_close(
            explainer.attribute(ids, target=form, optimization=Optimization(n_iter=5)), batch
        )
    alone = torch.cat(
        [
            explainer.attribute(ids[i : i + 1], target=t, optimization=Optimization(n_iter=5))
            for i, t in enumerate(targets)
        ]
    )
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=0)
    double = method(model.double(), model.embedding).attribute(
        ids, target=1, optimization=Optimization(n_iter=5)
    )
    assert double.dtype == torch.float64


@pytest.mark.parametrize("method", METHODS)
def test_one_id_across_the_tensors_of_a_tuple_is_one_group(method):
    class TwoInputs(nn.Module):
        def forward(self, first, second):
            return torch.stack([first.sum(dim=1), 3 * second[:, 0] + first[:, 0]], dim=1)

    first = torch.randn(2, 4, generator=torch.Generator().manual_seed(8))
    second = torch.randn(2, 3, generator=torch.Generator().manual_seed(9))
    feature_mask = (torch.tensor([[0, 1, 2, 3]]), torch.tensor([[0, 4, 5]]))
    attribution = method(TwoInputs()).attribute(
        (first, second), target=1, feature_mask=feature_mask, optimization=Optimization(n_iter=20)
    )
    assert isinstance(attribution, tuple) and [a.shape for a in attribution] == [(2, 4), (2, 3)]
    torch.testing.assert_close(attribution[0][:, 0], attribution[1][:, 0], atol=0, rtol=0)


def labelled_tokens(count: int, seed: int):
    """Sentences of which half hold the evidence token: (ids, labels, evidence position)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 20, (count, 10), generator=generator)
    ids[ids == EvidenceToken.TOKEN] = 3
    where = torch.randint(0, 10, (count,), generator=generator)
    positive = torch.rand(count, generator=generator) < 0.5
    ids[positive, where[positive]] = EvidenceToken.TOKEN
    return ids, positive.long(), where


def test_the_amortized_explainer_learns_the_evidence_token_through_the_embedding(tmp_path):
    model = EvidenceToken().eval()
    ids, labels, _ = labelled_tokens(1024, seed=0)
    batches = [(ids[i : i + 64], labels[i : i + 64]) for i in range(0, len(ids), 64)]
    explainer = AmortizedExplainer(model, num_classes=2, layer=model.embedding)
    explainer.fit(batches, epochs=5, show_progress=False)
    test, test_labels, where = labelled_tokens(200, seed=1)
    positive = test_labels == 1
    attribution = explainer.attribute(test[positive], target=1)
    assert attribution.shape == (int(positive.sum()), 10, 8)  # the embedding's output
    found = attribution[..., 0].argmax(dim=1) == where[positive]
    assert found.float().mean() >= 0.95
    explainer.save(tmp_path / "tokens.pt")
    again = AmortizedExplainer.load(tmp_path / "tokens.pt", model)
    assert again.layer is model.embedding
    torch.testing.assert_close(again.attribute(test[positive], target=1), attribution)


def test_the_amortized_explainer_points_at_a_volume_models_evidence():
    class Cube(nn.Module):
        """(N, 1, 16, 16, 16) -> 2 logits: class 1 is the brightness of the cube [4:8]³."""

        def forward(self, x):
            evidence = x[:, :, 4:8, 4:8, 4:8].mean(dim=(1, 2, 3, 4)) - 0.5
            return torch.stack([-6 * evidence, 6 * evidence], dim=1)

    def volumes(count, seed):
        generator = torch.Generator().manual_seed(seed)
        data = 0.2 * torch.rand(count, 1, 16, 16, 16, generator=generator)
        positive = torch.rand(count, generator=generator) < 0.5
        data[positive, :, 4:8, 4:8, 4:8] += 1.0
        return data, positive.long()

    data, labels = volumes(256, seed=0)
    explainer = AmortizedExplainer(Cube().eval(), num_classes=2)
    explainer.fit(
        [(data[i : i + 32], labels[i : i + 32]) for i in range(0, 256, 32)],
        epochs=3,
        show_progress=False,
    )
    test, test_labels = volumes(50, seed=1)
    attribution = explainer.attribute(test[test_labels == 1], target=1)
    assert attribution.shape == test[test_labels == 1].shape
    peaks = [divmod_3d(a[0].argmax().item(), side=16) for a in attribution]
    assert sum(all(4 <= c < 8 for c in peak) for peak in peaks) / len(peaks) >= 0.9


def test_the_amortized_explainer_takes_layer_or_feature_layer_not_both():
    model = EvidenceToken()
    with pytest.raises(ValueError, match="layer and feature_layer cannot be combined"):
        AmortizedExplainer(model, 2, layer=model.embedding, feature_layer=model.embedding)


def test_integer_inputs_point_at_the_layer_methods():
    model = EvidenceToken()
    ids, _ = token_batch(2)
    with pytest.raises(TypeError, match="LayerMeaningfulPerturbation"):
        MeaningfulPerturbation(model).attribute(ids, target=1)


# ---------------------------------------------------------------- Captum's own test configs
def captum_cases(layer: bool):
    for case in captum_config:
        if "neuron" in case["name"] or ("layer" in case) != layer:
            continue
        yield pytest.param(case, id=case["name"])


def accepted_arguments(case, method):
    names = set(inspect.signature(method.attribute).parameters)
    if case.get("noise_tunnel"):
        names |= set(inspect.signature(NoiseTunnel.attribute).parameters)
    # method-specific options of other Captum methods (perturbations_per_eval, n_samples, ...)
    return {k: v for k, v in case["attribute_args"].items() if k in names}


def check_attribution(attribution, like):
    attributions = attribution if isinstance(attribution, tuple) else (attribution,)
    likes = like if isinstance(like, tuple) else (like,)
    assert isinstance(attribution, tuple) == isinstance(like, tuple)
    for a, x in zip(attributions, likes):
        assert a.shape == x.shape and torch.isfinite(a).all()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", captum_cases(layer=False))
def test_captum_generic_configs(method, case):
    args = {
        "optimization": Optimization(n_iter=4),
        **accepted_arguments(case, method),
    }
    explainer = method(case["model"])
    if case.get("noise_tunnel"):
        explainer = NoiseTunnel(explainer)
    if case.get("baseline_distr") or "dl_shap" in case["name"]:
        baselines = args.get("baselines")
        inputs = args["inputs"]
        first = baselines[0] if isinstance(baselines, tuple) else baselines
        x = inputs[0] if isinstance(inputs, tuple) else inputs
        if first is not None and first.shape[0] not in (1, x.shape[0]):
            # a distribution of baselines (GradientShap, DeepLiftShap): not one per example
            with pytest.raises(ValueError, match="baselines"):
                explainer.attribute(**args)
            return
    check_attribution(explainer.attribute(**args), args["inputs"])


@pytest.mark.parametrize("method", LAYER_METHODS)
@pytest.mark.parametrize("case", captum_cases(layer=True))
def test_captum_layer_configs(method, case):
    model = case["model"]
    layer = operator.attrgetter(case["layer"])(model) if isinstance(case["layer"], str) else None
    if not isinstance(layer, nn.Module):
        pytest.skip("a list of layers: Captum's multi-layer form")
    args = {
        "optimization": Optimization(n_iter=4),
        **accepted_arguments(case, method),
    }
    args = {k: v for k, v in args.items() if k not in ("baselines",)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            attribution = method(model, layer).attribute(**args)
        except ValueError as error:  # a layer that runs twice or returns a tuple says so
            assert "layer" in str(error)
            return
    with torch.no_grad():
        from captum_masks._engine.hooks import run_recording

        inputs = args["inputs"] if isinstance(args["inputs"], tuple) else (args["inputs"],)
        extra = args.get("additional_forward_args") or ()
        extra = extra if isinstance(extra, tuple) else (extra,)
        (output,) = run_recording(lambda: model(*inputs, *extra), [layer])
    assert attribution.shape == output.shape
