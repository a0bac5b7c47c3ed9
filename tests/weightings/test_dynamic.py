"""Dynamic reweighting: influence = η Gram·1, exponentiated-gradient step, accumulation over m batches."""

import math

import pytest
import torch

from mo_align.weightings import ObjectiveStats
from mo_align.weightings.dynamic import DynamicWeighting


def stats(gram, lr):
    r = torch.zeros(4, 2)
    return ObjectiveStats(rewards=r, group_size=2, lengths=torch.ones(4), extras={"gramian": gram, "lr": lr})


def test_one_step_hand_computed():
    w = DynamicWeighting(2, regularization=0.1)
    gram = torch.tensor([[1.0, 0.5], [0.5, 2.0]])
    metrics = w.update(stats(gram, lr=0.01))
    # I = 0.01 * (1.5, 2.5) = (0.015, 0.025); step = I / 0.1 = (0.15, 0.25); w ∝ 0.5 e^0.15, 0.5 e^0.25
    e1, e2 = math.exp(0.15), math.exp(0.25)
    torch.testing.assert_close(w.weights(), torch.tensor([e1 / (e1 + e2), e2 / (e1 + e2)]))
    assert metrics["influence/0"] == pytest.approx(0.015)


def test_accumulation_over_m_batches():
    w = DynamicWeighting(2, regularization=1.0, accumulation_steps=2)
    w.update(stats(torch.tensor([[2.0, 0.0], [0.0, 0.0]]), lr=1.0))
    torch.testing.assert_close(w.weights(), torch.tensor([0.5, 0.5]))  # nothing applied yet
    w.update(stats(torch.tensor([[0.0, 0.0], [0.0, 0.0]]), lr=1.0))
    # mean influence (1, 0): w ∝ (e, 1)
    e = math.e
    torch.testing.assert_close(w.weights(), torch.tensor([e / (e + 1), 1 / (e + 1)]))


def test_learning_rate_enters_once():
    a = DynamicWeighting(2, regularization=1e-5)
    a.update(stats(torch.tensor([[1e-2, 0.0], [0.0, 0.0]]), lr=1e-3))
    # exponent = 1e-3 * 1e-2 / 1e-5 = 1 (the reference's lr² would give 1e-3)
    e = math.e
    torch.testing.assert_close(a.weights(), torch.tensor([e / (e + 1), 1 / (e + 1)]))


def test_needs_gramian_and_skips_non_finite():
    w = DynamicWeighting(2)
    with pytest.raises(ValueError, match="gramian"):
        w.update(ObjectiveStats(rewards=torch.zeros(2, 2), group_size=2, lengths=torch.ones(2)))
    assert w.update(stats(torch.full((2, 2), float("nan")), lr=1.0))["skipped"] == 1.0
    torch.testing.assert_close(w.weights(), torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="weights"):
        DynamicWeighting(2, weights=[1.0, 2.0, 3.0])
