"""PAMA: Pareto multi-objective alignment with Noon-PPO advantages and a closed-form convex combination.

Noon PPO keeps only non-negative advantages, A⁺_ik = max(A_ik, 0) (per-objective normalised advantages). Each
objective's batch value is the token-weighted mean a_k = Σ_i L_i A⁺_ik / Σ_i L_i. PAMA's Theorem 1 gives the convex
combination λ ∈ Δ_K minimising (Σ_k λ_k a_k)²: its value s* = Π_[min a, max a](0) is the projection of 0 onto the
hull, attained by λ on argmin a (all a > 0), argmax a (all a < 0), or the two-point mix of argmin/argmax with
Σ λ_k a_k = 0 (otherwise). The policy is updated with the combined Noon advantages A_i = Σ_k λ_k A⁺_ik. No state.

Args:
    num_objectives (`int`): K.
    reference_scalar (`bool`, *optional*, defaults to `False`): reproduce the reference: every completion of
        the batch gets the same scalar advantage s* (per-completion reward information is discarded).

Paper: https://huggingface.co/papers/2508.07768 (PAMA); baseline of https://huggingface.co/papers/2602.06869.

Deviations from the reference:
    1. By default the combination λ* is applied to the per-completion Noon advantages, the paper's intent; the
       reference applied the single scalar s* to every token (``reference_scalar: true`` restores it).
    2. The importance ratio and trust region are TRL's (π_θ / π_old with ``epsilon``); the reference took the ratio
       against π_ref and masked tokens where π_old/π_ref > 1 + ε when computing a_k (not available without a
       reference model; a_k here uses every completion token).
"""

from __future__ import annotations

import torch

from mo_align.weightings.base import ObjectiveStats, StepSize, Weighting
from mo_align.weightings.papers import PAMA


def pama_scalar(a: torch.Tensor) -> torch.Tensor:
    """s* = the projection of 0 onto [min_k a_k, max_k a_k] (PAMA Theorem 1); a 0-dim tensor."""
    lo, hi = a.min(), a.max()
    return torch.clamp(torch.zeros((), dtype=a.dtype), lo, hi)


def pama_weights(a: torch.Tensor) -> torch.Tensor:
    """λ* ∈ Δ_K attaining Σ_k λ_k a_k = s* (ties go to the lowest index)."""
    lam = torch.zeros_like(a)
    lo, hi = int(torch.argmin(a)), int(torch.argmax(a))
    if a[lo] >= 0:
        lam[lo] = 1.0
    elif a[hi] <= 0:
        lam[hi] = 1.0
    else:  # a[lo] < 0 < a[hi]: mix so that t a_lo + (1 − t) a_hi = 0
        t = a[hi] / (a[hi] - a[lo])
        lam[lo], lam[hi] = t, 1 - t
    return lam


class PAMAWeighting(Weighting, key="pama"):
    __doc__ = __doc__
    lab_order = 10  # in the lab's and the benchmarks' lists (mo_align.lab.catalog)
    step_size = StepSize(note="closed-form λ* from each batch: no state", row=6)
    papers = (PAMA,)
    space = "advantage"
    update_first = True  # λ* is a function of this batch: log the weights actually used

    def __init__(self, num_objectives: int, *, reference_scalar: bool = False) -> None:
        super().__init__(num_objectives)
        self.reference_scalar = reference_scalar
        self._last = torch.full((num_objectives,), 1.0 / num_objectives)

    def objective_values(self, stats: ObjectiveStats) -> torch.Tensor:
        """a (K,): token-weighted batch mean of the Noon advantages max(A_k, 0)."""
        noon = stats.objective_advantages().clamp(min=0).double()
        w = stats.lengths.double().clamp(min=0)
        return (noon * w[:, None]).sum(0) / w.sum().clamp(min=1)

    def weights(self) -> torch.Tensor:
        return self._last.clone()

    def combine(self, stats: ObjectiveStats) -> torch.Tensor:
        a = self.objective_values(stats)
        noon = stats.objective_advantages().clamp(min=0)
        if self.reference_scalar:
            out = torch.full((noon.shape[0],), float(pama_scalar(a)))
            out[torch.isnan(stats.rewards).all(dim=1)] = 0.0
            return out
        return (noon.double() @ pama_weights(a)).float()

    def update(self, stats: ObjectiveStats) -> dict[str, float]:
        a = self.objective_values(stats)
        self._last = pama_weights(a).float()
        names = stats.objective_names or tuple(str(i) for i in range(self.num_objectives))
        out = {"s_star": float(pama_scalar(a)), "a_min": float(a.min()), "a_max": float(a.max())}
        out.update({f"a/{n}": float(a[i]) for i, n in enumerate(names)})
        return out

    def state_dict(self) -> dict:
        return {"last": self._last.clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._last = state["last"].clone()
