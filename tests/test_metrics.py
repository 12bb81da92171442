"""Metrics, each checked against a value computed by hand."""

import itertools
import math

import pytest
import torch
from captum.attr import Saliency
from conftest import TinyCNN
from torch import nn

from captum_masks import metrics


class PixelModel(nn.Module):
    """Two classes on 1 × 2 × 2 images: class 1's logit is w · x, class 0's is 0."""

    def __init__(self, weights):
        super().__init__()
        self.weights = torch.tensor(weights).view(1, 1, 2, 2)

    def forward(self, x):
        score = (x * self.weights).sum(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(score), score], dim=1)


def test_to_heatmap_reductions():
    attr = torch.tensor([[[[1.0, -2.0]], [[3.0, 1.0]]]])  # (1, 2, 1, 2)
    assert metrics.to_heatmap(attr).tolist() == [[[4.0, -1.0]]]
    assert metrics.to_heatmap(attr, absolute=True).tolist() == [[[4.0, 3.0]]]
    assert metrics.to_heatmap((attr[:, :1],)).tolist() == [[[1.0, -2.0]]]
    with pytest.raises(ValueError, match="attributions"):
        metrics.to_heatmap(torch.zeros(2))


def test_deletion_and_insertion_curves_by_hand():
    # logit of class 1 = 2·x00 + 1·x01 + 0·x10 + 0·x11 on an all-ones image, zero substrate
    model = PixelModel([2.0, 1.0, 0.0, 0.0])
    x = torch.ones(1, 1, 2, 2)
    attr = torch.tensor([[[[4.0, 3.0], [2.0, 1.0]]]])  # visit order: x00, x01, x10, x11

    def p(logit):
        return 1 / (1 + math.exp(-logit))

    auc, curve = metrics.deletion_insertion_curve(
        model, x, attr, target=1, n_steps=4, substrate="zero"
    )
    expected = [p(3), p(1), p(0), p(0), p(0)]
    torch.testing.assert_close(curve[0], torch.tensor(expected))
    trapezoid = sum((a + b) / 2 * 0.25 for a, b in itertools.pairwise(expected))
    assert auc.item() == pytest.approx(trapezoid, rel=1e-5)

    auc, curve = metrics.deletion_insertion_curve(
        model, x, attr, target=1, mode="insertion", n_steps=2, substrate="zero"
    )
    torch.testing.assert_close(curve[0], torch.tensor([p(0), p(3), p(3)]))
    assert auc.item() == pytest.approx(((p(0) + p(3)) / 2 + p(3)) * 0.5, rel=1e-5)


def test_deletion_rewards_the_right_ranking():
    model = PixelModel([2.0, 1.0, 0.0, 0.0])
    x = torch.ones(1, 1, 2, 2)
    good = torch.tensor([[[[4.0, 3.0], [2.0, 1.0]]]])
    bad = good.flip(-1).flip(-2)
    good_auc, _ = metrics.deletion_insertion_curve(model, x, good, 1, n_steps=4, substrate="zero")
    bad_auc, _ = metrics.deletion_insertion_curve(model, x, bad, 1, n_steps=4, substrate="zero")
    assert good_auc < bad_auc


def test_pointing_game_with_tolerance():
    heat = torch.zeros(2, 10, 10)
    heat[0, 2, 2] = 1.0  # on the object
    heat[1, 2, 7] = 1.0  # 3 px right of the object's last column
    mask = torch.zeros(2, 10, 10)
    mask[:, 1:4, 1:5] = 1
    assert metrics.pointing_game(heat, mask, tolerance=0).tolist() == [1.0, 0.0]
    assert metrics.pointing_game(heat, mask, tolerance=2).tolist() == [1.0, 0.0]
    assert metrics.pointing_game(heat, mask, tolerance=3).tolist() == [1.0, 1.0]


def test_pointing_game_breaks_ties_at_the_middle_of_the_tied_pixels():
    heat = torch.zeros(1, 1, 10, 10)
    heat[..., 0, 0] = 1.0  # one stray maximum in the corner
    heat[..., 5:8, 5:8] = 1.0  # a saturated blob of nine
    mask = torch.zeros(1, 10, 10)
    mask[:, 5:8, 5:8] = 1  # the centroid of the ten maxima is (5.4, 5.4): in the blob
    assert metrics.pointing_game(heat, mask, tolerance=0).item() == 1.0
    mask = torch.zeros(1, 10, 10)
    mask[:, 0, 0] = 1  # raster order would have picked this one
    assert metrics.pointing_game(heat, mask, tolerance=0).item() == 0.0


def test_pointing_game_smoothing_points_where_relevance_concentrates():
    heat = torch.zeros(1, 1, 32, 32)
    heat[..., 2, 2] = 1.0  # one isolated speckle, the raw maximum
    heat[..., 20:28, 20:28] = 0.9  # the evidence: a block just below it
    mask = torch.zeros(1, 32, 32)
    mask[:, 20:28, 20:28] = 1
    assert metrics.pointing_game(heat, mask, tolerance=0).item() == 0.0
    assert metrics.pointing_game(heat, mask, tolerance=0, sigma=2.0).item() == 1.0
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        metrics.pointing_game(heat, mask, sigma=-1.0)


