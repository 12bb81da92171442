"""Transformers as users build them with timm and Hugging Face transformers, from a config (no
pretrained weights offline): model outputs read through their logits, a vision transformer's
patch grid, token layers and their padding."""

import warnings

import pytest
import torch
from conftest import TinyCNN, assert_same_state, model_state
from hypothesis import given, settings
from hypothesis import strategies as st

from captum_masks import (
    RISE,
    AmortizedExplainer,
    Blur,
    ExtremalPerturbation,
    GuidedFeatureInversion,
    LayerMeaningfulPerturbation,
    LayerNeuroMask,
    MeaningfulPerturbation,
    NeuroMaskAttr,
    Optimization,
)
from captum_masks._engine.hooks import image_feature_maps
from captum_masks._engine.model_structure import padding_token_of, patch_size_of

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

QUICK = Optimization(n_iter=3)


def timm_vit(image_side: int = 32, patch: int = 8, classes: int = 3):
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(
        img_size=image_side,
        patch_size=patch,
        num_classes=classes,
        embed_dim=16,
        depth=1,
        num_heads=2,
        mlp_ratio=1.0,
    )
    return model.eval()


def hugging_face_vit():
    torch.manual_seed(0)
    config = transformers.ViTConfig.from_dict(
        {
            "image_size": 32,
            "patch_size": 8,
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 16,
            "num_labels": 3,
        }
    )
    return transformers.ViTForImageClassification(config).eval()


def hugging_face_bert(pad_token_id: int = 0):
    torch.manual_seed(0)
    config = transformers.BertConfig.from_dict(
        {
            "vocab_size": 30,
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 16,
            "max_position_embeddings": 12,
            "num_labels": 2,
            "pad_token_id": pad_token_id,
        }
    )
    return transformers.BertForSequenceClassification(config).eval()


def padded_ids():
    """Three sentences of 10 token slots, the first two padded (id 0) after 6 and 8 tokens."""
    ids = torch.randint(1, 30, (3, 10), generator=torch.Generator().manual_seed(1))
    attention_mask = torch.ones_like(ids)
    attention_mask[0, 6:] = 0
    attention_mask[1, 8:] = 0
    return ids.masked_fill(attention_mask == 0, 0), attention_mask


# ------------------------------------------------------------------------ what a model says
def test_the_patch_side_is_read_from_timm_and_hugging_face_models_and_nothing_else():
    vit = timm_vit(patch=4)
    assert patch_size_of(vit) == 4
    assert patch_size_of(lambda x: vit(x)) == 4  # a function calling the model
    assert patch_size_of(hugging_face_vit()) == 8
    assert patch_size_of(TinyCNN()) is None
    assert patch_size_of(hugging_face_bert()) is None


def test_the_padding_token_is_read_from_a_hugging_face_config():
    assert padding_token_of(hugging_face_bert(pad_token_id=3)) == 3
    assert padding_token_of(timm_vit()) is None


# ------------------------------------------------------------------------ vision transformers
@pytest.mark.parametrize(
    "cls", [MeaningfulPerturbation, NeuroMaskAttr, ExtremalPerturbation, RISE]
)
def test_a_hugging_face_vit_is_explained_without_a_wrapper_and_left_as_found(cls):
    model = hugging_face_vit()
    images = torch.rand(2, 3, 32, 32)
    before = model_state(model)
    rng = torch.get_rng_state()
    settings_ = {"n_samples": 8} if cls is RISE else {"optimization": QUICK}
    attribution = cls(model).attribute(images, target=[0, 2], **settings_)
    assert attribution.shape == images.shape and torch.isfinite(attribution).all()
    assert_same_state(before, model_state(model))
    assert torch.equal(torch.get_rng_state(), rng)


@settings(max_examples=8, deadline=None)
@given(patch=st.sampled_from([2, 4, 8]), cells=st.integers(2, 4), seed=st.integers(0, 5))
def test_neuromask_gives_a_vision_transformer_one_weight_per_patch(patch, cells, seed):
    side = patch * cells
    model = timm_vit(side, patch)
    images = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(seed))
    attribution = NeuroMaskAttr(model).attribute(images, target=1, optimization=QUICK)[0, 0]
    blocks = attribution.unfold(0, patch, patch).unfold(1, patch, patch)  # (cells, cells, p, p)
    corner = blocks[..., :1, :1]
    assert torch.equal(blocks, corner.expand_as(blocks))  # constant on every patch
    assert not torch.equal(corner.flatten(), corner.flatten()[:1].expand(cells * cells))


def test_meaningful_perturbation_blurs_a_vision_transformer_by_one_patch():
    model = timm_vit(32, 8)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    explainer = MeaningfulPerturbation(model)

    def scores(**perturbation):  # the model's scores on the perturbed inputs at every step
        quick = {"optimization": Optimization(n_iter=4), "target": 1, "return_history": True}
        return explainer.attribute(images, **quick, **perturbation)[1].probability

    default = scores()
    torch.testing.assert_close(default, scores(perturbation=Blur(sigma=8.0)), atol=0, rtol=0)
    assert torch.equal(default, scores(perturbation=Blur()))  # σ left at None: the same rule
    # a CNN's default, the paper's 10 px at 224 px, is 1.4 px at 32
    assert not torch.equal(default, scores(perturbation=Blur(sigma=Blur().sigma_for((32, 32)))))


