"""Lagrangian primal–dual: maximise a primary objective subject to E[r_k] ≥ b_k on the others, by dual ascent.

A_i = A_ip + Σ_{k≠p} λ_k A_ik on the per-objective normalised advantages A (advantage space: each objective goes
through the estimator on its own, NaN entries give 0), so w = (1 at the primary p, λ elsewhere), unnormalised.
State: the multipliers λ ∈ R^{K−1}_{≥0}, initialised to 0. On every training batch, *before* its advantages are
formed (``update_first``, as the reference), one projected dual-ascent step on the full gathered batch:
λ_k ← clip(λ_k + η (b_k − mean_i r_ik), 0, λ_max). The logged Lagrangian value is −R̄_p + Σ_k λ_k (b_k − R̄_k),
with the updated λ. Evaluation batches do not move λ.

Paper: https://huggingface.co/papers/2602.06869 (baseline "Lagrangian"); reference ``ray_trainer_lagrangian.py``
and ``dp_actor.update_policy_lagrangian``; stochastic primal–dual optimisation
with multiple objectives (Mahdavi, Yang & Jin, NeurIPS 2013).

Deviations from the reference:
    1. The primary objective is configurable (``primary``); the reference hard-codes the first one.
    2. An optional upper bound ``max_lambda`` (the reference's λ is unbounded; ``None`` keeps that).
    3. A scalar ``thresholds`` broadcasts to every constraint; K = 1 is allowed (no constraints, A = A_p).
    4. λ is checkpointed (the reference keeps no state on resume); a constraint with no non-NaN reward in the
       batch keeps its λ. The estimator is a recipe choice (the reference uses REINFORCE++).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from mo_align.weightings.base import GENERATION, ObjectiveStats, StepSize, Weighting


def dual_step(
    lambdas: torch.Tensor, constraint_means: torch.Tensor, thresholds: torch.Tensor, lr: float
) -> torch.Tensor:
    """One projected dual-ascent step λ ← max(0, λ + lr (b − mean)); a NaN mean leaves that λ unchanged.

    Args:
        lambdas (`torch.Tensor`): (C,) current multipliers λ ≥ 0.
        constraint_means (`torch.Tensor`): (C,) batch means R̄_k of the constrained objectives.
        thresholds (`torch.Tensor`): (C,) targets b_k of the constraints E[r_k] ≥ b_k.
        lr (`float`): dual step size η.

    Returns:
        (C,) updated multipliers.
    """
    step = (lr * (thresholds.to(lambdas) - constraint_means.to(lambdas))).nan_to_num(0.0)
    return torch.clamp(lambdas + step, min=0.0)


class LagrangianWeighting(Weighting, key="lagrangian"):
    """Primary objective with weight 1 plus dual-ascent multipliers λ on the constrained objectives.

    Args:
        num_objectives (`int`): K.
        primary (`int`, *optional*, defaults to `0`): index of the primary objective in ``reward_funcs``.
        thresholds (`float` or `list[float]`, *optional*, defaults to `0.9`): targets b of the constraints
            E[r_k] ≥ b_k, one per non-primary objective in ``reward_funcs`` order (K − 1 values); a scalar
            applies to all.
        dual_lr (`float`, *optional*, defaults to `0.01`): dual step size η.
        max_lambda (`float`, *optional*, defaults to `None`): upper bound on every λ_k; ``None`` = unbounded.
    """

    lab_order = 3  # in the lab's and the benchmarks' lists (mo_align.lab.catalog)
    step_size = StepSize(
        kwarg="dual_lr",
        cadence=GENERATION,
        law="linear",
        note="λ_k ← max(0, λ_k + η (b_k − R̄_k)): linear until the projection at 0 binds",
        row=1,
    )

    ranges: ClassVar[dict[str, str]] = {
        "primary": "[0, 1e6]",
        "thresholds": "[-1e6, 1e6]",
        "dual_lr": "[0, 100]",
        "max_lambda": "[0, 1e6]",
    }
    space = "advantage"
    update_first = True
    # The primary objective is an index: relabelling objectives so that another one lands on it changes the
    # problem. Equivariance holds only for permutations that keep the primary objective in place.
    permutation_equivariant: ClassVar[bool] = False

    def __init__(
        self,
        num_objectives: int,
        *,
        primary: int = 0,
        thresholds: list[float] | float = 0.9,
        dual_lr: float = 0.01,
        max_lambda: float | None = None,
    ) -> None:
        super().__init__(num_objectives)
        k = num_objectives
        if not isinstance(primary, int) or isinstance(primary, bool) or not 0 <= primary < k:
            raise ValueError(f"lagrangian: primary must be an objective index in [0, {k}), got {primary!r}")
        b = [float(thresholds)] * (k - 1) if isinstance(thresholds, int | float) else [float(x) for x in thresholds]
        if len(b) != k - 1:
            raise ValueError(
                f"lagrangian: thresholds has {len(b)} entries but there are {k - 1} constraints "
                f"(one per objective other than primary={primary})"
            )
        if not all(math.isfinite(x) for x in b):
            raise ValueError(f"lagrangian: thresholds must be finite, got {b}")
        if not math.isfinite(dual_lr) or dual_lr < 0:
            raise ValueError(f"lagrangian: dual_lr must be finite and >= 0, got {dual_lr}")
        if max_lambda is not None and (not math.isfinite(max_lambda) or max_lambda < 0):
            raise ValueError(f"lagrangian: max_lambda must be None or finite and >= 0, got {max_lambda}")
        self.primary = primary
        self.thresholds = thresholds if isinstance(thresholds, int | float) else b
        self.dual_lr = float(dual_lr)
        self.max_lambda = None if max_lambda is None else float(max_lambda)
        self._constraints = [j for j in range(k) if j != primary]  # objective index of each constraint
        self._b = torch.tensor(b, dtype=torch.float64)
        self._lambda = torch.zeros(k - 1, dtype=torch.float64)

    def weights(self) -> torch.Tensor:
        w = torch.ones(self.num_objectives, dtype=torch.float64)
        w[self._constraints] = self._lambda
        return w.float()

    def update(self, stats: ObjectiveStats) -> dict[str, float]:
        means = torch.nanmean(stats.rewards.double(), dim=0)  # R̄ (K,)
        lam = dual_step(self._lambda, means[self._constraints], self._b, self.dual_lr)
        self._lambda = lam if self.max_lambda is None else lam.clamp(max=self.max_lambda)
        gaps = self._b - means[self._constraints]  # b_k − R̄_k > 0: constraint violated
        names = stats.objective_names if len(stats.objective_names) == self.num_objectives else None
        metrics = {"primary_loss": float(-means[self.primary])}
        for c, j in enumerate(self._constraints):
            key = names[j] if names else str(j)
            metrics[f"lambda/{key}"] = float(self._lambda[c])
            metrics[f"constraint_gap/{key}"] = float(gaps[c])
        metrics["lagrangian_value"] = float(-means[self.primary] + (self._lambda * gaps).nansum())
        return metrics

    def hyperparameters(self) -> dict[str, Any]:
        keys = ("primary", "thresholds", "dual_lr", "max_lambda")
        return {key: getattr(self, key) for key in keys}

    def state_dict(self) -> dict[str, Any]:
        return {"lambda": self._lambda.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._lambda = state["lambda"].detach().clone().double()
