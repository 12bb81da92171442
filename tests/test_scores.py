"""The objectives' scores: the target's probability, its log-odds against the other classes
(both games' scores) and the best other class."""

import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.nn import functional as F

from captum_masks._engine.scores import best_other_score, select_scores, target_log_odds

logit_rows = st.lists(st.floats(-40, 40), min_size=2, max_size=9)


@given(logits=logit_rows, data=st.data())
def test_softplus_of_the_log_odds_is_each_games_log_probability(logits, data):
    output = torch.tensor([logits], dtype=torch.float64)
    target = data.draw(st.integers(0, len(logits) - 1))
    targets = torch.tensor([[target]])
    odds = target_log_odds(output, targets, apply_softmax=True)
    log_p = output.log_softmax(dim=1)[0, target]
    torch.testing.assert_close(F.softplus(-odds)[0], -log_p, rtol=1e-6, atol=1e-9)
    expected = -torch.log1p(-log_p.exp())
    if torch.isfinite(expected):
        torch.testing.assert_close(F.softplus(odds)[0], expected, rtol=1e-6, atol=1e-9)


def test_the_deletion_score_stays_finite_where_p_rounds_to_one():
    confident = torch.tensor([[40.0, 0.0]])
    assert F.softplus(target_log_odds(confident, torch.tensor([[0]]), True)).item() > 39


@given(
    batch=st.integers(1, 4),
    classes=st.integers(2, 12),
    steps=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_scores_are_read_along_the_class_axis_at_the_targets_position(batch, classes, steps, seed):
    generator = torch.Generator().manual_seed(seed)
    output = torch.randn(batch, classes, steps, generator=generator, dtype=torch.float64)
    targets = torch.stack(
        [
            torch.randint(0, classes, (batch,), generator=generator),
            torch.randint(0, steps, (batch,), generator=generator),
        ],
        dim=1,
    )
    odds = target_log_odds(output, targets, apply_softmax=True)
    for row in range(batch):
        target, step = targets[row].tolist()
        column = output[row, :, step]
        others = torch.cat([column[:target], column[target + 1 :]])
        assert select_scores(output, targets, False)[row] == column[target]
        assert best_other_score(output, targets)[row] == others.max()
        torch.testing.assert_close(odds[row], column[target] - others.logsumexp(dim=0))


def test_given_probabilities_the_odds_are_p_over_one_minus_p_and_stay_finite():
    probabilities = torch.tensor([[0.2, 0.8], [1.0, 0.0]])
    odds = target_log_odds(probabilities, torch.tensor([[1], [0]]), apply_softmax=False)
    torch.testing.assert_close(odds[0], torch.tensor(0.8 / 0.2).log())
    assert torch.isfinite(odds).all()