def test_relevance_mass_and_iou_by_hand():
    heat = torch.tensor([[[3.0, 1.0], [-5.0, 0.0]]])
    mask = torch.tensor([[[1, 0], [1, 0]]])
    # positive relevance: 3 inside, 1 outside; the negative value is ignored
    assert metrics.relevance_mass(heat, mask).item() == pytest.approx(0.75)
    assert metrics.relevance_mass(torch.zeros(1, 2, 2), mask).item() == 0.0
    # normalised: [[1, .75], [0, .625]]; ≥ 0.7 keeps (0,0), (0,1): IoU = 1 / 3
    assert metrics.mask_iou(heat, mask, threshold=0.7).item() == pytest.approx(1 / 3)


def test_class_discrimination_by_hand():
    own = torch.zeros(3, 1, 4, 4)
    own[:, :, :2, :2] = 1
    other = torch.zeros(3, 1, 4, 4)
    other[:, :, 2:, 2:] = 1
    heat = torch.zeros(3, 3, 4, 4)
    heat[0, :, 0, 0] = 1.0  # all on the explained object: 3 against 0
    heat[1, :, 0, 0] = 1.0
    heat[1, :, 3, 3] = 2.0  # 3 against 6
    heat[2, :, 0, 0] = -5.0  # negative relevance is ignored: 0 against 0 is a tie
    expected = torch.tensor([1.0, 0.0, 0.0])
    torch.testing.assert_close(metrics.class_discrimination(heat, own, other), expected)
    swapped = metrics.class_discrimination(heat, other, own)
    torch.testing.assert_close(swapped, torch.tensor([0.0, 1.0, 0.0]))


def test_map_mean_and_total_variation_by_hand():
    heat = torch.tensor([[[4.0, 2.0], [-1.0, 0.0]]])
    # positive part scaled to max 1: [[1, .5], [0, 0]]
    assert metrics.map_mean(heat).item() == pytest.approx(1.5 / 4)
    # vertical |0 − 1| + |0 − .5| over 2 pairs, horizontal |.5 − 1| + |0 − 0| over 2 pairs
    assert metrics.map_total_variation(heat).item() == pytest.approx(0.75 + 0.25)
    # scale-free, and a constant map is perfectly smooth
    assert metrics.map_mean(heat * 7).item() == pytest.approx(1.5 / 4)
    assert metrics.map_total_variation(torch.ones(1, 3, 3)).item() == 0.0
    assert metrics.map_mean(-torch.ones(1, 3, 3)).item() == 0.0


def test_thresholding_methods_by_hand():
    heat = torch.tensor([[[4.0, 3.0, 2.0, 1.0]]])
    assert metrics.threshold_heatmap(heat, "value", 0.5).tolist() == [[[True, True, False, False]]]
    # mean 2.5: α = 1 keeps values ≥ 2.5
    assert metrics.threshold_heatmap(heat, "mean", 1.0).tolist() == [[[True, True, False, False]]]
    # energy: 4/10 = 0.4, (4+3)/10 = 0.7 → α = 0.6 needs the first two pixels
    assert metrics.threshold_heatmap(heat, "energy", 0.6).tolist() == [
        [[True, True, False, False]]
    ]
    assert metrics.threshold_heatmap(heat, "energy", 0.75).tolist() == [
        [[True, True, True, False]]
    ]


def test_tightest_box_and_box_iou():
    binary = torch.zeros(2, 6, 8, dtype=torch.bool)
    binary[0, 1:3, 2:5] = True
    binary[0, 4, 6] = True
    assert metrics.tightest_box(binary).tolist() == [[1, 2, 5, 7], [0, 0, 0, 0]]
    boxes = torch.tensor([[0, 0, 2, 2]])
    assert metrics.box_iou(boxes, torch.tensor([[1, 1, 3, 3]])).item() == pytest.approx(1 / 7)


def test_localization_error_by_hand():
    heat = torch.zeros(2, 10, 10)
    heat[:, 2:6, 2:6] = 1.0
    boxes = torch.tensor([[2, 2, 6, 6], [2, 2, 10, 10]])  # second: IoU 16/64 = 0.25
    assert metrics.localization_error(heat, boxes, "value", 0.5).tolist() == [0.0, 1.0]
    several = [torch.tensor([[0, 0, 1, 1], [2, 2, 6, 7]]), torch.tensor([[2, 2, 10, 10]])]
    assert metrics.localization_error(heat, several, "energy", 0.9).tolist() == [0.0, 1.0]


