"""GradNorm: balance the per-objective gradient norms by their relative training rates (Chen et al. 2018).

With g_k the per-objective gradients of one optimizer step (‖g_k‖ = sqrt(Gram_kk), the gradients accumulated over
all of the step's micro-batches and averaged over ranks, ``mo_align.trainer.gram``) and L_k the step's per-objective losses:

    G_k = w_k ‖g_k‖,  r_k = (|L_k| + ε) / (|L_k(0)| + ε),  r̃_k = r_k / mean(r),  target_k = mean(G) · r̃_k^α
    w_k ← max(w_k − η sign(G_k − target_k) ‖g_k‖, w_min),  then w ← K w / Σ w

One weight step per optimizer step (``gradient_cadence = "optimizer_step"``), as the reference's one step per
mini-batch: with ``gradient_accumulation_steps: 4`` the weights still take one step of η on the norms of the whole
step, not four steps on quarter-batch norms. The update of step t uses Σ_k w_k ∇L_k with the weights held through
the step (those after step t − 1's weight step, GradNorm's order); L(0) is the first step's losses. State (L(0), w)
is checkpointed.

Args:
    num_objectives (`int`): K.
    alpha (`float`, *optional*, defaults to `1.5`): asymmetry α.
    lr (`float`, *optional*, defaults to `0.025`): weight step η.
    min_weight (`float`, *optional*, defaults to `1e-3`): floor w_min that keeps every weight positive.

Paper: https://huggingface.co/papers/1711.02257 (GradNorm); baseline of https://huggingface.co/papers/2602.06869.

Deviations from the reference:
    1. Loss ratios use magnitudes (|L| + ε): policy-gradient losses of whitened advantages change sign and sit near
       0. In the reference a negative normalised ratio r̃_k = r_k / mean(r) (r_k = L_k / L_k(0) of the other sign
       than mean(r)) gives r̃_k^α = NaN at α = 1.5, and torch.sign(NaN) = 0: objective k skips that weight step
       (the others step, then all are renormalised), so its weight stays put while its ratio is negative. Here
       every objective steps, on |L_k| / |L_k(0)|. Weights are floored at ``min_weight`` (the reference could make
       them negative) before the renormalisation to Σ w = K.
    2. Norms and losses are global (all ranks) and the state is shared and checkpointed, not per rank and per FSDP
       shard: a global norm is about √W times a shard's, so η‖g_k‖ steps are larger than the reference's at W
       ranks (≈ 2× at 4 GPUs) for the same η.
    3. The weights stepped on step t's gradients act from step t + 1 (the order of Chen et al. 2018, where w(t)
       weighs the loss of step t); the reference re-weighted step t's own gradients with them. Doing that would
       hold back every one of the K per-objective gradients of all trainable parameters for the whole step
       (K × P floats) before any could be applied; the cadence (one step per optimizer step, on the step's full
       gradients) is the reference's.
    4. Non-finite norms or losses skip the weight step, and L(0) is the first step with finite losses. In the
       reference a non-finite norm made every weight NaN for good (0 · NaN in sign(·) · ‖g_k‖); a NaN loss zeroed
       every sign and so skipped the step, as here, but a NaN first loss became L(0) and froze the weights for good.
    5. ``gramian_space: logprobs`` and a ``gramian_params`` subset are additions: ‖g_k‖ is then measured in that
       space (log-prob-space norms are orders of magnitude smaller, so η may need rescaling) and the weights are
       applied to the full gradients; the reference uses every parameter. TRL shuffles the generation batch
       before splitting it into micro-batches (the reference's mini-batches are contiguous).
    6. By default ‖g_k‖ is over every trainable parameter, as in the reference; Chen et al. 2018 take it on the
       weights of the last shared layer (``gramian_params`` can select one).
    7. With ``loss_type: dapo`` (TRL's default) and ``steps_per_generation`` > ``gradient_accumulation_steps``, TRL
       divides every step's loss by the generation batch's mean token count per step, not the step's own: a step's
       norms and losses are those of its token mean times (its tokens / that mean). The factor is the same for
       every objective, so the sign of each weight step is unchanged, but its size η‖g_k‖ varies with it
       (other loss types, or the two settings equal, have no such factor).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from mo_align.weightings.base import OPTIMIZER, StepSize, Weighting
from mo_align.weightings.papers import GRADNORM


class GradNormWeighting(Weighting, key="gradnorm"):
    __doc__ = __doc__
    lab_order = 8  # in the lab's and the benchmarks' lists (mo_align.lab.catalog)
    step_size = StepSize(
        kwarg="lr",
        cadence=OPTIMIZER,
        law="linear",
        note=(
            "w_k −= η sign(G_k − target_k) ‖g_k‖, floored and renormalised to Σw = K: the step also scales with "
            "the model's gradient norms (not matched) and saturates at the floor"
        ),
        row=3,
    )
    papers = (GRADNORM,)
    ranges: ClassVar[dict[str, str]] = {"alpha": "[0, 10]", "lr": "[0, 10]", "min_weight": "(0, 1]"}
    space = "gradient"
    requires = frozenset({"gramian"})
    gradient_cadence = "optimizer_step"

    def __init__(
        self, num_objectives: int, *, alpha: float = 1.5, lr: float = 0.025, min_weight: float = 1e-3
    ) -> None:
        super().__init__(num_objectives)
        if lr < 0 or min_weight <= 0:
            raise ValueError("gradnorm: lr must be >= 0 and min_weight > 0")
        self.alpha, self.lr, self.min_weight = alpha, lr, min_weight
        self.w = torch.ones(num_objectives, dtype=torch.float64)
        self.initial_losses: torch.Tensor | None = None

    def weights(self) -> torch.Tensor:
        return self.w.float()

    def gradient_weights(self, gram: torch.Tensor, losses: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """One GradNorm step on the Gram matrix (K, K) and losses (K,) of an optimizer step; returns (the weights
        that step used (K,), metrics)."""
        used = self.w.float().clone()
        norms = torch.sqrt(torch.clamp(torch.diagonal(gram.double()), min=0))
        losses = losses.double()
        if not (torch.isfinite(norms).all() and torch.isfinite(losses).all()):
            return used, {"skipped": 1.0}
        if self.initial_losses is None:
            self.initial_losses = losses.clone()
        eps = 1e-8
        ratio = (losses.abs() + eps) / (self.initial_losses.abs() + eps)
        rel = ratio / ratio.mean()
        g = self.w * norms
        target = g.mean() * rel**self.alpha
        w = torch.clamp(self.w - self.lr * torch.sign(g - target) * norms, min=self.min_weight)
        w = w * self.num_objectives / w.sum()
        low = w < self.min_weight  # the renormalisation may push a floored weight back under the floor
        if low.any():
            w[low] = self.min_weight
            w[~low] *= (self.num_objectives - self.min_weight * int(low.sum())) / w[~low].sum()
        self.w = w
        return used, {"skipped": 0.0, "gradnorm_loss": float((g - target).abs().sum())}

    def state_dict(self) -> dict[str, Any]:
        l0 = None if self.initial_losses is None else self.initial_losses.clone()
        return {"w": self.w.clone(), "initial_losses": l0}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.w = state["w"].clone()
        self.initial_losses = None if state["initial_losses"] is None else state["initial_losses"].clone()
