"""mo_align.stats: hand-computable bootstrap cases, an exact-enumeration oracle, coverage on simulated data; the
seed-level statistics (t distribution, t intervals, Holm, two-stage bootstrap) against closed forms and scipy."""

import itertools
import math

import numpy as np
import pytest

from mo_align.stats import (
    CI,
    bootstrap_mean_ci,
    hierarchical_delta_ci,
    holm_adjust,
    holm_levels,
    interfering,
    mean_paired_delta_ci,
    paired_delta_ci,
    resample_means,
    t_cdf,
    t_ppf,
    t_test,
    t_two_sided_p,
)


def test_constant_data_has_a_degenerate_interval():
    assert bootstrap_mean_ci([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]) == CI(0.5, 0.5, 0.5)


def test_a_constant_shift_is_recovered_exactly_by_the_paired_interval():
    """final = start + 0.25 on every sample: every paired replicate is exactly 0.25, whatever the prompts drawn."""
    start = np.array([[0.0, 1.0, 0.5, 0.0], [1.0, 1.0, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0]])
    assert paired_delta_ci(start, start + 0.25, seed=3) == pytest.approx(CI(0.25, 0.25, 0.25), abs=1e-12)
    # unpaired, the same shift would carry the prompts' spread: the pairing is what removes it
    assert bootstrap_mean_ci(start + 0.25).high - bootstrap_mean_ci(start + 0.25).low > 0.3


def test_samples_of_a_prompt_are_resampled_together():
    """Two prompts, all samples of one equal: replicate means are 0, 1/2, 1 with probability 1/4, 1/2, 1/4, so the
    95 % interval is [0, 1]. Resampling the 8 samples independently would give [0.125, 0.875]-ish instead."""
    values = [[0.0] * 4, [1.0] * 4]
    reps = resample_means(values, n_boot=4000, seed=1)
    assert set(np.unique(reps)) == {0.0, 0.5, 1.0}
    assert abs(np.mean(reps == 0.0) - 0.25) < 0.03 and abs(np.mean(reps == 0.5) - 0.5) < 0.03
    assert bootstrap_mean_ci(values, n_boot=4000, seed=1) == CI(0.5, 0.0, 1.0)
    flat = bootstrap_mean_ci(np.array(values).reshape(-1, 1), n_boot=4000, seed=1)  # 8 "prompts" of one sample
    assert 0.1 <= flat.low <= 0.25 and 0.75 <= flat.high <= 0.9


def test_nan_scores_are_ignored_as_the_trainer_nanmean():
    ci = bootstrap_mean_ci([[1.0, math.nan], [0.0, 0.0]])
    assert ci.estimate == pytest.approx(1 / 3)
    # replicates: both rows {1}/1 = 1, both rows 0 -> 0, one of each -> 1/3
    assert set(np.round(resample_means([[1.0, math.nan], [0.0, 0.0]], n_boot=500), 6)) == {0.0, round(1 / 3, 6), 1.0}
    assert math.isnan(bootstrap_mean_ci([[math.nan]]).estimate)


def test_bootstrap_distribution_matches_exact_enumeration():
    """Oracle: all 4^4 equally likely resamples of 4 prompt means; the Monte-Carlo replicates' mean, variance and
    quantiles converge to the exact bootstrap distribution's (variance = σ̂²/n with the 1/n variance, ≈ 0.0203)."""
    x = np.array([0.0, 0.25, 0.5, 1.0])
    exact = np.array([x[list(idx)].mean() for idx in itertools.product(range(4), repeat=4)])
    assert exact.var() == pytest.approx(x.var() / 4)
    reps = resample_means(x, n_boot=40000, seed=0)
    assert reps.mean() == pytest.approx(exact.mean(), abs=0.005)
    assert reps.var() == pytest.approx(exact.var(), rel=0.03)
    ci = bootstrap_mean_ci(x, n_boot=40000, seed=0)
    # the interval's ends sit where the exact CDF crosses 2.5 % and 97.5 % (within one support step)
    assert np.mean(exact < ci.low - 1e-9) <= 0.025 + 0.01 and np.mean(exact <= ci.low + 0.0625) >= 0.025
    assert np.mean(exact > ci.high + 1e-9) <= 0.025 + 0.01 and np.mean(exact >= ci.high - 0.0625) >= 0.025