def test_saliency_metric_by_hand():
    model = PixelModel([1.0, 0.0, 0.0, 0.0])
    x = torch.tensor([[[[2.0, 0.0], [0.0, 0.0]]]])
    heat = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    # box = pixel (0,0): area 1/4; the crop resized to 2×2 is all 2 → logit 2, p = σ(2)
    value = metrics.saliency_metric(model, x, heat, target=1)
    assert value.item() == pytest.approx(
        math.log(0.25) - math.log(1 / (1 + math.exp(-2))), rel=1e-5
    )


def test_class_specific_masking_by_hand():
    class Halves(nn.Module):
        """Class 0 sees the left column, class 1 the right one."""

        def forward(self, x):
            return torch.stack([x[..., 0].sum((1, 2)), x[..., 1].sum((1, 2))], dim=1) * 10

    x = torch.ones(1, 1, 2, 2)
    class_masks = torch.zeros(1, 2, 2, 2)
    class_masks[0, 0, :, 0] = 1.0
    class_masks[0, 1, :, 1] = 0.5
    labels = torch.tensor([[1, 1]])
    result = metrics.class_specific_masking(
        Halves(), x, class_masks, labels, thresholds=(0.4, 0.6), multilabel=True
    )
    sig = torch.sigmoid(torch.tensor(20.0)).item()
    # class 1's mask passes the 0.4 threshold only: it keeps class 1 half of the time
    expected = torch.tensor([[sig, 0.5], [0.5, (sig + 0.5) / 2]])
    torch.testing.assert_close(result["table"], expected)
    assert result["same"].item() == pytest.approx((sig + (sig + 0.5) / 2) / 2)
    assert result["other"].item() == pytest.approx(0.5)
    # both classes are in the image, so the co-occurring table is the whole table
    torch.testing.assert_close(result["co_occurring_table"], expected)
    assert result["same_relative"].item() == pytest.approx(((sig + 0.5) / 2 / sig + 1) / 2)


def test_class_specific_masking_co_occurring_skips_absent_classes():
    """Masks of classes missing from an image count in "other" but not in "other_co_occurring"."""

    class Thirds(nn.Module):
        def forward(self, x):
            return torch.stack([x[..., k].sum((1, 2)) for k in range(3)], dim=1) * 10 - 5

    x = torch.ones(2, 1, 1, 3)
    class_masks = torch.eye(3).view(1, 3, 1, 3).repeat(2, 1, 1, 1)
    labels = torch.tensor([[1, 1, 0], [1, 0, 0]])
    result = metrics.class_specific_masking(
        Thirds(), x, class_masks, labels, thresholds=(0.5,), multilabel=True
    )
    low, high = torch.sigmoid(torch.tensor(-5.0)).item(), torch.sigmoid(torch.tensor(5.0)).item()
    # class 0 under class 1's mask: only image 0 holds class 1
    assert result["co_occurring_table"][0, 1].item() == pytest.approx(low)
    assert torch.isnan(result["co_occurring_table"][0, 2])
    assert result["co_occurring_table"][0, 0].item() == pytest.approx(high)
    assert result["other_co_occurring"].item() == pytest.approx(low)
    assert result["other"].item() == pytest.approx(low)
    assert result["other_co_occurring_relative"].item() == pytest.approx(low / high, rel=1e-5)


def test_salient_object_scores_by_hand():
    saliency = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[[1, 1], [0, 0]]])
    # mean 0.25, threshold 0.5: predicts pixel (0,0): P = 1, R = 0.5
    scores = metrics.salient_object_scores(saliency, mask)
    assert scores["precision"].item() == 1.0 and scores["recall"].item() == 0.5
    assert scores["f_measure"].item() == pytest.approx(1.3 * 0.5 / (0.3 + 0.5))
    assert scores["mae"].item() == pytest.approx(0.25)
    # negative relevance counts as none: a signed map scores like its positive part
    signed = metrics.salient_object_scores(torch.tensor([[[1.0, -3.0], [0.0, -1.0]]]), mask)
    for name in ("precision", "recall", "f_measure", "mae"):
        torch.testing.assert_close(signed[name], scores[name])


def test_spearman_matches_hand_ranks():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
    b = torch.tensor([[10.0, 20.0, 30.0, 40.0], [4.0, 3.0, 2.0, 1.0]])
    assert metrics.spearman_rank_correlation(a, b).tolist() == pytest.approx([1.0, -1.0])


def test_model_randomization_check_leaves_the_model_alone():
    torch.manual_seed(0)
    model = TinyCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()

    def explain(m):
        return Saliency(m).attribute(x.clone().requires_grad_(True), target=1)

    same = metrics.model_randomization_check(explain, model, [])
    assert same.tolist() == pytest.approx([1.0, 1.0])
    changed = metrics.model_randomization_check(explain, model, ["head", "features"])
    assert (changed < 0.9).all()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert torch.equal(torch.get_rng_state(), rng)
    with pytest.raises(ValueError, match="not modules"):
        metrics.model_randomization_check(explain, model, ["nope"])
