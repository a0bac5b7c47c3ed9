"""Advantage estimators against hand-computed values and against TRL 1.16's own code path."""

import math

import pytest
import torch

from mo_align.advantages import batch_whiten, compute_advantages, group_normalize, nanstd, normalize_then_sum


def test_group_normalize_hand_computed():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    # group 1: mean 0.5, population var 0.25, Bessel x4/3 -> 1/3, std 0.57735; group 2: std 0 -> adv 0.
    a = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    expected = torch.tensor([a, -a, -a, a, 0.0, 0.0, 0.0, 0.0])
    torch.testing.assert_close(group_normalize(r, 4), expected)


def test_group_normalize_scales():
    r = torch.tensor([1.0, 3.0, 0.0, 0.0])
    torch.testing.assert_close(group_normalize(r, 2, "none"), torch.tensor([-1.0, 1.0, 0.0, 0.0]))
    # batch std: mean 1, deviations [0, 2, -1, -1] -> sum sq 6, /4 * 4/3 = 2 -> std sqrt(2)
    s = math.sqrt(2.0) + 1e-4
    torch.testing.assert_close(group_normalize(r, 2, "batch"), torch.tensor([-1 / s, 1 / s, 0.0, 0.0]))
    assert torch.equal(group_normalize(r, 2, True), group_normalize(r, 2, "group"))


def test_group_normalize_nan_rows_excluded_and_zero():
    r = torch.tensor([1.0, float("nan"), 0.0, 1.0])  # group 1: only one finite value -> std NaN -> adv 0
    out = group_normalize(r, 2)
    assert torch.isfinite(out).all()
    assert out[1] == 0.0
    r2 = torch.tensor([1.0, float("nan"), 0.0, 2.0, 2.0, 2.0])  # G=3: baseline over the finite entries only
    a = 0.5 / (math.sqrt(0.5) + 1e-4)
    torch.testing.assert_close(group_normalize(r2, 3), torch.tensor([a, 0.0, -a, 0.0, 0.0, 0.0]))


def test_group_normalize_columns_independent():
    r = torch.tensor([[1.0, 5.0], [0.0, 5.0], [3.0, 1.0], [1.0, 2.0]])
    out = group_normalize(r, 2)
    for k in range(2):
        assert torch.equal(out[:, k], group_normalize(r[:, k].contiguous(), 2))


def test_group_normalize_bad_shapes():
    with pytest.raises(ValueError, match="multiple of group_size"):
        group_normalize(torch.zeros(5), 2)
    with pytest.raises(ValueError, match="scale"):
        group_normalize(torch.zeros(4), 2, "groups")


def test_nanstd_matches_torch_std_without_nans():
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(nanstd(x, dim=1), x.std(dim=1))
    torch.testing.assert_close(nanstd(x), x.std())


def test_batch_whiten_hand_computed():
    # T = 4 tokens: mean = (3*1 + 1*0)/4 = 0.75; var = (3*0.0625 + 0.5625)/4 * 4/3 = 0.25 -> std 0.5
    out = batch_whiten(torch.tensor([1.0, 0.0]), torch.tensor([3, 1]))
    torch.testing.assert_close(out, torch.tensor([0.5, -1.5]), atol=1e-6, rtol=1e-6)


def test_batch_whiten_token_weighting_matters():
    scores = torch.tensor([1.0, 0.0, 0.0])
    equal = batch_whiten(scores, torch.tensor([2, 2, 2]))
    skewed = batch_whiten(scores, torch.tensor([10, 1, 1]))
    assert not torch.allclose(equal, skewed)
    # token-weighted mean is exactly zero
    lengths = torch.tensor([10.0, 1.0, 1.0])
    assert abs(float((skewed * lengths).sum())) < 1e-5


def test_batch_whiten_matches_token_level_reference():
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(6, generator=g)
    lengths = torch.randint(1, 9, (6,), generator=g)
    tokens = torch.repeat_interleave(scores.double(), lengths)  # every token carries its completion's return
    mean, var = tokens.mean(), tokens.var(unbiased=True)
    expected = ((scores.double() - mean) / torch.sqrt(var + 1e-8)).float()
    torch.testing.assert_close(batch_whiten(scores, lengths), expected)


def test_batch_whiten_nan_and_constant():
    out = batch_whiten(torch.tensor([1.0, float("nan"), 0.0]), torch.tensor([1, 5, 1]))
    torch.testing.assert_close(out, torch.tensor([1 / math.sqrt(0.5 + 1e-8) * 0.5, 0.0, -0.5 / math.sqrt(0.5 + 1e-8)]))
    assert torch.equal(batch_whiten(torch.ones(4), torch.tensor([1, 2, 3, 4])), torch.zeros(4))


def test_compute_advantages_dispatch():
    s = torch.tensor([1.0, 0.0, 0.0, 1.0])
    assert torch.equal(compute_advantages(s, estimator="grpo", group_size=2), group_normalize(s, 2))
    lengths = torch.tensor([1, 2, 3, 4])
    assert torch.equal(
        compute_advantages(s, estimator="reinforce_pp", group_size=2, lengths=lengths), batch_whiten(s, lengths)
    )
    with pytest.raises(ValueError, match="unknown advantage_estimator"):
        compute_advantages(s, estimator="ppo", group_size=2)
    with pytest.raises(ValueError, match="lengths"):
        compute_advantages(s, estimator="reinforce_pp", group_size=2)


def test_normalize_then_sum_hand_computed():
    r = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 3.0]])
    w = torch.tensor([1.0, 2.0])
    z = 0.5 / (math.sqrt(0.5) + 1e-4)  # group z-score of a {1, 0} pair
    z2 = 1.0 / (math.sqrt(2.0) + 1e-4)  # group z-score of a {1, 3} pair
    s = torch.tensor([z, -z, z - 2 * z2, -z + 2 * z2])
    expected = (s - s.mean()) / (s.std() + 1e-4)
    torch.testing.assert_close(normalize_then_sum(r, w, 2), expected)