@settings(max_examples=25, deadline=None)
@given(side=st.integers(1, 20), leading=st.integers(0, 8), known=st.booleans())
def test_a_token_layer_is_laid_on_its_patch_grid_without_its_leading_tokens(side, leading, known):
    tokens = torch.randn(2, leading + side * side, 3)
    maps = image_feature_maps(tokens, "layer", 2, (8 * side, 8 * side), 8 if known else None)
    assert maps.shape == (2, 3, side, side)
    # the token after the leading ones is the grid's top-left patch, the last the bottom-right
    assert torch.equal(maps[:, :, 0, 0], tokens[:, leading])
    assert torch.equal(maps[:, :, -1, -1], tokens[:, -1])


@pytest.mark.parametrize("source", ["timm", "Hugging Face"])
def test_guided_feature_inversion_runs_on_a_transformer_block(source):
    if source == "timm":
        model = timm_vit(32, 8)
        block = model.blocks[-1]
    else:
        model = hugging_face_vit()
        block = model.vit.layers[-1]
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    explainer = GuidedFeatureInversion(model, block)
    before = model_state(model)
    attribution, history = explainer.attribute(
        images, target=[0, 1, 2], optimization=QUICK, return_history=True
    )
    assert attribution.shape == images.shape
    assert history.low_resolution[0].values.shape == (3, 1, 4, 4)  # the 4 × 4 patch grid
    alone = explainer.attribute(images[1:2], target=1, optimization=QUICK)
    torch.testing.assert_close(attribution[1:2], alone, atol=1e-5, rtol=0)
    assert_same_state(before, model_state(model))


def test_a_layer_that_is_neither_maps_nor_tokens_is_a_clear_error():
    model = timm_vit(32, 8)
    with pytest.raises(ValueError, match="transformer's .N, T, D. tokens"):
        GuidedFeatureInversion(model, model.head).attribute(torch.rand(1, 3, 32, 32))


# ------------------------------------------------------------------------ text transformers
@pytest.mark.parametrize("layer_of", ["get_input_embeddings", "embeddings block"])
@pytest.mark.parametrize("cls", [LayerMeaningfulPerturbation, LayerNeuroMask])
def test_a_bert_model_is_masked_per_token_and_its_padding_gets_exactly_zero(cls, layer_of):
    model = hugging_face_bert()
    if layer_of == "get_input_embeddings":
        layer = model.get_input_embeddings()
    else:
        layer = model.bert.embeddings
    ids, attention_mask = padded_ids()
    before = model_state(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a token layer's layout is not guessed: no warning
        attribution = cls(model, layer).attribute(
            ids, target=1, additional_forward_args=(attention_mask,), optimization=QUICK
        )
    assert attribution.shape == (3, 10, 16)
    # one value per token, spread over its embedding
    assert torch.equal(attribution, attribution[..., :1].expand_as(attribution))
    assert (attribution[attention_mask == 0] == 0).all()
    assert (attribution[attention_mask == 1] > 0).any()
    assert_same_state(before, model_state(model))


def test_an_explicit_padding_mask_replaces_the_configs_padding_token():
    model = hugging_face_bert()
    ids, attention_mask = padded_ids()
    explainer = LayerNeuroMask(model, model.get_input_embeddings())
    first_token = torch.zeros_like(ids, dtype=torch.bool)
    first_token[:, 0] = True
    attribution = explainer.attribute(
        ids,
        target=1,
        additional_forward_args=(attention_mask,),
        padding_mask=first_token,
        optimization=QUICK,
    )
    assert (attribution[:, 0] == 0).all()
    assert (attribution[0, 6:] > 0).all()  # the config's padding is not padding any more


@pytest.mark.parametrize("layer_of", ["get_input_embeddings", "embeddings block"])
def test_the_explainer_masks_a_bert_models_tokens_with_its_attention_mask(layer_of):
    model = hugging_face_bert()
    layer = (
        model.get_input_embeddings()
        if layer_of == "get_input_embeddings"
        else model.bert.embeddings
    )
    ids, attention_mask = padded_ids()
    arguments = []  # what the classifier is called with, every time
    hook = model.register_forward_pre_hook(lambda module, args: arguments.append(len(args)))
    before = model_state(model)
    explainer = AmortizedExplainer(model, 2, layer=layer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a token layer's layout is not guessed: no warning
        explainer.fit(
            [(ids, torch.tensor([0, 1, 1]), attention_mask)], epochs=1, show_progress=False
        )
        attribution = explainer.attribute(ids, target=1, additional_forward_args=(attention_mask,))
        every_class = explainer.explain_all(ids, additional_forward_args=(attention_mask,))
    assert_same_state(before, model_state(model))
    hook.remove()
    assert set(arguments) == {2}  # the ids and the attention mask
    assert attribution.shape == (3, 10, 16)
    assert torch.equal(attribution, attribution[..., :1].expand_as(attribution))
    assert (attribution[attention_mask == 0] == 0).all()
    assert (attribution[attention_mask == 1] > 0).all()
    assert every_class.shape == (3, 2, 10)
    assert torch.equal(every_class[:, 1], attribution[..., 0])
    assert (every_class.transpose(1, 2)[attention_mask == 0] == 0).all()
