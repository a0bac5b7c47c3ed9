"""Confidence intervals for sampled evaluation: percentile bootstrap over prompts, samples of a prompt kept together.

An evaluation scores ``s`` sampled completions for each of ``n`` held-out prompts; the samples of one prompt are
correlated (they share the prompt's difficulty), so the unit of resampling is the *prompt*. Notation: ``x_ij`` is the
score of sample ``j`` of prompt ``i`` (``NaN`` = no score, ignored as the trainer's ``nanmean`` does).

* Estimate: ``m = Σ_ij x_ij / #{finite x_ij}``, the plain mean over every finite score (for complete data, the mean
  of the per-prompt means).
* One bootstrap replicate draws ``n`` prompt indices ``i_1 … i_n`` uniformly with replacement and computes the same
  ratio over the drawn prompts' rows: ``m* = Σ_b Σ_j x_{i_b j} / Σ_b #{finite x_{i_b j}}``.
* ``bootstrap_mean_ci``: the percentile interval ``[q_{α/2}(m*), q_{1-α/2}(m*)]`` with ``α = 1 − level``
  (numpy's default linear-interpolation quantile).
* ``paired_delta_ci``: start and final evaluations of the *same* prompts (same order); each replicate uses the same
  prompt indices for both, ``Δ* = m*_final − m*_start``, so the prompt-difficulty variance cancels.
* ``mean_paired_delta_ci``: the mean over R runs (seeds) evaluated on the same prompts of their paired Δ,
  ``Δ̄ = (1/R) Σ_r Δ_r``; each replicate draws the prompt indices once and applies them to every run,
  ``Δ̄* = (1/R) Σ_r Δ*_r``. The interval measures the evaluation noise of the seeds' mean (the prompts drawn), not the
  spread between seeds.

Seed-level statistics (training randomness, not only evaluation noise): every seed contributes one number (its Δ, or
its paired difference with another algorithm at the same seed), and

* ``t_test``: the mean over the ``n`` seeds with the Student t interval ``x̄ ± t_{n−1, 1−α/2} · s / √n`` (``s`` the
  sample standard deviation, ``n − 1`` in its denominator) and the two-sided p-value of ``x̄ = 0``; the t
  distribution is evaluated through the regularized incomplete beta function,
  ``P(|T| ≥ t) = I_{ν/(ν+t²)}(ν/2, 1/2)`` (Abramowitz & Stegun 26.7.1; the beta function's continued fraction,
  A&S 26.5.8, evaluated by the modified Lentz method);
* ``holm_adjust`` / ``holm_levels``: Holm's step-down adjustment (Holm 1979) of a family of ``m`` p-values, and the
  per-test level that makes each t interval agree with it: sorted ``p_(1) ≤ … ≤ p_(m)``, the procedure rejects
  ``p_(i)`` while ``p_(j) ≤ α/(m − j + 1)`` for every ``j ≤ i``; a rejected test gets its interval at level
  ``1 − α/(m − i + 1)``, every other test at the level where the procedure stopped, so an interval excludes 0
  exactly when its Holm-adjusted p-value is ≤ α;
* ``hierarchical_delta_ci``: a two-stage bootstrap (seeds with replacement, then, for each drawn seed, prompts with
  replacement; Davison & Hinkley 1997, §3.8) of the seeds' mean Δ against a per-prompt baseline.

Interference: an objective interferes when its Δ interval lies entirely below 0 (``high < 0``) while the fixed
scalar's Δ interval lies entirely above 0 (``interfering``). Everything is seeded
(``numpy.random.default_rng(seed)``): the same inputs and seed give the same interval.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np


DEFAULT_LEVEL = 0.95
DEFAULT_BOOT = 2000


class CI(NamedTuple):
    """A point estimate with its two-sided confidence interval."""

    estimate: float
    low: float
    high: float

    @property
    def below_zero(self) -> bool:
        """The whole interval lies below 0 (a significant decrease)."""
        return self.high < 0

    @property
    def above_zero(self) -> bool:
        """The whole interval lies above 0 (a significant increase)."""
        return self.low > 0

    def format(self, digits: int | None = None, signed: bool = True) -> str:
        """``+0.123 [+0.080, +0.160]``: by default to the interval's precision (:func:`ci_decimals`)."""
        return format_interval(self.estimate, self.low, self.high, signed, digits)


