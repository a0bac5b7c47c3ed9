"""Pareto dominance and hypervolume of final points, every objective maximised.

Both delegate to ``moocore`` (pinned): :func:`non_dominated` to ``moocore.is_nondominated`` on the finite rows,
:func:`hypervolume` to ``moocore.hypervolume`` on the negated rows (moocore minimises).
"""

from __future__ import annotations

from typing import Any

import moocore
import numpy as np


__all__ = ["hypervolume", "non_dominated"]


def non_dominated(points: Any) -> np.ndarray:
    """Boolean mask of the rows of ``points`` (n × m) that no other row dominates, every objective maximised.

    Row a dominates row b when a >= b in every objective and a > b in at least one; equal rows (duplicates) do not
    dominate each other, so all copies of a non-dominated point are kept (moocore's ``keep_weakly=True``). A row with
    a NaN or an infinity is never non-dominated and dominates nothing: moocore sees only the finite rows.
    """
    p = np.asarray(points, dtype=float)
    if p.ndim == 1:
        p = p.reshape(1, -1)
    if p.ndim != 2:
        raise ValueError(f"points must be an (n, m) array, got shape {p.shape}")
    finite = np.isfinite(p).all(axis=1)
    if p.shape[1] == 0:
        return finite  # no objective: no row is better than another anywhere
    mask = np.zeros(p.shape[0], dtype=bool)
    if finite.any():
        mask[finite] = moocore.is_nondominated(p[finite], maximise=True, keep_weakly=True)
    return mask


def hypervolume(points: Any, reference: Any) -> float:
    """Hypervolume of ``points`` (n × m, maximised) above ``reference`` (m,), via moocore on negated values.

    Rows with a NaN, and rows not strictly better than the reference in every objective, add no volume. An empty
    set has hypervolume 0.
    """
    ref = np.asarray(reference, dtype=float).ravel()
    p = np.asarray(points, dtype=float)
    if p.size == 0:
        return 0.0
    if p.ndim == 1:
        p = p.reshape(1, -1)
    if p.ndim != 2 or p.shape[1] != ref.size:
        raise ValueError(f"points of shape {p.shape} do not match a reference point of {ref.size} objectives")
    if not np.isfinite(ref).all():
        raise ValueError(f"the reference point must be finite, got {ref.tolist()}")
    p = p[np.isfinite(p).all(axis=1)]
    p = p[(p > ref).all(axis=1)]
    if p.shape[0] == 0:
        return 0.0

    return float(moocore.hypervolume(-p, ref=-ref))
