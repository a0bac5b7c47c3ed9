"""Weighted Tchebycheff scalarization: optimise the worst weighted shortfall from an ideal point z.

s_i = −max_k w_k (z_k − r_ik) per completion (reward space; NaN entries are skipped in the max, all-NaN rows are
unscorable), then the configured estimator (GRPO group normalisation or REINFORCE++ batch whitening). The ideal
point z is fixed, the scored batch's max (``batch_max``) or by default the running max of training rewards,
z_k ← max(z_k, max_i r_ik), updated *before* the batch is scored (``update_first``: a training batch is scored
against a z that includes it). Evaluation never moves z; objectives not observed yet use the batch max. State: z.

GDPO: the max compares shortfalls across objectives, so it is taken on GDPO's per-objective group z-scores
Z_ik = (r_ik − mean_g r_k) / (std_g r_k + 1e-4) against the group's best, s_i = −max_k w_k (max_{j∈g} Z_jk − Z_ik)
(a zero-variance objective has no shortfall), then GDPO's batch z-score; ``ideal`` only enters the logged score.

Preference-conditioned training (:mod:`mo_align.preferences`): each row's own preference w_i takes the place of w
in s_i = −max_k w_ik (z_k − r_ik) (and in the GDPO mode), with the same ideal point z.

Paper: https://huggingface.co/papers/2602.06869 (baseline "Tchebycheff"); reference ``ray_trainer_tchebycheff.py``
(the reference code); the classic weighted Tchebycheff scalarization (Bowman, 1976).

Deviations from the reference:
    1. Per completion: the reference takes the max at every token of its token-level reward tensor (zero except
       at the last token), under REINFORCE++ a per-token length penalty ≈ −max_k w_k z_k (no token-level mode).
    2. Evaluation batches do not move the running max (the reference's validation updates it).
    3. z is the max of the rewards themselves; the reference's also covers its token tensor's zeros, so z ≥ 0.
    4. Weights need not sum to exactly 1 (the reference asserts it); z is checkpointed; the GDPO mode is new.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch

from mo_align.advantages import nanstd
from mo_align.weightings.base import GENERATION, ObjectiveStats, StepSize, Weighting


IdealMode = Literal["running_max", "batch_max"]


def nan_column_max(rewards: torch.Tensor) -> torch.Tensor:
    """(N, K) -> (K,) per-objective max over the non-NaN entries; −inf (the identity of max) for a column with none."""
    return torch.where(torch.isnan(rewards), -math.inf, rewards).amax(dim=0)


def tchebycheff_scores(rewards: torch.Tensor, weights: torch.Tensor, ideal: torch.Tensor) -> torch.Tensor:
    """s_i = −max_k w_k (z_k − r_ik), skipping entries whose shortfall is NaN.

    Args:
        rewards (`torch.Tensor`): (N, K) rewards, NaN = not applicable.
        weights (`torch.Tensor`): (K,) non-negative objective weights w.
        ideal (`torch.Tensor`): (K,) ideal point z, or (N, K) for a per-row ideal point.

    Returns:
        (N,) scores; NaN for a row with no defined objective (unscorable).
    """
    gap = weights.to(rewards) * (ideal.to(rewards) - rewards)  # (N, K) weighted shortfalls
    skip = torch.isnan(gap)
    s = -torch.where(skip, -math.inf, gap).amax(dim=1)
    return torch.where(skip.all(dim=1), math.nan, s)


def group_tchebycheff_advantages(rewards: torch.Tensor, weights: torch.Tensor, group_size: int) -> torch.Tensor:
    """GDPO mode, (N, K) -> (N,): Tchebycheff on group z-scores against the group's best, then a batch z-score."""
    n, k = rewards.shape
    if group_size < 1 or n % group_size:
        raise ValueError(f"number of rows ({n}) is not a multiple of group_size ({group_size})")
    grouped = rewards.reshape(-1, group_size, k)
    mean = torch.nanmean(grouped, dim=1, keepdim=True)
    std = nanstd(grouped, dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(mean)
    z = (grouped - mean) / (std + 1e-4)  # (P, G, K); NaN where the group has < 2 values of that objective
    best = torch.where(torch.isnan(z), -math.inf, z).amax(dim=1, keepdim=True).expand_as(z)
    s = tchebycheff_scores(z.reshape(n, k), weights, best.reshape(n, k))
    spread = nanstd(s) if n > 1 else torch.zeros(())
    return torch.nan_to_num((s - torch.nanmean(s)) / (spread + 1e-4), nan=0.0)


class TchebycheffWeighting(Weighting, key="tchebycheff"):
    """Weighted Tchebycheff with fixed weights w and a running (or batch, or fixed) ideal point z.

    Args:
        num_objectives (`int`): K.
        weights (`list[float]`, *optional*, defaults to `None`): one non-negative weight per objective, in the
            order of ``reward_funcs``; ``None`` means uniform 1/K.
        ideal (`str` or `list[float]`, *optional*, defaults to `"running_max"`): the ideal point z:
            ``"running_max"`` (per-objective max over all training batches so far), ``"batch_max"`` (max of the
            batch being scored) or a fixed list of K values.
    """

    lab_order = 1  # in the lab's and the benchmarks' lists (mo_align.lab.catalog)
    step_size = StepSize(cadence=GENERATION, note="running-max ideal point: state without a step size", row=5)

    ranges: ClassVar[dict[str, str]] = {"weights": "[0, 1e6]", "ideal": "[-1e6, 1e6]"}
    update_first = True
    accepts_row_preferences = True

    def __init__(
        self,
        num_objectives: int,
        *,
        weights: list[float] | None = None,
        ideal: IdealMode | list[float] = "running_max",
    ) -> None:
        super().__init__(num_objectives)
        k = num_objectives
        w = [1.0 / k] * k if weights is None else [float(x) for x in weights]
        if len(w) != k:
            raise ValueError(f"tchebycheff: weights has {len(w)} entries but there are {k} objectives")
        if any(not math.isfinite(x) or x < 0 for x in w) or sum(w) == 0:
            raise ValueError(f"tchebycheff: weights must be finite, non-negative and not all zero, got {w}")
        fixed = None if isinstance(ideal, str) else [float(z) for z in ideal]
        ok = len(fixed) == k and all(map(math.isfinite, fixed)) if fixed else ideal in ("running_max", "batch_max")
        if not ok:
            raise ValueError(f"tchebycheff: ideal must be running_max, batch_max or {k} finite floats, got {ideal!r}")
        self._ideal = ideal if fixed is None else fixed
        self._fixed = None if fixed is None else torch.tensor(fixed, dtype=torch.float32)
        self._w = torch.tensor(w, dtype=torch.float32)
        self._z = torch.full((k,), -math.inf)  # running max of training rewards; −inf = not observed yet

    def weights(self) -> torch.Tensor:
        return self._w.clone()

    def ideal_point(self, rewards: torch.Tensor) -> torch.Tensor:
        """The (K,) ideal point z used to score the (N, K) ``rewards`` (pure)."""
        if self._fixed is not None:
            return self._fixed.clone()
        batch = nan_column_max(rewards.float())
        if self._ideal == "batch_max":
            return batch
        return torch.where(self._z == -math.inf, batch, self._z)

    def scalarize_with(self, rewards: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return tchebycheff_scores(rewards, weights, self.ideal_point(rewards))

    def combine_with(self, stats: ObjectiveStats, weights: torch.Tensor) -> torch.Tensor:
        if stats.estimator == "gdpo":
            return group_tchebycheff_advantages(stats.rewards, weights, stats.group_size)
        return stats.normalize(self.scalarize_with(stats.rewards, weights))

    def scalarize_rows(self, rewards: torch.Tensor, preferences: torch.Tensor) -> torch.Tensor:
        return self.scalarize_with(rewards, preferences)  # (N, K) weights broadcast against the shortfalls

    def combine_rows(self, stats: ObjectiveStats, preferences: torch.Tensor) -> torch.Tensor:
        return self.combine_with(stats, preferences)

    def update(self, stats: ObjectiveStats) -> dict[str, float]:
        self._z = torch.maximum(self._z, nan_column_max(stats.rewards.float()))
        names = stats.objective_names if len(stats.objective_names) == self.num_objectives else None
        z = self.ideal_point(stats.rewards)
        metrics = {f"ideal/{names[k] if names else k}": float(z[k]) for k in range(self.num_objectives)}
        metrics["score_mean"] = float(torch.nanmean(self.scalarize(stats.rewards)))
        return metrics

    def hyperparameters(self) -> dict[str, Any]:
        return {"weights": self._w.tolist(), "ideal": self._ideal}

    def state_dict(self) -> dict[str, Any]:
        return {"running_max": self._z.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._z = state["running_max"].detach().clone().float()
