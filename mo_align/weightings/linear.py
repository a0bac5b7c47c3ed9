"""Linear scalarization with fixed preference weights — the baseline every other strategy is compared with.

s_i = Σ_k w_k r_ik (reward space; NaN entries skipped, all-NaN rows unscorable), then the configured estimator:
GRPO group normalisation (equals TRL's ``sum_then_normalize`` bit for bit), REINFORCE++ batch whitening, or GDPO
per-objective normalisation (equals TRL's ``normalize_then_sum``). No state.

Preference-conditioned training (:mod:`mo_align.preferences`) gives each row its own preference w_i (the G rows of
a prompt share it): A_i = Σ_k w_ik A_ik on the per-objective advantages of the estimator (group z-scores for grpo
and gdpo, batch-whitened columns for reinforce_pp), so rows scored under different preferences share no scale.

Paper: arXiv 2602.06869 (baseline "Linear"); reference ``ray_trainer_multiobjective.py``.

Deviations from the reference:
    1. The weights need not sum to exactly 1 (the reference asserts ``sum(weights) == 1`` with float equality);
       any finite, non-negative, not-all-zero vector is accepted, as TRL's ``reward_weights`` are.
    2. The estimator is a recipe choice (``advantage_estimator``); the reference hard-codes GRPO for Linear only.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from mo_align.weightings.base import ObjectiveStats, StepSize, Weighting, nan_weighted_sum


class LinearWeighting(Weighting, key="linear"):
    """Fixed weights w (default uniform 1/K).

    Args:
        num_objectives (`int`): K.
        weights (`list[float]`, *optional*, defaults to `None`): one non-negative weight per objective, in the
            order of ``reward_funcs``; ``None`` means uniform 1/K.
    """

    lab_order = 0  # in the lab's and the benchmarks' lists (mo_align.lab.catalog)
    step_size = StepSize(note="fixed weights", row=11)

    ranges: ClassVar[dict[str, str]] = {"weights": "[0, 1e6]"}
    accepts_row_preferences = True

    def __init__(self, num_objectives: int, *, weights: list[float] | None = None) -> None:
        super().__init__(num_objectives)
        if weights is None:
            weights = [1.0 / num_objectives] * num_objectives
        weights = [float(w) for w in weights]
        if len(weights) != num_objectives:
            raise ValueError(
                f"linear: weights has {len(weights)} entries but there are {num_objectives} objectives "
                "(one weight per reward function)"
            )
        if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) == 0:
            raise ValueError(f"linear: weights must be finite, non-negative and not all zero, got {weights}")
        self._w = torch.tensor(weights, dtype=torch.float32)

    def weights(self) -> torch.Tensor:
        return self._w.clone()

    def scalarize_rows(self, rewards: torch.Tensor, preferences: torch.Tensor) -> torch.Tensor:
        return nan_weighted_sum(rewards, preferences)

    def combine_rows(self, stats: ObjectiveStats, preferences: torch.Tensor) -> torch.Tensor:
        return nan_weighted_sum(stats.objective_advantages(), preferences).nan_to_num(0.0)

    def hyperparameters(self) -> dict[str, Any]:
        return {"weights": self._w.tolist()}

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self._w.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._w = state["weights"].detach().clone().float()
