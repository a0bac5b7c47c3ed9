"""Points of the probability simplex: the preference grids of a sweep (:mod:`mo_align.sweep`), the mixing
coefficients of a soup (:mod:`mo_align.soup`) and the preferences of preference-conditioned training
(:mod:`mo_align.preferences`). Standard library only, shared by them without any of them importing another."""

from __future__ import annotations

import itertools


__all__ = ["MAX_ALPHA", "simplex_grid"]

MAX_ALPHA = 1e6  # larger Dirichlet concentrations draw all-zero rows in float64


def simplex_grid(k: int, steps: int) -> list[list[float]]:
    """Every w = i / steps with non-negative integers i summing to steps, vertices first in lexicographic order."""
    out = []
    for cut in itertools.combinations(range(steps + k - 1), k - 1):  # stars and bars
        bounds = (-1, *cut, steps + k - 1)
        counts = [bounds[j + 1] - bounds[j] - 1 for j in range(k)]
        out.append([round(c / steps, 4) for c in counts])
    return sorted(out, reverse=True)
