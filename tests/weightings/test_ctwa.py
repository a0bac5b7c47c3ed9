"""CTWA: group covariance, the update rule, the post-update statistic, stall detection and the weight bound."""

import logging
import math

import pytest
import torch

from mo_align.weightings import ObjectiveStats
from mo_align.weightings.ctwa import CTWAWeighting, ctwa_update, group_covariance


def test_group_covariance_hand_computed():
    r = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    s = torch.tensor([1.0, -1.0, 2.0, 0.0])
    # group 1: r0 (1,0), s (1,-1): centred (.5,-.5)x(1,-1) -> cov = (0.5 + 0.5)/2 = 0.5; r1 -> -0.5
    # group 2: r0 (1,1) constant -> 0; r1 (1,0), s (2,0): (.5,-.5)x(1,-1) -> 0.5
    torch.testing.assert_close(group_covariance(r, s, 2), torch.tensor([0.25, 0.0]))
    # pooled: sums (1 + 0)/4 and (-1 + 1)/4
    torch.testing.assert_close(group_covariance(r, s, 2, pooled=True), torch.tensor([0.25, 0.0]))


def test_group_covariance_drops_non_finite_and_small_groups():
    r = torch.tensor([[1.0], [0.0], [0.0], [1.0], [1.0], [0.0]])
    s = torch.tensor([1.0, 0.0, 2.0, float("nan"), 5.0, 1.0])
    # group sizes 3: group 1 r (1,0,0) s (1,0,2): means 1/3, 1 -> products (2/3)(0) + (-1/3)(-1) + (-1/3)(1) = 0
    # group 2 without the NaN: r (1,0), s (5,1) -> (.5)(2) + (-.5)(-2) = 2 / 2 = 1
    torch.testing.assert_close(group_covariance(r, s, 3), torch.tensor([0.5]))
    # only one finite member per group -> no valid group -> 0
    s2 = torch.tensor([1.0, float("nan"), float("nan"), float("nan"), float("inf"), 2.0])
    torch.testing.assert_close(group_covariance(r, s2, 3), torch.tensor([0.0]))


def test_group_covariance_is_population_covariance_of_each_group():
    gen = torch.Generator().manual_seed(0)
    r, s = torch.rand(12, 3, generator=gen), torch.randn(12, generator=gen)
    expected = torch.stack(
        [
            torch.stack([torch.cov(torch.stack([r[g * 4 : g * 4 + 4, k], s[g * 4 : g * 4 + 4]]), correction=0)[0, 1]
                         for k in range(3)])
            for g in range(3)
        ]
    ).mean(0)  # fmt: skip
    torch.testing.assert_close(group_covariance(r, s, 4), expected)


def test_ctwa_update_first_step_ema_gate_and_deficit():
    logw = torch.log(torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64))
    stat = torch.tensor([0.2, 0.0, -0.1])
    means = torch.tensor([0.5, 0.99, 0.5])
    new, ema = ctwa_update(
        logw, None, stat, means, cov_targets=[0.15, 0.08, 0.08], obj_targets=[1.0, 0.95, 0.95], lambda_lr=0.5,
        ema_tau=0.1,
    )  # fmt: skip
    torch.testing.assert_close(ema, stat.double())  # the first step sets the EMA to the statistic
    # deficits: max(0, .15-.2)=0; objective 1 gated (0.99 >= 0.95); objective 2: .08+.1 = .18
    torch.testing.assert_close(new - logw, torch.tensor([0.0, 0.0, 0.5 * 0.18], dtype=torch.float64))
    new2, ema2 = ctwa_update(new, ema, torch.zeros(3), means, cov_targets=0.1, obj_targets=None, lambda_lr=1.0,
                             ema_tau=0.1)  # fmt: skip
    torch.testing.assert_close(ema2, 0.9 * stat.double())
    torch.testing.assert_close(new2 - new, torch.clamp(0.1 - 0.9 * stat.double(), min=0))


def stats_with_signal(signal, rewards, step=0):
    return ObjectiveStats(
        rewards=rewards, group_size=2, lengths=torch.ones(len(signal)), step=step, extras={"signal": signal}
    )


def test_weights_only_grow_and_scalarize_uses_exp_log_weights():
    w = CTWAWeighting(2, weights=[0.5, 0.5], cov_targets=[1.0, 1.0], lambda_lr=0.1)
    r = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    prev = w.weights()
    for step in range(5):
        w.update(stats_with_signal(torch.randn(4), r, step))
        now = w.weights()
        assert (now >= prev - 1e-7).all()
        prev = now
    torch.testing.assert_close(w.scalarize(r), r @ w.weights())
    torch.testing.assert_close(w.weights().double(), torch.exp(w.log_weights), check_dtype=False)


