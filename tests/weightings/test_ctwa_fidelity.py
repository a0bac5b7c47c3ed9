"""CTWA's statistic against the reference code's rules, recomputed here independently in numpy:
correlation averaged over the groups whose std product exceeds 1e-8, numpy's median in the outlier filter, a
trailing partial group, ``w_agg`` at ρ ≡ 1, the base's running ideal point, and the loss types the exact statistic's
unclipped indicator describes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mo_align.configs import MOGRPOConfig
from mo_align.covariance import group_moments, on_policy_induced_weights, robust_signal
from mo_align.weightings import ObjectiveStats
from mo_align.weightings.ctwa import CTWAWeighting, group_covariance
from mo_align.weightings.tchebycheff import TchebycheffWeighting


def reference_moments(r: np.ndarray, w: np.ndarray, groups: list[list[int]], eps: float = 1e-8):
    """The reference's per-group loop (global_metrics False), written from the spec: cov averaged over groups with
    >= 2 members; corr summed where std(u)·std(w) > eps and divided by the count of such groups."""
    m = r.shape[1]
    cov_sum, corr_sum, corr_cnt, n_groups = np.zeros(m), np.zeros(m), np.zeros(m), 0
    for idx in groups:
        if len(idx) < 2:
            continue
        wc = w[idx] - w[idx].mean()
        uc = r[idx] - r[idx].mean(axis=0)
        n_groups += 1
        cov = (uc * wc[:, None]).mean(axis=0)
        cov_sum += cov
        den = uc.std(axis=0) * wc.std()
        ok = den > eps
        corr_sum[ok] += cov[ok] / den[ok]
        corr_cnt += ok
    cov_mean = cov_sum / n_groups if n_groups else np.zeros(m)
    return cov_mean, corr_sum / np.maximum(corr_cnt, 1)


def test_correlation_averages_over_groups_with_variance():
    """32 groups of 4, 8 of them with a constant objective: the correlation is the mean over the other 24."""
    g = torch.Generator().manual_seed(3)
    r = torch.randn(128, 2, generator=g, dtype=torch.float64)
    r[:32, 0] = 1.0  # groups 0-7: objective 0 has zero variance
    s = torch.randn(128, generator=g, dtype=torch.float64)
    cov, corr, n = group_moments(r, s, 4)
    groups = [list(range(i, i + 4)) for i in range(0, 128, 4)]
    ref_cov, ref_corr = reference_moments(r.numpy(), s.numpy(), groups)
    assert n == 32
    np.testing.assert_allclose(cov.double().numpy(), ref_cov, atol=1e-7)
    np.testing.assert_allclose(corr.double().numpy(), ref_corr, atol=1e-7)
    wrong = ref_corr[0] * 24 / 32  # what dividing by every group with >= 2 members gives
    assert abs(float(corr[0]) - wrong) > 1e-3


def test_outlier_filter_uses_the_usual_median():
    """|w| = 1, 1, 3, 150: numpy's median is 2 (threshold 200, 150 kept); the lower middle value 1 would drop it."""
    w = robust_signal(torch.tensor([1.0, -1.0, 3.0, 150.0]), step=0)
    assert float(np.median(np.abs([1.0, -1.0, 3.0, 150.0]))) == 2.0
    assert torch.isfinite(w).all()
    w = robust_signal(torch.tensor([1.0, -1.0, 3.0, 250.0]), step=0)
    assert torch.isnan(w[3]) and torch.isfinite(w[:3]).all()


@pytest.mark.parametrize("n", [7, 8, 10])
def test_trailing_partial_group_is_a_group_of_its_own(n):
    """N not a multiple of G: the last N mod G rows form one group (skipped with < 2 members), no crash."""
    g = torch.Generator().manual_seed(n)
    r = torch.randn(n, 2, generator=g, dtype=torch.float64)
    s = torch.randn(n, generator=g, dtype=torch.float64)
    groups = [list(range(i, min(i + 3, n))) for i in range(0, n, 3)]
    ref_cov, _ = reference_moments(r.numpy(), s.numpy(), groups)
    np.testing.assert_allclose(group_covariance(r, s, 3).double().numpy(), ref_cov, atol=1e-7)
    assert group_moments(r, s, 3)[2] == sum(len(x) >= 2 for x in groups)


