"""The preference sampler: one w ∈ Δ^K per prompt of a generation batch, a pure function of (seed, batch index).

Batch b's draws come from NumPy's generator seeded with the sequence ``[seed, b]`` (``numpy.random.SeedSequence``),
so they depend on nothing else (not on how many draws came before, nor on the process): every rank draws the whole
global batch and takes its own rows, and a resumed run that restores the batch counter (:meth:`state_dict`, written
to ``mo_state.pt``) draws exactly what an uninterrupted run draws.

* ``dirichlet``: w ~ Dir(α) (α = 1: uniform on the simplex, the sampling of Panacea, arXiv 2402.02030);
* ``list``: one of the given preferences (normalised to sum to 1), uniformly;
* ``grid``: one point of the simplex grid with N points per axis (:func:`mo_align.sweep.axes.simplex_grid`),
  uniformly.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import torch

from mo_align.simplex import simplex_grid


SAMPLER_FIELDS = ("sampler", "alpha", "preferences", "points_per_axis", "template", "placement", "seed")


class PreferenceSampler:
    """Draws the preferences of the training generation batches, in order (``batches`` drawn so far).

    Args:
        spec (`dict`): the normalised ``preference_conditioning`` block (:func:`~mo_align.preferences.spec.parse_block`).
        num_objectives (`int`): K.
    """

    def __init__(self, spec: dict[str, Any], num_objectives: int) -> None:
        self.spec, self.kind, self.seed = spec, spec["sampler"], int(spec["seed"])
        k = num_objectives
        if self.kind == "dirichlet":
            alpha = spec["alpha"]
            self.alpha = np.asarray(alpha if isinstance(alpha, list) else [alpha] * k, dtype=np.float64)
            self.points = None
        else:
            raw = spec["preferences"] if self.kind == "list" else simplex_grid(k, spec["points_per_axis"] - 1)
            points = np.asarray(raw, dtype=np.float64)
            self.points = points / points.sum(axis=1, keepdims=True)
        self.num_objectives = k
        self.batches = 0

    def draw(self, batch: int, n: int) -> torch.Tensor:
        """The (n, K) preferences of generation batch ``batch`` (float64 rows on the simplex). Pure."""
        rng = np.random.default_rng([self.seed, int(batch)])
        if self.points is None:
            w = rng.dirichlet(self.alpha, size=n)
        else:
            w = self.points[rng.integers(0, len(self.points), size=n)]
        if not np.isfinite(w).all() or not np.allclose(w.sum(axis=1), 1.0):
            raise FloatingPointError(f"the preference sampler drew {w.tolist()[:2]}..., not points of the simplex")
        return torch.from_numpy(np.ascontiguousarray(w))

    def next_batch(self, n: int) -> torch.Tensor:
        """The next training batch's (n, K) preferences; advances the counter."""
        w = self.draw(self.batches, n)
        self.batches += 1
        return w

    def identity(self) -> str:
        """What must match for a checkpoint's draws to continue this run's (sampler, its parameters, template,
        placement and seed), as a canonical JSON string."""
        return json.dumps({k: self.spec.get(k) for k in SAMPLER_FIELDS}, sort_keys=True)

    def state_dict(self) -> dict[str, Any]:
        return {"identity": self.identity(), "batches": self.batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        theirs = state.get("identity")
        if theirs != self.identity():
            raise ValueError(
                f"the checkpoint's preference_conditioning {theirs} differs from this run's {self.identity()}: its "
                "draws cannot continue (resume with the block it was trained with)"
            )
        batches = state.get("batches")
        if not isinstance(batches, int) or isinstance(batches, bool) or batches < 0:
            raise ValueError(f"the checkpoint's preference sampler counter is {batches!r}, not an integer >= 0")
        self.batches = batches


def uniform(k: int) -> list[float]:
    return [1.0 / k] * k


def normalised(w: list[float]) -> list[float]:
    total = math.fsum(w)
    return [x / total for x in w]
