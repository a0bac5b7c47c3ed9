"""PAMA: projection cases of Theorem 1, the combination weights, reference scalar mode."""

import torch

from mo_align.weightings import ObjectiveStats
from mo_align.weightings.pama import PAMAWeighting, pama_scalar, pama_weights


def test_projection_cases():
    assert float(pama_scalar(torch.tensor([0.3, 0.1, 0.7], dtype=torch.float64))) == 0.1  # all positive -> min
    assert float(pama_scalar(torch.tensor([-0.3, -0.1], dtype=torch.float64))) == -0.1  # all negative -> max
    assert float(pama_scalar(torch.tensor([-0.2, 0.5]))) == 0.0  # 0 inside the hull
    assert float(pama_scalar(torch.tensor([0.0, 0.4]))) == 0.0


def test_weights_attain_the_projection():
    for a in ([0.3, 0.1, 0.7], [-0.3, -0.1], [-0.2, 0.5, 0.1], [0.0, 0.4]):
        a = torch.tensor(a, dtype=torch.float64)
        lam = pama_weights(a)
        assert abs(float(lam.sum()) - 1) < 1e-12 and (lam >= 0).all()
        assert abs(float(lam @ a) - float(pama_scalar(a))) < 1e-12
    torch.testing.assert_close(pama_weights(torch.tensor([-0.2, 0.6])), torch.tensor([0.75, 0.25]))


def make_stats():
    # two groups of 2; objective 0 has variance, objective 1 is constant (Noon advantage 0 everywhere)
    r = torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    return ObjectiveStats(rewards=r, group_size=2, lengths=torch.tensor([2.0, 2.0, 4.0, 4.0]))


def test_objective_values_and_combination():
    w = PAMAWeighting(2)
    st = make_stats()
    a = w.objective_values(st)
    # A_0 = ±0.7070... per group; Noon keeps the positive one: rows 0 and 3; token weights 2 and 4 of total 12
    adv = 0.5 / (0.5**0.5 + 1e-4)
    torch.testing.assert_close(a, torch.tensor([adv * 6 / 12, 0.0], dtype=torch.float64))
    # s* = 0 (objective 1 has no positive advantage): λ = (0, 1) -> no update signal at all
    out = w.combine(st)
    assert torch.equal(out, torch.zeros(4))
    metrics = w.update(st)
    assert metrics["s_star"] == 0.0
    torch.testing.assert_close(w.weights(), torch.tensor([0.0, 1.0]))


def test_intent_vs_reference_scalar():
    r = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 1.0]])
    st = ObjectiveStats(rewards=r, group_size=2, lengths=torch.ones(4))
    adv = 0.5 / (0.5**0.5 + 1e-4)
    intent = PAMAWeighting(2).combine(st)
    # a = (adv/2, adv/2) -> tie -> λ = (1, 0): the Noon advantages of objective 0
    torch.testing.assert_close(intent, torch.tensor([adv, 0.0, 0.0, adv]))
    ref = PAMAWeighting(2, reference_scalar=True).combine(st)
    torch.testing.assert_close(ref, torch.full((4,), adv / 2))