def ci_decimals(low: float | None, high: float | None, default: int = 3) -> int:
    """Decimals that show an interval's half-width ``(high − low) / 2`` to 2 significant digits (0.0315 → 3, 0.25
    → 2, 0.002 → 4; at most 6); ``default`` for a missing or zero-width interval (width below 1e-9 relative)."""
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return default
    half = (high - low) / 2.0
    if half <= 1e-9 * max(1.0, abs(low), abs(high)):  # zero width, up to the float noise of a mean ± 0
        return default
    return max(0, min(6, 1 - math.floor(math.log10(half))))


def format_bounds(low: float | None, high: float | None, signed: bool = True) -> str:
    """``[low, high]`` with the decimals of :func:`ci_decimals`; ``—`` for a missing interval."""
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return "—"
    spec = f"{'+' if signed else ''}.{ci_decimals(low, high)}f"
    return f"[{low:{spec}}, {high:{spec}}]"


def format_interval(
    estimate: float | None, low: float | None, high: float | None, signed: bool = True, digits: int | None = None
) -> str:
    """``estimate [low, high]`` with the decimals of :func:`ci_decimals` (or ``digits``); ``—`` for a missing value,
    the estimate alone when the interval is missing."""
    if estimate is None or not math.isfinite(estimate):
        return "—"
    d = ci_decimals(low, high) if digits is None else digits
    spec = f"{'+' if signed else ''}.{d}f"
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return f"{estimate:{spec}}"
    return f"{estimate:{spec}} [{low:{spec}}, {high:{spec}}]"


def _clusters(values: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt (sum of finite scores, count of finite scores) from an (n,) or (n, s) array."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name}: expected a non-empty (prompts,) or (prompts, samples) array, got {arr.shape}")
    finite = np.isfinite(arr)
    return np.where(finite, arr, 0.0).sum(axis=1), finite.sum(axis=1).astype(np.float64)


def _check(level: float, n_boot: int) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")


def _ratio(sums: np.ndarray, counts: np.ndarray) -> np.ndarray | float:
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def resample_means(values: Any, n_boot: int = DEFAULT_BOOT, seed: int = 0, baseline: Any = None) -> np.ndarray:
    """The ``n_boot`` bootstrap replicates ``m*`` (or ``m*_values − m*_baseline`` with a paired ``baseline``)."""
    _check(0.5, n_boot)
    sums, counts = _clusters(values, "values")
    idx = np.random.default_rng(seed).integers(0, len(sums), size=(n_boot, len(sums)))
    reps = _ratio(sums[idx].sum(axis=1), counts[idx].sum(axis=1))
    if baseline is not None:
        b_sums, b_counts = _clusters(baseline, "baseline")
        if len(b_sums) != len(sums):
            raise ValueError(f"paired evaluations need the same prompts: {len(b_sums)} start vs {len(sums)} final")
        reps = reps - _ratio(b_sums[idx].sum(axis=1), b_counts[idx].sum(axis=1))
    return reps