def test_group_covariance_rejects_a_signal_of_the_wrong_length():
    with pytest.raises(ValueError, match="signal has shape"):
        group_covariance(torch.zeros(6, 2), torch.zeros(5), 3)


@pytest.mark.parametrize("agg", ["mean", "mean_unclipped", "sum"])
def test_on_policy_signal_honours_w_agg(agg):
    """ρ ≡ 1 with every token unclipped: the exact formula (induced_weights with log ratio 0) from the lengths."""
    from mo_align.covariance import induced_weights

    adv = torch.tensor([0.5, -1.0, 2.0, 0.0])
    lengths = torch.tensor([3, 1, 4, 2])
    mask = (torch.arange(5)[None, :] < lengths[:, None]).float()
    exact, _ = induced_weights(adv, torch.zeros(4, 5), mask, 0.2, 0.2, agg)
    torch.testing.assert_close(on_policy_induced_weights(adv, lengths, agg), exact.double())


def reference_induced(adv: np.ndarray, mask: np.ndarray, agg: str) -> np.ndarray:
    """The reference's induced weight at ρ ≡ 1 with every token unclipped (I = mask), written from the spec: token
    advantages A_it = adv_i on the mask, Â_i = Σ_t A_it m_it / L_i (0/0 = NaN for an empty completion), W = Â ρ I."""
    lengths = mask.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        a_hat = (adv[:, None] * mask).sum(1) / lengths
        total = (a_hat[:, None] * mask).sum(1)  # NaN · 0 = NaN: the empty row stays NaN
        if agg == "sum":
            return total
        return total / (lengths if agg == "mean" else mask.sum(1) + 1e-8)


@pytest.mark.parametrize(("agg", "hand"), [("sum", -5 / 6), ("mean_unclipped", -1 / 3), ("mean", -1 / 3)])
def test_zero_length_completion_is_left_out_of_the_covariance(agg, hand):
    """One group of 4 whose second completion has no token (``mask_truncated_completions``): the reference's w̃ is NaN
    for it (Â = 0/0) and its finite filter drops the row, whatever ``w_agg``. By hand, rows 0, 2, 3 with r = (1, 0, 2):
    ``sum`` w̃ = Â L = (2, 2, −0.5): cov = ⅓[0 + (−1)(2 − 7/6) + (1)(−0.5 − 7/6)] = −5/6; ``mean`` and
    ``mean_unclipped`` w̃ = Â = (1, 0.5, −0.5): cov = ⅓[0 + (−1)(1/6) + (1)(−5/6)] = −1/3. Keeping the row at
    w̃ = 0 gave −1.0625 (``sum``) and −0.375 (``mean_unclipped``). Both statistics (exact and on-policy) agree."""
    r = torch.tensor([[1.0], [3.0], [0.0], [2.0]])
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    lengths = torch.tensor([2, 0, 4, 1])
    mask = (torch.arange(4)[None, :] < lengths[:, None]).float()
    ref_w = reference_induced(adv.numpy().astype(np.float64), mask.numpy().astype(np.float64), agg)
    assert np.isnan(ref_w[1]) and np.isfinite(ref_w[[0, 2, 3]]).all()
    ref_cov, _ = reference_moments(r.double().numpy(), ref_w, [[i for i in range(4) if np.isfinite(ref_w[i])]])
    assert ref_cov[0] == pytest.approx(hand, rel=1e-7)
    exact = CTWAWeighting(1, statistic="exact", w_agg=agg)
    signal, _ = exact.post_update_signal(adv, torch.zeros(4, 4), mask, 0.2, 0.2)
    assert torch.isnan(signal[1])
    stats = ObjectiveStats(rewards=r, group_size=4, lengths=lengths.float(), extras={"signal": signal})
    assert exact.update(stats)["cov/0"] == pytest.approx(hand, rel=1e-6)
    on_policy = CTWAWeighting(1, statistic="on_policy", w_agg=agg)
    stats = ObjectiveStats(rewards=r, group_size=4, lengths=lengths.float(), extras={"signal": adv})
    assert on_policy.update(stats)["cov/0"] == pytest.approx(hand, rel=1e-6)


