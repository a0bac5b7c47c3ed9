"""Dynamic reward weighting, gradient-based variant (Lu et al. 2025, arXiv 2509.11452).

The influence of objective k is the first-order gain in *all* objectives from a step of size η_t along g_k:
I_k = η_t Σ_j ⟨g_k, g_j⟩ = η_t (Gram·1)_k. Influences are accumulated over m generation batches, then the simplex
weights take a mirror-descent (exponentiated-gradient) step,

    w ← softmax(log w + Ī / μ),     Ī = (1/m) Σ_batches I

and scalarize the rewards linearly, s_i = Σ_k w_k r_ik. Gram is the global Gram matrix of the per-objective policy
gradients of the whole generation batch, ⟨Σ_b g_b^i, Σ_b g_b^j⟩ over its micro-batches b and ranks (``mo_align.trainer.gram``;
on ``gramian_params``, the paper's recipe uses decoder layers 10–25: K × P float32 per process, 9 GB for that recipe;
or in ``logprobs`` space, where micro-batches own disjoint coordinates and the sum of their Gram matrices is exactly
the full batch's). The gradients are those of the first pass over the batch, at π_old, as the reference's.
One update per generation batch, after its last optimizer step: a layout in which a generation batch does not end on
an optimizer step (steps_per_generation × num_iterations not a multiple of gradient_accumulation_steps) is refused
before training. State (w, accumulator, count) is checkpointed.

Args:
    num_objectives (`int`): K.
    weights (`list[float]`, *optional*): initial simplex weights (default uniform).
    regularization (`float`, *optional*, defaults to `1e-5`): μ.
    accumulation_steps (`int`, *optional*, defaults to `1`): m.

Paper: https://huggingface.co/papers/2509.11452; baseline of https://huggingface.co/papers/2602.06869.

Deviations from the reference:
    1. The learning rate enters once (η_t Gram·1 / μ), as in the paper; the reference multiplied by it twice
       (lr² Σ⟨g_k, g_j⟩ / μ = 1e-7 Σ⟨·,·⟩ at lr 1e-6), which kept its weights nearly static.
    2. The gradients come from the batch's own policy-update forward (no separate gradient pass), so the weights
       computed on batch t scalarize batch t+1 (the reference re-weighted batch t itself).
    3. Weights and influences are logged as metrics (the reference wrote them only to a JSONL file).
    4. The per-objective loss is the run's own policy loss with A^(k) (its KL term included when beta > 0, as the
       reference's) on the same micro-batches as the update; with ``steps_per_generation`` above
       ``gradient_accumulation_steps`` the micro-batches after the batch's first optimizer step are taken at the
       parameters of their own step (the reference's separate pass used θ_t for the whole batch).
    5. ``gramian_space: logprobs`` (an output-space Gram matrix, no extra backward through the model) is an
       addition; ``parameters`` with ``gramian_params`` is the reference.
    6. Initial weights are normalised to sum to 1 (the reference asserts it); non-finite influences skip the update
       (the reference has no guard); the state is checkpointed (the reference keeps none); a zero weight is
       floored at 1e-300 before the log, so it is not absorbing (the reference's log 0 is).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from mo_align.weightings.base import GENERATION, ObjectiveStats, StepSize, Weighting
from mo_align.weightings.papers import DYNAMIC


class DynamicWeighting(Weighting, key="dynamic"):
    __doc__ = __doc__
    lab_order = 9  # in the lab's and the benchmarks' lists (mo_align.lab.catalog)
    step_size = StepSize(
        kwarg="regularization",
        cadence=GENERATION,
        law="inverse_lr",
        note=(
            "w ← softmax(log w + lr_t Gram·1 / μ): the step is lr_t / μ, so matched sets μ so that Σ_t lr_t / μ "
            "is the paper's (same schedule shape); Gram's scale is the model's and not matched"
        ),
        row=4,
    )
    papers = (DYNAMIC,)
    ranges: ClassVar[dict[str, str]] = {
        "weights": "[0, 1e6]",
        "regularization": "(0, 1e6]",
        "accumulation_steps": "[1, 1e6]",
    }
    requires = frozenset({"gramian"})

    def __init__(
        self,
        num_objectives: int,
        *,
        weights: list[float] | None = None,
        regularization: float = 1e-5,
        accumulation_steps: int = 1,
    ) -> None:
        super().__init__(num_objectives)
        w0 = [1.0 / num_objectives] * num_objectives if weights is None else [float(w) for w in weights]
        if len(w0) != num_objectives or any(not math.isfinite(w) or w < 0 for w in w0) or sum(w0) <= 0:
            raise ValueError(f"dynamic: weights must be {num_objectives} finite non-negative numbers, got {weights}")
        if regularization <= 0 or accumulation_steps < 1:
            raise ValueError("dynamic: regularization must be > 0 and accumulation_steps >= 1")
        self.weights_init, self.regularization, self.accumulation_steps = w0, regularization, accumulation_steps
        self.w = torch.tensor(w0, dtype=torch.float64) / sum(w0)
        self.acc = torch.zeros(num_objectives, dtype=torch.float64)
        self.count = 0

    def weights(self) -> torch.Tensor:
        return self.w.float()

    def update(self, stats: ObjectiveStats) -> dict[str, float]:
        gram, lr = stats.extras.get("gramian"), stats.extras.get("lr")
        if gram is None or lr is None:
            raise ValueError("dynamic.update needs stats.extras['gramian'] (K, K) and ['lr']")
        influence = float(lr) * gram.double().sum(dim=1)  # I_k = η Σ_j <g_k, g_j>
        if not torch.isfinite(influence).all():
            return {"skipped": 1.0}
        self.acc += influence
        self.count += 1
        names = stats.objective_names or tuple(str(i) for i in range(self.num_objectives))
        out = {f"influence/{n}": float(influence[i]) for i, n in enumerate(names)}
        out.update({f"grad_norm/{n}": float(gram[i, i].clamp(min=0).sqrt()) for i, n in enumerate(names)})
        if self.count >= self.accumulation_steps:
            step = self.acc / self.count / self.regularization
            logits = torch.log(self.w.clamp(min=1e-300)) + step
            self.w = torch.softmax(logits, dim=0)
            self.acc.zero_()
            self.count = 0
        out["skipped"] = 0.0
        return out

    def hyperparameters(self) -> dict[str, Any]:
        keys = ("regularization", "accumulation_steps")
        return {"weights": self.weights_init, **{k: getattr(self, k) for k in keys}}

    def state_dict(self) -> dict[str, Any]:
        return {"w": self.w.clone(), "acc": self.acc.clone(), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.w, self.acc, self.count = state["w"].clone(), state["acc"].clone(), int(state["count"])