def _interval(estimate: float, reps: np.ndarray, level: float) -> CI:
    reps = reps[np.isfinite(reps)]
    if not math.isfinite(estimate) or reps.size == 0:
        return CI(math.nan, math.nan, math.nan)
    low, high = np.quantile(reps, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return CI(float(estimate), float(low), float(high))


def bootstrap_mean_ci(values: Any, level: float = DEFAULT_LEVEL, n_boot: int = DEFAULT_BOOT, seed: int = 0) -> CI:
    """Mean of an evaluation with its percentile-bootstrap CI, resampling prompts (rows) with their samples.

    ``values``: (prompts,) per-prompt scores, or (prompts, samples) scores; ``NaN`` entries are ignored.
    """
    _check(level, n_boot)
    sums, counts = _clusters(values, "values")
    return _interval(float(_ratio(sums.sum(), counts.sum())), resample_means(values, n_boot, seed), level)


def paired_delta_ci(
    start: Any, final: Any, level: float = DEFAULT_LEVEL, n_boot: int = DEFAULT_BOOT, seed: int = 0
) -> CI:
    """Δ = mean(final) − mean(start) over the same prompts (row i of both is prompt i), with its paired CI.

    The sample counts per prompt may differ between the two evaluations; the prompt count may not.
    """
    _check(level, n_boot)
    return _interval(_paired_estimate(start, final), resample_means(final, n_boot, seed, baseline=start), level)


def _paired_estimate(start: Any, final: Any) -> float:
    s_sums, s_counts = _clusters(start, "start")
    f_sums, f_counts = _clusters(final, "final")
    if len(s_sums) != len(f_sums):
        raise ValueError(f"paired evaluations need the same prompts: {len(s_sums)} start vs {len(f_sums)} final")
    return float(_ratio(f_sums.sum(), f_counts.sum()) - _ratio(s_sums.sum(), s_counts.sum()))


def mean_paired_delta_ci(pairs: Any, level: float = DEFAULT_LEVEL, n_boot: int = DEFAULT_BOOT, seed: int = 0) -> CI:
    """Mean of the runs' paired Δ (``pairs`` = ``[(start, final), ...]``, every array over the same prompts in the
    same order) with the joint prompt-bootstrap CI of the module docstring. One bootstrap ``seed`` for every run makes
    :func:`resample_means` draw the same prompt indices for each (same seed, same prompt count)."""
    _check(level, n_boot)
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs: need at least one (start, final) pair")
    counts = {len(_clusters(start, "start")[0]) for start, _ in pairs}
    if len(counts) > 1:
        raise ValueError(f"pairs: every run must be evaluated on the same prompts, got prompt counts {sorted(counts)}")
    deltas = [_paired_estimate(start, final) for start, final in pairs]
    reps = np.mean([resample_means(final, n_boot, seed, baseline=start) for start, final in pairs], axis=0)
    return _interval(float(np.mean(deltas)), reps, level)


def interfering(deltas: Mapping[str, CI], scalar: CI) -> list[str]:
    """Objectives whose Δ interval lies entirely below 0 while the fixed scalar's Δ interval lies entirely above 0
    (both intervals from the same procedure). The one definition of interference: the seed level (t intervals over
    seeds), a run (its paired prompt-bootstrap intervals), the monitor's ``eval_drop`` events and every table that
    says "interference" call it. A missing (NaN) interval decides nothing."""
    if not scalar.above_zero:
        return []
    return [name for name, ci in deltas.items() if ci.below_zero]


def run_preference(hyperparameters: Mapping[str, Any] | None, k: int) -> tuple[list[float], str]:
    """The fixed scalar's weights of one run and where they came from: its weighting's ``weights`` hyperparameter
    when that is K finite numbers ≥ 0 with a positive sum (linear, CTWA's base preference, ...), else ``1/K`` each."""
    w = (hyperparameters or {}).get("weights")
    if isinstance(w, list | tuple) and len(w) == k:
        try:
            values = [float(v) for v in w]
        except (TypeError, ValueError):
            values = []
        if values and all(math.isfinite(v) and v >= 0 for v in values) and sum(values) > 0:
            return values, "the run's weights"
    return [1.0 / k] * k, "equal weights: the run records no weights"


# ---- seed-level statistics -----------------------------------------------------------------------------------------
class TTest(NamedTuple):
    """The seeds' mean with its t interval, the two-sided p-value of "mean = 0" and the number of seeds."""

    estimate: float
    low: float
    high: float
    p: float
    n: int

    @property
    def ci(self) -> CI:
        return CI(self.estimate, self.low, self.high)


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (A&S 26.5.8), modified Lentz: 1 / (1 + d_1 / (1 + d_2 / (1 + …)))."""
    tiny = 1e-300

    def guard(v: float) -> float:
        return v if abs(v) > tiny else tiny

    c, d = 1.0, 1.0 / guard(1.0 - (a + b) * x / (a + 1.0))
    h = d
    for m in range(1, 1000):
        even = m * (b - m) * x / ((a + 2 * m - 1.0) * (a + 2 * m))
        odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1.0))
        for coef in (even, odd):
            d = 1.0 / guard(1.0 + coef * d)
            c = guard(1.0 + coef / c)
            h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 ≤ x ≤ 1."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    if x > (a + 1.0) / (a + b + 2.0):  # the fraction converges fast below this point: use the symmetry
        return 1.0 - betainc(b, a, 1.0 - x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    return math.exp(log_front) * _beta_fraction(a, b, x) / a


def t_two_sided_p(t: float, df: float) -> float:
    """``P(|T| ≥ |t|)`` for Student's t with ``df`` degrees of freedom (A&S 26.7.1)."""
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def t_cdf(t: float, df: float) -> float:
    """``P(T ≤ t)``."""
    tail = t_two_sided_p(t, df) / 2.0
    return 1.0 - tail if t > 0 else tail


def t_ppf(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t: bisection on ``x = df / (df + t²)`` for the two-sided tail ``2 min(q, 1−q)``
    (I_x(df/2, 1/2) increases with x), then ``t = √(df (1 − x) / x)`` with the sign of ``q − 1/2``."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {q}")
    if q == 0.5:
        return 0.0
    tail = 2.0 * min(q, 1.0 - q)
    lo, hi = 0.0, 1.0
    for _ in range(300):
        mid = (lo + hi) / 2.0
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if betainc(df / 2.0, 0.5, mid) < tail else (lo, mid)
    x = (lo + hi) / 2.0
    t = math.sqrt(df * (1.0 - x) / x)
    return t if q > 0.5 else -t


def t_test(values: Any, level: float = DEFAULT_LEVEL) -> TTest:
    """Mean of ``values`` (one number per seed; non-finite ones left out) with its t interval and p-value.

    Fewer than 2 values: no interval and no p-value (``NaN``). Values that are all equal: a zero-width interval and
    ``p = 0`` (``1`` when they are all 0)."""
    _check(level, 1)
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return TTest(math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n < 2:
        return TTest(mean, math.nan, math.nan, math.nan, n)
    se = float(x.std(ddof=1)) / math.sqrt(n)
    half = t_ppf((1.0 + level) / 2.0, n - 1) * se
    p = (0.0 if mean != 0 else 1.0) if se == 0 else t_two_sided_p(mean / se, n - 1)
    return TTest(mean, mean - half, mean + half, p, n)


def _ranked(pvalues: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    finite = np.flatnonzero(np.isfinite(p))
    return p, finite[np.argsort(p[finite], kind="stable")]


def holm_adjust(pvalues: Any) -> list[float]:
    """Holm-adjusted p-values over the finite entries (``m`` = their count): sorted ascending,
    ``p̃_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j))``; non-finite entries (no test) stay ``NaN``."""
    p, order = _ranked(pvalues)
    out = np.full(p.shape, math.nan)
    m, running = len(order), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return [float(v) for v in out]


def holm_levels(pvalues: Any, alpha: float = 1.0 - DEFAULT_LEVEL) -> list[float]:
    """Per test, the α of its interval under Holm's procedure at family level ``alpha`` (module docstring): the
    step's ``α/(m − i + 1)`` for a rejected test, the stopping step's for the rest; ``NaN`` where there is no test."""
    p, order = _ranked(pvalues)
    out = np.full(p.shape, math.nan)
    m, stopped = len(order), None
    for rank, i in enumerate(order):
        step = alpha / (m - rank)
        if stopped is None and p[i] > step:
            stopped = step
        out[i] = step if stopped is None else stopped
    return [float(v) for v in out]


def hierarchical_delta_ci(
    finals: Any, baseline: Any, level: float = DEFAULT_LEVEL, n_boot: int = DEFAULT_BOOT, seed: int = 0
) -> CI:
    """The seeds' mean Δ = mean_s (mean_i f_si − mean_i b_i) with a two-stage bootstrap interval: each replicate
    draws the seeds with replacement, then for every drawn seed the prompts with replacement, and scores the drawn
    seed's final and the baseline on the same drawn prompts. ``finals``: (seeds, prompts) per-prompt final means;
    ``baseline``: (prompts,) per-prompt baseline means (``NaN`` prompts ignored)."""
    _check(level, n_boot)
    f, b = np.asarray(finals, dtype=np.float64), np.asarray(baseline, dtype=np.float64).ravel()
    if f.ndim != 2 or f.shape[0] == 0 or f.shape[1] != b.size or b.size == 0:
        raise ValueError(f"finals: expected (seeds, {b.size}) per-prompt means, got {f.shape}")
    diff = f - b[None, :]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        estimate = float(np.nanmean(np.nanmean(diff, axis=1)))
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, f.shape[0], size=(n_boot, f.shape[0]))
    prompts = rng.integers(0, b.size, size=(n_boot, f.shape[0], b.size))
    drawn = diff[seeds[:, :, None], prompts]  # (n_boot, seeds, prompts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a replicate of only NaN prompts is NaN, then dropped
        reps = np.nanmean(np.nanmean(drawn, axis=2), axis=1)
    return _interval(estimate, reps, level)
