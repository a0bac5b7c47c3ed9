"""A sweep's preference axis — a list of vectors, a simplex grid or Dirichlet draws — validated and counted before
any vector is built (a grid has C(N + K − 1, K − 1) vectors; ``dirichlet: {n: 1e8}`` would hold 10⁸ of them)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from mo_align.simplex import MAX_ALPHA
from mo_align.simplex import simplex_grid as simplex_grid  # re-exported: mo_align.sweep.spec, mo_align.sweep
from mo_align.sweep.schema import SweepError, checked, fail, parse
from mo_align.text import excerpt


__all__ = ["Axis", "Dirichlet", "SweepError", "fail", "preference_axis", "simplex_grid"]


@dataclass
class Dirichlet:
    """``preferences: {dirichlet: {n: M, seed: S, alpha: A}}``: M draws from Dir(A·1), numpy's default_rng(S)."""

    NOT_MAPPING: ClassVar[str] = "n (an integer >= 1) is required; keys: {keys}"

    n: int = checked(NOT_MAPPING.format(keys="n, seed, alpha"), lambda n: n >= 1, None, at_parent=True)
    seed: int = checked("an integer >= 0", lambda seed: seed >= 0, default=0)
    alpha: float = checked(f"a finite number in (0, {MAX_ALPHA:g}]", lambda a: 0 < a <= MAX_ALPHA, default=1.0)


def dirichlet_points(k: int, n: int, seed: int, alpha: float = 1.0) -> list[list[float]]:
    draws = np.random.default_rng(seed).dirichlet([alpha] * k, size=n)
    return [[round(float(x), 4) for x in row] for row in draws]


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
    spec = parse(Dirichlet, raw["dirichlet"], path, "preferences.dirichlet")
    return spec.n, lambda: checked_draws(dirichlet_points(k, spec.n, spec.seed, float(spec.alpha)), path)


def checked_draws(draws: list[list[float]], path: str) -> list[list[float]]:
    for w in draws:
        if not all(math.isfinite(x) for x in w) or sum(w) <= 0:
            raise fail(path, "preferences.dirichlet.alpha", f"Dir(alpha) drew {w}, not a point of the simplex")
    return draws


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
