"""GradNorm: one hand-computed step, positivity and finiteness for losses of any sign, state round trip."""

import copy

import torch

from mo_align.weightings.gradnorm import GradNormWeighting


def test_first_step_hand_computed():
    w = GradNormWeighting(2, alpha=1.5, lr=0.1)
    gram = torch.tensor([[4.0, 0.0], [0.0, 1.0]])  # norms 2 and 1
    used, _ = w.gradient_weights(gram, torch.tensor([1.0, 1.0]))
    assert torch.equal(used, torch.ones(2))  # the first micro-batch uses w = 1
    # L0 = L -> ratios 1, targets = mean(G) = 1.5; G = (2, 1): w1 -= 0.1*2 -> 0.8, w2 += 0.1*1 -> 1.1
    # renormalise to sum 2: (0.8, 1.1) * 2 / 1.9
    torch.testing.assert_close(w.weights(), torch.tensor([0.8, 1.1]) * 2 / 1.9)


def test_second_step_uses_updated_weights_and_loss_ratios():
    w = GradNormWeighting(2, alpha=1.0, lr=0.1)
    w.gradient_weights(torch.eye(2), torch.tensor([2.0, 2.0]))  # norms 1, 1; G equal to targets -> sign 0
    torch.testing.assert_close(w.weights(), torch.ones(2))
    used, _ = w.gradient_weights(torch.eye(2), torch.tensor([1.0, 3.0]))
    assert torch.equal(used, torch.ones(2))
    # r = (0.5, 1.5), r~ = (0.5, 1.5), targets = 1 * r~ = (0.5, 1.5), G = (1, 1): w1 -= 0.1, w2 += 0.1
    torch.testing.assert_close(w.weights(), torch.tensor([0.9, 1.1]))


def test_any_loss_sign_keeps_weights_finite_and_positive():
    w = GradNormWeighting(3, lr=0.5)
    gen = torch.Generator().manual_seed(0)
    for step in range(200):
        g = torch.randn(3, 5, generator=gen)
        losses = torch.randn(3, generator=gen) * (1e-6 if step == 0 else 1.0)  # L0 ~ 0 and sign changes
        used, metrics = w.gradient_weights(g @ g.T, losses)
        assert torch.isfinite(used).all() and (used > 0).all()
        assert metrics["skipped"] == 0.0
        assert abs(float(w.weights().sum()) - 3) < 1e-5
        assert (w.weights() >= w.min_weight * 0.99).all()


def test_non_finite_inputs_skip_without_poisoning_state():
    w = GradNormWeighting(2)
    w.gradient_weights(torch.eye(2), torch.ones(2))
    before = copy.deepcopy(w.state_dict())
    _, metrics = w.gradient_weights(torch.full((2, 2), float("nan")), torch.ones(2))
    assert metrics["skipped"] == 1.0
    assert torch.equal(w.state_dict()["w"], before["w"])


def test_state_round_trip_continues_identically():
    a, b = GradNormWeighting(2), GradNormWeighting(2)
    gram, losses = torch.tensor([[2.0, 0.5], [0.5, 1.0]]), torch.tensor([0.3, -0.2])
    a.gradient_weights(gram, losses)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    for _ in range(3):
        assert torch.equal(a.gradient_weights(gram, losses)[0], b.gradient_weights(gram, losses)[0])


def _signed_ratio_step(w, norms, losses, initial, alpha, lr):
    """One weight step as the reference codes GradNorm, recomputed: signed ratios r = L / L(0), r̃ = r / mean(r),
    target = mean(G) r̃^α, w ← w − η sign(G − target) ‖g‖, then Σ w = K. Returns (before, after renormalisation)."""
    r = losses / initial
    rel = r / r.mean()
    g = w * norms
    target = g.mean() * rel**alpha
    stepped = w - lr * torch.sign(g - target) * norms
    return stepped, stepped * len(w) / stepped.sum()


def test_negative_loss_ratio_reference_skips_that_objective_we_step_it():
    """The documented deviation, checked: with L(0) = (1, 1, 1) and then L = (−0.5, 1, 2), the reference's r̃_0 < 0
    gives r̃_0^1.5 = NaN, torch.sign(NaN) = 0 and objective 0 skips its weight step (the weights stay finite); ours
    steps it on magnitudes |L| / |L(0)|."""
    alpha, lr = 1.5, 0.1
    gram, norms = torch.diag(torch.tensor([4.0, 1.0, 9.0])), torch.tensor([2.0, 1.0, 3.0], dtype=torch.float64)
    first, second = torch.ones(3, dtype=torch.float64), torch.tensor([-0.5, 1.0, 2.0], dtype=torch.float64)
    ours = GradNormWeighting(3, alpha=alpha, lr=lr)
    ours.gradient_weights(gram, first.float())
    _, ref_w = _signed_ratio_step(torch.ones(3, dtype=torch.float64), norms, first, first, alpha, lr)
    torch.testing.assert_close(ours.w, ref_w)  # a first step of positive ratios: identical
    assert (
        torch.isnan(torch.tensor(-0.6, dtype=torch.float64) ** alpha)
        and float(torch.sign(torch.tensor(torch.nan))) == 0.0
    )
    ref_stepped, ref_after = _signed_ratio_step(ref_w, norms, second, first, alpha, lr)
    assert torch.isfinite(ref_after).all()  # no NaN weight: that objective's step is skipped
    assert float(ref_stepped[0]) == float(ref_w[0])  # objective 0 did not move before the renormalisation
    assert (ref_stepped[1:] != ref_w[1:]).all()  # the others did
    before = ours.w.clone()
    ours.gradient_weights(gram, second.float())
    # ours: the same step on magnitudes (|L| + 1e-8) / (|L(0)| + 1e-8), every objective moves
    mag = (second.abs() + 1e-8) / (first.abs() + 1e-8)
    rel = mag / mag.mean()
    g = before * norms
    stepped = before - lr * torch.sign(g - g.mean() * rel**alpha) * norms
    torch.testing.assert_close(ours.w, stepped * 3 / stepped.sum())
    assert (stepped != before).all()
    assert abs(float(ours.w[0]) - float(ref_after[0])) > 1e-3  # measurably not the reference's rule
    assert "torch.sign(NaN) = 0" in GradNormWeighting.__doc__ and "NaN forever" not in GradNormWeighting.__doc__