def test_outlier_filter_and_non_finite_signal():
    w = CTWAWeighting(1, cov_targets=10.0)
    r = torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    # the 1e6 entry is > 100 x median |w|: dropped, leaving only group 1 -> cov 0.5
    metrics = w.update(stats_with_signal(torch.tensor([1.0, -1.0, 1e6, float("nan")]), r))
    assert metrics["cov/0"] == pytest.approx(0.5)


def test_stall_warning_once_and_weight_bound(caplog):
    # two nearly exclusive objectives whose covariance targets cannot both be met
    r = torch.tensor([[1.0, 0.0], [0.0, 1.0]] * 4)
    signal = torch.tensor([1.0, -1.0] * 4)
    w = CTWAWeighting(2, cov_targets=0.6, lambda_lr=0.1, patience=3, max_weight_ratio=2.0)
    with caplog.at_level(logging.WARNING, logger="mo_align"):
        for step in range(10):
            metrics = w.update(stats_with_signal(signal, r, step))
    assert sum("cannot all be met" in rec.message for rec in caplog.records) == 1
    assert metrics["stalled"] == 1.0 and metrics["deficit_streak"] == 10
    ws = w.weights()
    assert float(ws.max() / ws.min()) <= 2.0 + 1e-5


def test_subsample_reproduces_partial_groups_deterministically():
    r = torch.rand(64, 2, generator=torch.Generator().manual_seed(1))
    s = torch.randn(64, generator=torch.Generator().manual_seed(2))
    a = CTWAWeighting(2, subsample=0.25).update(stats_with_signal(s, r, step=3))
    b = CTWAWeighting(2, subsample=0.25).update(stats_with_signal(s, r, step=3))
    full = CTWAWeighting(2).update(stats_with_signal(s, r, step=3))
    assert a == b
    assert a["n_groups"] < full["n_groups"]


def test_post_update_signal_aggregations():
    adv = torch.tensor([1.0, -2.0])
    log_ratio = torch.log(torch.tensor([[1.0, 1.5, 1.0], [1.0, 0.5, 1.0]]))
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    w = CTWAWeighting(2, w_agg="mean")
    # row 0: A>=0, clip at 1.2 -> token 1 (ratio 1.5) is clipped: sum = 1*1 = 1, /L=2 -> 0.5
    # row 1: A<0, ratio 0.5 < 0.8 -> clipped: sum = -2 - 2 = -4, /L=3
    out, n_unclipped = w.post_update_signal(adv, log_ratio, mask, 0.2, 0.2)
    torch.testing.assert_close(out, torch.tensor([0.5, -4 / 3]))
    assert n_unclipped == 3
    out_u, _ = CTWAWeighting(2, w_agg="mean_unclipped").post_update_signal(adv, log_ratio, mask, 0.2, 0.2)
    torch.testing.assert_close(out_u, torch.tensor([1.0, -2.0]), atol=1e-6, rtol=0)
    out_s, _ = CTWAWeighting(2, w_agg="sum").post_update_signal(adv, log_ratio, mask, 0.2, 0.2)
    torch.testing.assert_close(out_s, torch.tensor([1.0, -4.0]))
    # ratio exactly 1, no clipping: the induced weight is the advantage itself (the on-policy statistic)
    same, _ = w.post_update_signal(adv, torch.zeros(2, 3), mask, 0.2, 0.2)
    torch.testing.assert_close(same, adv)


def test_bad_kwargs_name_the_field():
    with pytest.raises(ValueError, match="cov_targets has 2 entries"):
        CTWAWeighting(3, cov_targets=[0.1, 0.1])
    with pytest.raises(ValueError, match="statistic"):
        CTWAWeighting(3, statistic="sometimes")
    with pytest.raises(ValueError, match="base"):
        CTWAWeighting(3, base="mgda")
    assert math.isclose(float(CTWAWeighting(2, weights=[0.25, 0.75]).weights()[1]), 0.75, rel_tol=1e-6)


def test_plug_and_play_on_tchebycheff_and_smooth_tchebycheff():
    from mo_align.weightings.tchebycheff import tchebycheff_scores

    r = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [1.0, 1.0]])
    w = CTWAWeighting(2, weights=[0.5, 0.5], base="tchebycheff", base_kwargs={"ideal": [1.0, 1.0]})
    torch.testing.assert_close(w.scalarize(r), tchebycheff_scores(r, torch.tensor([0.5, 0.5]), torch.ones(2)))
    w.update(stats_with_signal(torch.tensor([1.0, -1.0, 1.0, -1.0]), r))  # objective 1 in deficit -> its weight grows
    ws = w.weights()
    assert ws[1] > ws[0]
    torch.testing.assert_close(w.scalarize(r), tchebycheff_scores(r, ws, torch.ones(2)))
    smooth = CTWAWeighting(2, base="smooth_tchebycheff")
    before = smooth.weights().clone()
    smooth.update(stats_with_signal(torch.tensor([1.0, -1.0, 1.0, -1.0]), r))
    assert not torch.equal(before, smooth.weights())
    assert torch.isfinite(smooth.combine(stats_with_signal(torch.zeros(4), r))).all()
