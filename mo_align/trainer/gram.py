"""The Gram matrix of the per-objective policy gradients of a whole batch, accumulated over micro-batches.

With per-objective losses L_k and a batch split into B micro-batches b (and W ranks r), the update the optimizer
applies is the gradient of the accumulated loss, g_k = (1/W) Σ_r Σ_b ∇L_{k,r,b}: TRL scales each micro-batch's loss
by its share of the accumulation window (1/B, or the global token count), so the sum over micro-batches *is* the
full-batch gradient. The strategies that read a Gram matrix of a batch (Dynamic: the generation batch; GradNorm:
the optimizer step) need

    Gram_ij = ⟨g_i, g_j⟩ = ⟨Σ_b g_{i,b}, Σ_b g_{j,b}⟩,

which is **not** the sum of the micro-batches' Gram matrices Σ_b ⟨g_{i,b}, g_{j,b}⟩: with independent noise in each
micro-batch the latter keeps every micro-batch's noise energy while the signal part grows only as the sum, so
noisy objectives would look B times more important than they are.

``parameters`` space: the local per-objective gradients (on ``gramian_params``) are summed over the micro-batches,
averaged over the ranks once, and the inner products taken once. Memory: K × P float32 per process (P = number of
``gramian_params`` elements), e.g. 3 × 0.75 B × 4 B = 9 GB for the paper's Dynamic recipe (decoder layers 10–25 of
Qwen2.5-1.5B), the same matrix the reference gathers on its driver.

``logprobs`` space: the coordinates are the per-token log-probabilities of the batch's completions. Each
micro-batch (and each rank) owns disjoint coordinates, so the full-batch gradient is the concatenation of the
micro-batches' gradients and its Gram matrix is exactly the sum of theirs; with the ranks' 1/W averaging,
Gram = (1/W²) Σ_r Σ_b G_{r,b}. Memory: K × K.

A generation batch trained in S = steps_per_generation / gradient_accumulation_steps optimizer steps: TRL scales
each micro-batch's loss to its own optimizer step, so the sum over the batch is S step-mean gradients; the batch's
mean gradient (the reference's one full-batch gradient pass) is that sum divided by S (``result(scale=1/S)``).
"""

from __future__ import annotations

import torch


GRAM_CHUNK = 1 << 22  # columns per float64 block when forming (K, P) @ (P, K): bounds the float64 copy


def gram_of_rows(rows: torch.Tensor, chunk: int = GRAM_CHUNK) -> torch.Tensor:
    """rows (K, P) -> rows @ rowsᵀ (K, K) in float64, in column blocks (never a whole float64 copy of rows)."""
    k, p = rows.shape
    out = torch.zeros(k, k, dtype=torch.float64, device=rows.device)
    for start in range(0, p, chunk):
        block = rows[:, start : start + chunk].double()
        out += block @ block.T
    return out


class GramAccumulator:
    """Per-objective gradients (``parameters``) or local Gram matrices (``logprobs``) of one batch, summed over its
    micro-batches, with the per-objective losses; :meth:`result` forms the global Gram matrix once.

    Args:
        space: ``"parameters"`` or ``"logprobs"``.
    """

    def __init__(self, space: str) -> None:
        if space not in ("parameters", "logprobs"):
            raise ValueError(f"space must be 'parameters' or 'logprobs', got {space!r}")
        self.space = space
        self.grads: torch.Tensor | None = None  # (K, P) float32, this rank's sum over micro-batches
        self.local_gram: torch.Tensor | None = None  # (K, K) float64, this rank's Σ_b G_b
        self.losses: torch.Tensor | None = None  # (K,) float64, this rank's Σ_b L_b
        self.micro_batches = 0

    def __len__(self) -> int:
        return self.micro_batches

    def add(self, local: torch.Tensor, losses: torch.Tensor) -> None:
        """One micro-batch: ``local`` is this rank's (K, P) gradients (parameters) or (K, T) log-prob gradients."""
        if self.space == "parameters":
            rows = local.detach().float()
            self.grads = rows.clone() if self.grads is None else self.grads.add_(rows)
        else:
            gram = gram_of_rows(local.detach())
            self.local_gram = gram if self.local_gram is None else self.local_gram + gram
        loss = losses.detach().double().reshape(-1)
        self.losses = loss.clone() if self.losses is None else self.losses + loss
        self.micro_batches += 1

    def result(self, accelerator, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(global Gram (K, K) float64, rank-averaged summed losses (K,) float64) on the CPU, identical on every
        rank (a collective call: every rank must call it), then reset.

        ``scale`` c multiplies the accumulated gradients (the Gram matrix by c², the losses by c): a generation
        batch trained in S optimizer steps sums S step-mean gradients, so c = 1/S gives its mean gradient."""
        if not self.micro_batches:
            raise RuntimeError("GramAccumulator.result() before any micro-batch was added")
        world = accelerator.num_processes
        if self.space == "parameters":
            mean = accelerator.reduce(self.grads, reduction="mean")
            gram = gram_of_rows(mean)
        else:
            gram = accelerator.reduce(self.local_gram, reduction="sum") / world**2
        losses = accelerator.reduce(self.losses.to(gram.device), reduction="mean")
        gram, losses = gram * scale**2, losses * scale
        self.grads = self.local_gram = self.losses = None
        self.micro_batches = 0
        return gram.cpu(), losses.cpu()
