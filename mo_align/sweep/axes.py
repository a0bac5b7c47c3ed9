"""A sweep's preference axis — a list of vectors, a simplex grid or Dirichlet draws — validated and counted before
any vector is built (a grid has C(N + K − 1, K − 1) vectors; ``dirichlet: {n: 1e8}`` would hold 10⁸ of them)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from mo_align.simplex import simplex_grid as simplex_grid  # re-exported: mo_align.sweep.spec, mo_align.sweep
from mo_align.text import excerpt


MAX_ALPHA = 1e6  # larger Dirichlet concentrations draw all-zero rows in float64


class SweepError(ValueError):
    """A sweep file that cannot run (one line naming the file and the field)."""


def dirichlet_points(k: int, n: int, seed: int, alpha: float = 1.0) -> list[list[float]]:
    draws = np.random.default_rng(seed).dirichlet([alpha] * k, size=n)
    return [[round(float(x), 4) for x in row] for row in draws]


def fail(path: str, where: str, message: str) -> SweepError:
    return SweepError(f"{path}: {where}: {message}")


Axis = tuple[int, Callable[[], list[list[float]]]]  # (number of preference vectors, a function building them)


def preference_axis(raw: Any, k: int, path: str) -> Axis | None:
    """The validated preference axis as (count, build): counted without building it (a grid of C(N + K − 1, K − 1)
    vectors or n Dirichlet draws can be far too many to hold)."""
    if raw is None:
        return None
    if isinstance(raw, list):
        prefs = []
        for i, w in enumerate(raw):
            ok = isinstance(w, list) and all(isinstance(x, int | float) and not isinstance(x, bool) for x in w)
            if not ok or len(w) != k:
                raise fail(path, f"preferences[{i}]", f"{excerpt(w)} is not a list of {k} numbers (one per objective)")
            if any(x < 0 or not math.isfinite(x) for x in w) or sum(w) <= 0:
                raise fail(path, f"preferences[{i}]", f"{excerpt(w)}: entries must be finite, >= 0, and not all 0")
            prefs.append([float(x) for x in w])
        return len(prefs), lambda: prefs
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in ("grid", "dirichlet"):
        raise fail(path, "preferences", "expected {grid: N}, {dirichlet: {n: M, seed: S}} or a list of vectors")
    if "grid" in raw:
        steps = raw["grid"]
        if not is_int(steps) or not 1 <= steps <= 100:
            raise fail(path, "preferences.grid", f"{excerpt(steps)}: an integer number of steps in [1, 100]")
        return math.comb(steps + k - 1, k - 1), lambda: simplex_grid(k, steps)
    spec = raw["dirichlet"]
    unknown = sorted(str(key) for key in set(spec) - {"n", "seed", "alpha"}) if isinstance(spec, dict) else None
    if unknown is None or unknown or not is_int(spec.get("n")) or spec["n"] < 1:
        why = f"unknown key(s) {excerpt(unknown)}" if unknown else "n (an integer >= 1) is required"
        raise fail(path, "preferences.dirichlet", f"{why}; keys: n, seed, alpha")
    n, seed, alpha = spec["n"], spec.get("seed", 0), spec.get("alpha", 1.0)
    if not is_int(seed) or seed < 0:
        raise fail(path, "preferences.dirichlet.seed", f"{excerpt(seed)}: an integer >= 0")
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or not 0 < alpha <= MAX_ALPHA:
        raise fail(path, "preferences.dirichlet.alpha", f"{excerpt(alpha)}: a finite number in (0, {MAX_ALPHA:g}]")
    return n, lambda: checked_draws(dirichlet_points(k, n, seed, float(alpha)), path)


def checked_draws(draws: list[list[float]], path: str) -> list[list[float]]:
    for w in draws:
        if not all(math.isfinite(x) for x in w) or sum(w) <= 0:
            raise fail(path, "preferences.dirichlet.alpha", f"Dir(alpha) drew {w}, not a point of the simplex")
    return draws


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