def test_seeded_and_level_widens_the_interval():
    rng = np.random.default_rng(0)
    vals = rng.integers(0, 2, size=(64, 4)).astype(float)
    assert bootstrap_mean_ci(vals, seed=5) == bootstrap_mean_ci(vals, seed=5)
    narrow, wide = bootstrap_mean_ci(vals, level=0.5), bootstrap_mean_ci(vals, level=0.99)
    assert wide.low < narrow.low < narrow.estimate < narrow.high < wide.high


def _clustered(rng, n, s, p_prompt):
    """(n, s) Bernoulli scores whose success probability varies by prompt (correlated samples of one prompt)."""
    return (rng.random((n, s)) < p_prompt[:, None]).astype(float)


def test_coverage_on_simulated_clustered_evaluations():
    """Over 200 simulated 256 × 4 evaluations with prompt-level difficulty, the 95 % intervals of the mean and of a
    paired Δ (true Δ = −0.1) cover the truth 91–99 % of the time (binomial SE of the coverage ≈ 1.5 %)."""
    rng = np.random.default_rng(42)
    n, s, trials = 256, 4, 200
    cover_mean = cover_delta = 0
    below = 0
    for t in range(trials):
        p = rng.beta(1.0, 1.0, size=n)  # true mean 0.5
        start = _clustered(rng, n, s, p)
        final = _clustered(rng, n, s, np.clip(p - 0.1, 0.0, 1.0))
        true_delta = float(np.mean(np.clip(p - 0.1, 0.0, 1.0)) - np.mean(p))  # the Δ of these prompts' probabilities
        m = bootstrap_mean_ci(start, n_boot=500, seed=t)
        d = paired_delta_ci(start, final, n_boot=500, seed=t)
        cover_mean += m.low <= 0.5 <= m.high
        cover_delta += d.low <= true_delta <= d.high
        below += d.below_zero
    assert 0.91 <= cover_mean / trials <= 0.99
    assert 0.91 <= cover_delta / trials <= 0.99
    assert below / trials > 0.95  # a −0.09 change on 256 × 4 is detected almost always (power)


def test_interfering_needs_both_intervals_the_scalar_above_and_the_objective_below_zero():
    deltas = {"accuracy": CI(0.2, 0.1, 0.3), "conciseness": CI(-0.3, -0.4, -0.2), "clarity": CI(-0.05, -0.1, 0.01)}
    assert interfering(deltas, CI(0.05, 0.01, 0.09)) == ["conciseness"]
    # the scalar's point estimate rose but its interval straddles 0: no verdict (the old rule read the point only)
    assert interfering(deltas, CI(0.05, -0.01, 0.11)) == []
    assert interfering(deltas, CI(-0.01, -0.02, 0.0)) == []
    assert interfering(deltas, CI(math.nan, math.nan, math.nan)) == []
    assert CI(-0.3, -0.4, -0.2).below_zero and not CI(-0.05, -0.1, 0.01).below_zero and CI(0.2, 0.1, 0.3).above_zero
    assert CI(-0.1234, -0.2, 0.05).format(digits=3) == "-0.123 [-0.200, +0.050]"
    assert CI(-0.1234, -0.2, 0.05).format() == "-0.12 [-0.20, +0.05]"  # the interval's precision: half-width 0.12


def test_bad_input_is_refused_with_the_field_named():
    with pytest.raises(ValueError, match="same prompts"):
        paired_delta_ci([[1.0]] * 3, [[1.0]] * 4)
    with pytest.raises(ValueError, match="level"):
        bootstrap_mean_ci([1.0, 0.0], level=1.5)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_mean_ci([1.0, 0.0], n_boot=0)
    with pytest.raises(ValueError, match="values"):
        bootstrap_mean_ci([])


