"""Points of the probability simplex: the preference grids of a sweep (:mod:`mo_align.sweep`) and the mixing
coefficients of a soup (:mod:`mo_align.soup`). Standard library only, shared by both without either importing the
other."""

from __future__ import annotations

import itertools


__all__ = ["simplex_grid"]


def simplex_grid(k: int, steps: int) -> list[list[float]]:
    """Every w = i / steps with non-negative integers i summing to steps, vertices first in lexicographic order."""
    out = []
    for cut in itertools.combinations(range(steps + k - 1), k - 1):  # stars and bars
        bounds = (-1, *cut, steps + k - 1)
        counts = [bounds[j + 1] - bounds[j] - 1 for j in range(k)]
        out.append([round(c / steps, 4) for c in counts])
    return sorted(out, reverse=True)
