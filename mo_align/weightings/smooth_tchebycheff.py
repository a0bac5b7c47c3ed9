"""Smooth Tchebycheff: linear scalarization whose softmax weights follow the objectives' shortfalls by mirror descent.

s_i = Σ_k w_k r_ik with w = softmax(ℓ / T) (reward space; NaN entries skipped, all-NaN rows unscorable), then the
configured estimator (GRPO, REINFORCE++, or GDPO's normalise-then-sum with the same w). State: logits ℓ (K,),
initialised to log p for the normalised preference p (default uniform), and the running per-objective max z of
training rewards. After a training batch is scored with the current w (the update acts from the next batch):
z_k ← max(z_k, max_i r_ik), R̄_k = mean_i r_ik, and the online mirror-descent step ℓ_k ← ℓ_k + η p_k (z_k − R̄_k),
so the objective furthest below its ideal point gains weight. Evaluation batches do not move the state.

Preference-conditioned training (:mod:`mo_align.preferences`) gives each row its own preference q: since each OMD
step is p ⊙ (z − R̄), ℓ = log p + η p ⊙ D with D the accumulated shortfalls Σ_t (z_t − R̄_t) (kept in the state), so
the row is weighted w(q) = softmax((log q + η q ⊙ D) / T), which for q = p is the strategy's own w; then
s_i = Σ_k w_k(q_i) r_ik and the estimator (GDPO: Σ_k w_k(q_i) Z_ik on its per-objective group z-scores).

This is the reference's online, weight-space realisation of Smooth Tchebycheff (its "Eq. (17)/(18)"); the original
STCH scalarization is the log-sum-exp smoothing μ log Σ_k exp(p_k (z_k − R_k) / μ) of the Tchebycheff max, whose
gradient weights are a softmax of the weighted shortfalls.

Paper: https://huggingface.co/papers/2602.06869 (reports Smooth Tchebycheff in place of classic Tchebycheff);
reference ``ray_trainer_smooth_tchebycheff.py`` (added upstream later); Lin et al. 2024, "Smooth Tchebycheff
Scalarization for Multi-Objective Optimization", https://huggingface.co/papers/2402.19078.

Deviations from the reference:
    1. p is normalised to sum to 1 in the OMD step as well as in the initialisation (the reference multiplies by
       the raw weights, which its ``sum == 1`` assert makes equal).
    2. Only the running-max ideal point (the reference's script setting); its inherited fixed / batch-max options
       are not offered. ℓ and z are kept in float64 and checkpointed (the reference keeps no state on resume).
    3. NaN rewards are skipped in the batch means and maxima (an objective with no data this batch keeps its ℓ).
    4. The weights always start from the preference (the reference's ``init: preference``, its script's setting);
       the code's default ``init: uniform`` is not offered. ``omd_lr`` defaults to the script's 0.3 (code: 1.0).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from mo_align.weightings.base import GENERATION, ObjectiveStats, StepSize, Weighting, nan_weighted_sum
from mo_align.weightings.papers import SMOOTH_TCHEBYCHEFF
from mo_align.weightings.tchebycheff import nan_column_max


_EPS = 1e-8  # floor on the initial weights before the log, as the reference


class SmoothTchebycheffWeighting(Weighting, key="smooth_tchebycheff"):
    """Softmax weights moved by online mirror descent on the weighted shortfalls p_k (z_k − R̄_k).

    Args:
        num_objectives (`int`): K.
        preference (`list[float]`, *optional*, defaults to `None`): non-negative preference p per objective (order
            of ``reward_funcs``), normalised to sum to 1; sets the initial weights and scales each OMD step.
            ``None`` means uniform.
        omd_lr (`float`, *optional*, defaults to `0.3`): OMD step size η (the reference script's value).
        temperature (`float`, *optional*, defaults to `1.0`): softmax temperature T of w = softmax(ℓ / T).
    """

    lab_order = 2  # in the lab's and the benchmarks' lists (mo_align.lab.catalog)
    step_size = StepSize(
        kwarg="omd_lr",
        cadence=GENERATION,
        law="linear",
        note="logits ℓ_k += η p_k (z_k − R̄_k): mirror-descent steps, linear in η",
        row=2,
    )

    papers = (SMOOTH_TCHEBYCHEFF,)
    ranges: ClassVar[dict[str, str]] = {"preference": "[0, 1e6]", "omd_lr": "[0, 100]", "temperature": "(0, 1e6]"}
    accepts_row_preferences = True

    def __init__(
        self,
        num_objectives: int,
        *,
        preference: list[float] | None = None,
        omd_lr: float = 0.3,
        temperature: float = 1.0,
    ) -> None:
        super().__init__(num_objectives)
        k = num_objectives
        p = [1.0] * k if preference is None else [float(x) for x in preference]
        if len(p) != k:
            raise ValueError(f"smooth_tchebycheff: preference has {len(p)} entries but there are {k} objectives")
        if any(not math.isfinite(x) or x < 0 for x in p) or sum(p) == 0:
            raise ValueError(f"smooth_tchebycheff: preference must be finite, non-negative, not all zero, got {p}")
        if not math.isfinite(omd_lr) or omd_lr < 0:
            raise ValueError(f"smooth_tchebycheff: omd_lr must be finite and >= 0, got {omd_lr}")
        if not math.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"smooth_tchebycheff: temperature must be finite and > 0, got {temperature}")
        self.preference = None if preference is None else p
        self.omd_lr = float(omd_lr)
        self.temperature = float(temperature)
        self._p = torch.tensor(p, dtype=torch.float64) / sum(p)
        self._logits = torch.log(self._p.clamp_min(_EPS))  # ℓ
        self._z = torch.full((k,), -math.inf, dtype=torch.float64)  # running max; −inf = not observed yet
        self._shortfall = torch.zeros(k, dtype=torch.float64)  # D = Σ_t (z_t − R̄_t), finite terms only

    def weights(self) -> torch.Tensor:
        return torch.softmax(self._logits / self.temperature, dim=0).float()

    def row_weights(self, preferences: torch.Tensor) -> torch.Tensor:
        """w(q_i) = softmax((log q_i + η q_i ⊙ D) / T) for each row's preference q_i, (N, K) -> (N, K)."""
        q = preferences.double()
        logits = torch.log(q.clamp_min(_EPS)) + self.omd_lr * q * self._shortfall
        return torch.softmax(logits / self.temperature, dim=1).float()

    def scalarize_rows(self, rewards: torch.Tensor, preferences: torch.Tensor) -> torch.Tensor:
        return nan_weighted_sum(rewards, self.row_weights(preferences))

    def combine_rows(self, stats: ObjectiveStats, preferences: torch.Tensor) -> torch.Tensor:
        w = self.row_weights(preferences)
        if stats.estimator == "gdpo":
            return nan_weighted_sum(stats.objective_advantages(), w).nan_to_num(0.0)
        return stats.normalize(nan_weighted_sum(stats.rewards, w))

    def update(self, stats: ObjectiveStats) -> dict[str, float]:
        r = stats.rewards.double()
        self._z = torch.maximum(self._z, nan_column_max(r))
        means = torch.nanmean(r, dim=0)  # R̄ (K,), NaN for an objective with no data in this batch
        gap = self._z - means
        self._shortfall = self._shortfall + torch.where(torch.isfinite(gap), gap, 0.0)
        deficit = self._p * gap
        deficit = torch.where(torch.isfinite(deficit), deficit, 0.0)
        self._logits = self._logits + self.omd_lr * deficit
        names = stats.objective_names if len(stats.objective_names) == self.num_objectives else None
        metrics: dict[str, float] = {}
        for k in range(self.num_objectives):
            key = names[k] if names else str(k)
            metrics[f"ideal/{key}"] = float(self._z[k])
            metrics[f"objective/{key}"] = float(means[k])
            metrics[f"deficit/{key}"] = float(deficit[k])
        return metrics

    def hyperparameters(self) -> dict[str, Any]:
        return {"preference": self.preference, "omd_lr": self.omd_lr, "temperature": self.temperature}

    def state_dict(self) -> dict[str, Any]:
        return {"logits": self._logits.clone(), "running_max": self._z.clone(), "shortfall": self._shortfall.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._logits = state["logits"].detach().clone().double()
        self._z = state["running_max"].detach().clone().double()
        shortfall = state.get("shortfall")  # absent from checkpoints written before conditioning existed
        self._shortfall = torch.zeros_like(self._z) if shortfall is None else shortfall.detach().clone().double()