def test_mean_paired_delta_of_one_run_is_its_paired_delta():
    rng = np.random.default_rng(3)
    start, final = rng.integers(0, 2, (40, 4)).astype(float), rng.integers(0, 2, (40, 4)).astype(float)
    assert mean_paired_delta_ci([(start, final)], seed=7) == paired_delta_ci(start, final, seed=7)


def test_mean_paired_delta_of_constant_shifts_is_their_mean():
    """Run 1 shifts every score by +0.1, run 2 by −0.3: every replicate's mean is exactly −0.1."""
    start = np.array([[0.0, 0.5], [1.0, 0.25], [0.5, 0.5]])
    ci = mean_paired_delta_ci([(start, start + 0.1), (start, start - 0.3)], seed=2)
    assert ci == pytest.approx(CI(-0.1, -0.1, -0.1), abs=1e-12)


def test_mean_paired_delta_draws_the_same_prompts_for_every_run():
    """Antithetic runs: run 2's per-prompt change is minus run 1's, so with one prompt draw shared by both runs
    every replicate of the mean is exactly 0; independent draws would spread it (about ±0.1 here)."""
    rng = np.random.default_rng(0)
    start = np.full((64, 2), 0.5)
    change = rng.choice([-0.5, 0.5], size=(64, 1)) * np.ones((1, 2))
    ci = mean_paired_delta_ci([(start, start + change), (start, start - change)], n_boot=500)
    assert ci == pytest.approx(CI(0.0, 0.0, 0.0), abs=1e-12)
    single = paired_delta_ci(start, start + change, n_boot=500)
    assert single.high - single.low > 0.15  # one run alone does carry the prompts' spread


def test_mean_paired_delta_refuses_runs_on_different_prompts():
    with pytest.raises(ValueError, match="same prompts"):
        mean_paired_delta_ci([([[1.0]] * 3, [[1.0]] * 3), ([[1.0]] * 4, [[1.0]] * 4)])
    with pytest.raises(ValueError, match="pairs"):
        mean_paired_delta_ci([])


# ---- seed-level statistics -----------------------------------------------------------------------------------------
def test_t_quantiles_and_cdf_match_closed_forms_and_scipy():
    """df 1 (Cauchy): t_q = tan(π (q − 1/2)); df 2: t_q = (2q − 1) / √(2q(1 − q)), P(|T| ≥ t) = 1 − t / √(2 + t²);
    every df against scipy.stats.t (in the dev environment)."""
    from scipy import stats as scipy_stats

    for q in (0.6, 0.975, 0.995, 0.999375, 0.025):
        assert t_ppf(q, 1) == pytest.approx(math.tan(math.pi * (q - 0.5)), rel=1e-9)
        assert t_ppf(q, 2) == pytest.approx((2 * q - 1) / math.sqrt(2 * q * (1 - q)), rel=1e-9)
    assert t_ppf(0.975, 2) == pytest.approx(4.302652729911275, rel=1e-9)  # the textbook table's 4.303
    assert t_two_sided_p(2 * math.sqrt(3), 2) == pytest.approx(1 - 2 * math.sqrt(3) / math.sqrt(14), rel=1e-12)
    assert t_ppf(0.5, 7) == 0.0 and t_two_sided_p(math.inf, 3) == 0.0 and t_two_sided_p(0.0, 3) == pytest.approx(1.0)
    for df in (1, 2, 3, 7, 30, 200):
        for q in (0.55, 0.9, 0.975, 0.995, 0.9999, 0.01):
            assert t_ppf(q, df) == pytest.approx(scipy_stats.t.ppf(q, df), rel=1e-9), (q, df)
        for t in (-12.0, -2.5, -0.3, 0.0, 0.7, 1.96, 4.0, 40.0):
            assert t_cdf(t, df) == pytest.approx(scipy_stats.t.cdf(t, df), abs=1e-12), (t, df)
    with pytest.raises(ValueError, match="quantile"):
        t_ppf(1.0, 3)