def test_on_policy_update_with_sum_uses_advantage_times_length():
    r = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    lengths = torch.tensor([10.0, 2.0, 4.0, 8.0])
    stats = ObjectiveStats(rewards=r, group_size=2, lengths=lengths, extras={"signal": adv})
    metrics = CTWAWeighting(2, statistic="on_policy", w_agg="sum").update(stats)
    expected = group_covariance(r, adv * lengths, 2)
    assert metrics["cov/0"] == pytest.approx(float(expected[0])) and metrics["cov/1"] == pytest.approx(
        float(expected[1])
    )
    mean_metrics = CTWAWeighting(2, statistic="on_policy").update(stats)
    assert mean_metrics["cov/1"] != pytest.approx(metrics["cov/1"])


def test_tchebycheff_base_scores_a_batch_against_an_ideal_point_that_includes_it():
    """One rule for the running ideal point: CTWA(base=tchebycheff) scores a training batch exactly as standalone
    Tchebycheff does (ideal updated before scoring), in the trainer's call order."""
    g = torch.Generator().manual_seed(0)
    batches = [torch.rand(8, 3, generator=g) + 0.5 * i for i in range(3)]
    alone, wrapped = (
        TchebycheffWeighting(3),
        CTWAWeighting(3, base="tchebycheff", statistic="on_policy", lambda_lr=0.0),
    )
    for r in batches:
        stats = ObjectiveStats(rewards=r, group_size=4, lengths=torch.full((8,), 5.0), extras={})
        alone.update(stats)  # update_first
        wrapped.pre_update(stats)
        torch.testing.assert_close(wrapped.combine(stats), alone.combine(stats))
        stats.extras["signal"] = alone.combine(stats)
        wrapped.update(stats)  # must not move the ideal point a second time
        torch.testing.assert_close(wrapped._base._z, alone._z)


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("loss_type", "cispo", "loss_type"),
        ("loss_type", "sapo", "loss_type"),
        ("loss_type", "vespo", "loss_type"),
        ("importance_sampling_level", "sequence", "importance_sampling_level"),
        ("delta", 2.0, "delta"),
        ("off_policy_mask_threshold", 0.5, "off_policy_mask_threshold"),
        ("top_entropy_quantile", 0.2, "top_entropy_quantile"),
    ],
)
def test_exact_statistic_refuses_losses_it_does_not_describe(tmp_path, field, value, named):
    kwargs = {"output_dir": str(tmp_path), "use_cpu": True, "report_to": "none", "weighting": "ctwa", field: value}
    with pytest.raises(ValueError, match=rf"statistic 'exact': {named}"):
        MOGRPOConfig(**kwargs)
    MOGRPOConfig(**{**kwargs, "weighting_kwargs": {"statistic": "on_policy"}})  # the shortcut stays available


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_exact_statistic_accepts_ppo_clip_losses(tmp_path, loss_type):
    MOGRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", weighting="ctwa", loss_type=loss_type)


def test_reference_moments_helper_is_not_vacuous():
    r = np.array([[1.0], [2.0], [3.0], [4.0]])
    w = np.array([1.0, 2.0, 3.0, 4.0])
    cov, corr = reference_moments(r, w, [[0, 1], [2, 3]])
    assert cov[0] == pytest.approx(0.25) and corr[0] == pytest.approx(1.0) and not math.isnan(corr[0])


def test_zero_initial_weight_starts_at_the_floor_and_can_grow():
    """Reference: ℓ0 = log(max(w0, 1e-8)) and w = exp(ℓ), so an objective with w0 = 0 starts at 1e-8 and grows with
    its deficit (it is not silenced forever)."""
    w = CTWAWeighting(2, weights=[1.0, 0.0], cov_targets=[0.0, 2.0], lambda_lr=1.0, statistic="on_policy")
    assert float(w.weights()[1]) == pytest.approx(1e-8)
    r = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    stats = ObjectiveStats(rewards=r, group_size=2, lengths=torch.ones(4), extras={"signal": torch.zeros(4)})
    for _ in range(3):
        w.update(stats)
    expected = math.exp(math.log(1e-8) + 3 * 1.0 * 2.0)  # three deficits of 2 at η = 1 (covariance 0)
    assert float(w.weights()[1]) == pytest.approx(expected, rel=1e-5)
