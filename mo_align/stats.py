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

Interference (issue 15): an objective interferes when its Δ interval lies entirely below 0 (``high < 0``) while
the optimised scalar rose (``interfering``). Everything is seeded (``numpy.random.default_rng(seed)``): the same
inputs and seed give the same interval.
"""

from __future__ import annotations

import math
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

    def format(self, digits: int = 3, signed: bool = True) -> str:
        """``+0.123 [+0.080, +0.160]``."""
        spec = f"{'+' if signed else ''}.{digits}f"
        return f"{self.estimate:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"


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


def interfering(deltas: Mapping[str, CI], scalar_delta: float) -> list[str]:
    """Objectives whose Δ interval lies entirely below 0 while the optimised scalar rose (``scalar_delta > 0``)."""
    if not (math.isfinite(scalar_delta) and scalar_delta > 0):
        return []
    return [name for name, ci in deltas.items() if ci.below_zero]