def test_t_test_over_seeds_by_hand():
    """[0.1, 0.2, 0.3]: mean 0.2, s = 0.1, s/√3; the 95 % interval 0.2 ± 4.302653 · 0.1/√3; t = 2√3, p = 1 − 2√3/√14."""
    res = t_test([0.1, 0.2, 0.3])
    half = 4.302652729911275 * 0.1 / math.sqrt(3)
    assert (res.estimate, res.low, res.high) == pytest.approx((0.2, 0.2 - half, 0.2 + half), rel=1e-9)
    assert res.p == pytest.approx(1 - 2 * math.sqrt(3) / math.sqrt(14), rel=1e-9) and res.n == 3
    assert res.ci == pytest.approx(CI(0.2, 0.2 - half, 0.2 + half), rel=1e-9)
    one = t_test([0.4, math.nan])  # NaN dropped: one seed, no interval and no test
    assert one.estimate == 0.4 and one.n == 1 and math.isnan(one.low) and math.isnan(one.p)
    assert t_test([0.05, 0.05]).p == 0.0 and t_test([0.0, 0.0]).p == 1.0  # no spread
    assert t_test([0.05, 0.05])[:3] == pytest.approx((0.05, 0.05, 0.05))
    wide = t_test([0.1, 0.2, 0.3], level=1 - 0.05 / 8)  # a Holm step's level: the df-2 closed form
    q = 1 - 0.05 / 16
    assert wide.high - 0.2 == pytest.approx((2 * q - 1) / math.sqrt(2 * q * (1 - q)) * 0.1 / math.sqrt(3), rel=1e-9)


def test_holm_by_hand_and_its_intervals_agree_with_the_adjusted_p_values():
    """p = (0.01, 0.04, 0.03, —, 0.005), m = 4: sorted 0.005 · 4 = 0.02, 0.01 · 3 = 0.03, 0.03 · 2 = 0.06,
    max(0.06, 0.04 · 1) = 0.06. Step-down at 0.05: 0.005 ≤ 0.05/4, 0.01 ≤ 0.05/3, 0.03 > 0.05/2 stops: the first two
    are rejected at their steps' levels, the rest get the stopping level 0.05/2."""
    p = [0.01, 0.04, 0.03, math.nan, 0.005]
    adjusted, levels = holm_adjust(p), holm_levels(p)
    assert adjusted[:3] + adjusted[4:] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and math.isnan(adjusted[3])
    assert levels[:3] + levels[4:] == pytest.approx([0.05 / 3, 0.05 / 2, 0.05 / 2, 0.05 / 4]) and math.isnan(levels[3])
    assert holm_adjust([0.2]) == [0.2] and holm_adjust([]) == []
    rng = np.random.default_rng(0)
    for _ in range(300):  # invariant: a test passes its level exactly when its adjusted p-value is <= 0.05
        p = rng.uniform(0, 0.1, size=rng.integers(1, 12)) ** rng.uniform(1, 3)
        assert [pi <= a for pi, a in zip(p, holm_levels(p))] == [q <= 0.05 for q in holm_adjust(p)]


def test_hierarchical_bootstrap_resamples_seeds_then_prompts():
    """(a) Two seeds shifted by exactly 0 and 1 on every prompt: only the seed draw matters, replicates 0, 1/2, 1
    with probability 1/4, 1/2, 1/4, so the 95 % interval is [0, 1]. (b) One seed whose change is −1/2 on one prompt
    and +1/2 on the other: only the prompt draw matters, the same three-point law scaled to [−1/2, 1/2]."""
    baseline = np.array([0.2, 0.4, 0.6, 0.8])
    ci = hierarchical_delta_ci(np.stack([baseline, baseline + 1.0]), baseline, n_boot=4000, seed=1)
    assert ci == pytest.approx(CI(0.5, 0.0, 1.0))
    one = hierarchical_delta_ci([[0.0, 1.0]], [0.5, 0.5], n_boot=4000, seed=1)
    assert one == pytest.approx(CI(0.0, -0.5, 0.5))
    with pytest.raises(ValueError, match="finals"):
        hierarchical_delta_ci([[0.0, 1.0]], [0.5, 0.5, 0.5])
