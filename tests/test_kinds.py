"""The input-kinds suite: its tasks carry their evidence where they say, its models learn it, and
its scores mean what they say."""

import pytest
import torch

from captum_masks import NeuroMaskAttr
from captum_masks.bench.kind_tasks import KINDS, kind_task
from captum_masks.bench.kinds import (
    format_kinds,
    kinds_report,
    points_at,
    relevance_mass,
)
from captum_masks.bench.transformer_tasks import DECIDING_TOKEN, PADDING_TOKEN, SQUARE_COLOURS


def test_pointing_takes_the_maximum_and_the_middle_of_a_saturated_blob():
    evidence = torch.zeros(3, 8, 8, dtype=torch.bool)
    evidence[:, 2:5, 2:5] = True
    maps = torch.zeros(3, 8, 8)
    maps[0, 3, 3] = 1.0  # peak on the evidence
    maps[1, 7, 7] = 1.0  # peak off it
    maps[2, 1:6, 1:6] = 1.0  # a saturated blob around it: its middle is on it
    assert points_at(maps, evidence).tolist() == [1.0, 0.0, 1.0]
    # with a tolerance of 2 positions: a peak 2 diagonally off (2.8) misses, 2 straight off hits
    near = torch.zeros(2, 8, 8)
    near[0, 6, 6] = 1.0
    near[1, 6, 3] = 1.0
    assert points_at(near, evidence[:2]).tolist() == [0.0, 0.0]
    assert points_at(near, evidence[:2], tolerance=2).tolist() == [0.0, 1.0]


def test_relevance_mass_is_the_positive_share_on_the_evidence():
    evidence = torch.tensor([[True, False, False, False]] * 3)
    maps = torch.tensor([[3.0, 1.0, -5.0, 0.0], [0.0, 0.0, 0.0, 0.0], [-1.0, 2.0, 0.0, 0.0]])
    torch.testing.assert_close(relevance_mass(maps, evidence), torch.tensor([0.75, 0.0, 0.0]))


@pytest.mark.parametrize("kind", ["rows", "sequences", "tokens"])
def test_a_task_is_learnt_and_its_evidence_is_where_the_data_put_it(kind):
    task = kind_task(kind, n=8, split="calibration")
    assert task.accuracy >= 0.95
    assert len(task.inputs) == len(task.targets) == len(task.evidence) == 8
    assert task.evidence.flatten(1).any(dim=1).all()
    again = kind_task(kind, n=8, split="calibration")
    assert torch.equal(task.inputs, again.inputs)  # the split is fixed by its seeds
    held_out = kind_task(kind, n=8, split="held-out")
    assert not torch.equal(task.inputs, held_out.inputs)
    if kind == "tokens":
        assert task.layer is task.model.embedding and (task.inputs[task.evidence] == 7).all()
    if kind == "sequences":  # the bump sits on channel 0 where the evidence is
        assert (
            task.inputs[:, 0][task.evidence].mean() > task.inputs[:, 0][~task.evidence].mean() + 1
        )


@pytest.mark.parametrize("kind", ["vit-32", "text"])
def test_a_transformer_task_is_learnt_and_its_evidence_is_where_the_data_put_it(kind):
    pytest.importorskip("timm")
    pytest.importorskip("transformers")
    task = kind_task(kind, n=8, split="held-out")
    assert task.accuracy >= 0.99
    if kind == "vit-32":  # one 8 × 8 square on the patch grid, of the class's colour
        assert (task.evidence.sum(dim=(1, 2)) == 64).all()
        corners = torch.nonzero(task.evidence[:, ::8, ::8])
        assert len(corners) == 8
        colours = torch.tensor(SQUARE_COLOURS)[task.targets]
        squares = task.inputs.permute(0, 2, 3, 1)[task.evidence].view(8, 64, 3)
        assert torch.equal(squares, colours[:, None].expand(8, 64, 3))
    else:  # the deciding token, never on padding
        (attention_mask,) = task.additional_forward_args
        assert (task.inputs[task.evidence] == DECIDING_TOKEN).all()
        assert (attention_mask[task.evidence] == 1).all()
        assert (task.inputs[attention_mask == 0] == PADDING_TOKEN).all()
        assert task.layer is task.model.get_input_embeddings()


def test_neuromask_finds_the_square_a_vision_transformer_decides_by_at_default_settings():
    pytest.importorskip("timm")
    task = kind_task("vit-32", n=8, split="calibration")
    attribution = NeuroMaskAttr(task.model).attribute(task.inputs, target=task.targets)
    assert float(points_at(attribution.sum(dim=1), task.evidence).mean()) >= 7 / 8


def test_report_scores_every_applicable_method_and_marks_the_rest():
    report = kinds_report(("rows", "tokens"), n=4, split="calibration")
    rows, tokens = report["rows"]["methods"], report["tokens"]["methods"]
    assert {"FeatureAblation", "ShapleyValueSampling", "RISE"} <= set(rows)
    assert set(tokens) == {
        "MeaningfulPerturbation",
        "NeuroMaskAttr",
        "AmortizedExplainer",  # fitted on the data the token model trained on
        "IntegratedGradients",
    }
    for scores in (*rows.values(), *tokens.values()):
        assert scores["pointing"].shape == scores["relevance_mass"].shape == (4,)
        assert (
            0
            <= float(scores["relevance_mass"].min())
            <= float(scores["relevance_mass"].max())
            <= 1
        )
    table = format_kinds(report)
    assert table.splitlines()[0] == "| method | rows: relevance mass | tokens: top token |"
    assert "| RISE | " in table and table.split("| RISE | ")[1].split("\n")[0].endswith("| – |")


def test_unknown_kind_or_split_is_a_clear_error():
    with pytest.raises(ValueError, match="kind must be one of"):
        kind_task("graphs")
    with pytest.raises(ValueError, match="split must be one of"):
        kind_task(KINDS[0], split="test")


def test_overrides_reach_the_methods_that_take_them_and_an_unknown_one_is_refused():
    # λ₁ = 0 deletes for free: the deletion map covers more of the row than at the default
    default, free = (
        kinds_report(("rows",), n=3, split="calibration", overrides=overrides)["rows"]["methods"]
        for overrides in ({}, {"l1_weight": 0.0})
    )
    assert free["NeuroMaskAttr"]["relevance_mass"].equal(
        default["NeuroMaskAttr"]["relevance_mass"]
    )
    assert not free["MeaningfulPerturbation"]["relevance_mass"].equal(
        default["MeaningfulPerturbation"]["relevance_mass"]
    )
    with pytest.raises(ValueError, match="nosuch"):
        kinds_report(("rows",), n=1, split="calibration", overrides={"nosuch": 1})
