"""Per-objective policy losses from one forward, their gradients, Gram matrices, and the update Σ_k α_k ∇L_k.

For a strategy that ``requires`` a ``"gramian"``: TRL's policy loss L_k of a micro-batch is evaluated once per
objective with that objective's advantages A^(k), all from one memoised forward. Since ∇(Σ α_k L_k) = Σ α_k ∇L_k,
back-propagating the weighted loss applies the combined gradient exactly; when the Gram matrix already covers every
trainable parameter the K gradients are combined directly through a surrogate (K backward passes instead of K + 1).

Which gradients enter a Gram matrix (:mod:`mo_align.trainer.gram`): a ``micro_batch`` gradient weighting (MGDA)
solves on this micro-batch's own; an ``optimizer_step`` one (GradNorm) applies its held ``weights()`` and sees the Gram
matrix of the whole step's accumulated gradients after the step; a reward-space one (Dynamic) sees the Gram matrix of
the generation batch's accumulated gradients, taken on the first pass over it (π_old, as the reference's separate
gradient pass), after the batch is consumed.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import torch

from mo_align.trainer import trl_compat
from mo_align.trainer.gram import GramAccumulator


if TYPE_CHECKING:
    from mo_align.trainer import MOGRPOTrainer


class GradientSpace:
    """The gradient machinery of one trainer: the ``gramian_params``, the batch accumulator, the weighted loss."""

    def __init__(self, trainer: MOGRPOTrainer) -> None:
        self.trainer = trainer
        self.space: str = trainer.args.gramian_space
        self.acc = GramAccumulator(self.space)  # this generation batch's (Dynamic) or optimizer step's (GradNorm)
        self.params: list[torch.nn.Parameter] | None = None
        self.params_all = False  # the parameters cover every trainable one (their gradients can be the update)

    # ---- the loss of one micro-batch ------------------------------------------------------------------------------
    def loss(self, model: Any, inputs: dict[str, Any], objective_adv: torch.Tensor) -> torch.Tensor:
        """Σ_k α_k L_k (gradient space) or the run's own loss (reward space), recording the batch's gradients."""
        t = self.trainer
        losses, own_loss, logps = self._losses(model, inputs, objective_adv)
        loss_vec = torch.stack([x.detach() for x in losses])
        if t.mo.needs.gram == "generation_batch":
            every = t.args.steps_per_generation
            if trl_compat.micro_step(t) % (every * t.num_iterations) < every:  # first pass: the batch at π_old
                self.acc.add(self.local_gradients(model, losses, logps, direct=False)[0], loss_vec)
            return own_loss
        direct = self.space == "parameters" and bool(self.gram_params(model)) and self.params_all
        local, used = self.local_gradients(model, losses, logps, direct=direct)
        if t.mo.needs.gram == "optimizer_step":
            self.acc.add(local, loss_vec)  # GradNorm: weights held for the step, stepped after it
            alpha = t.mo.weighting.weights()
        else:
            acc = GramAccumulator(self.space)
            acc.add(local, loss_vec)
            gram, loss_vec = acc.result(t.accelerator)
            alpha, extra = t.mo.weighting.gradient_weights(gram, loss_vec)
            self._log(alpha, extra, gram)
        metrics = trl_compat.metrics(t, "train")
        for k, name in enumerate(t.mo.weighted_names):
            metrics[f"mo/grad_weight/{name}"].append(float(alpha[k]))
        alpha = alpha.to(losses[0].device, losses[0].dtype)
        if not direct:
            return sum(alpha[k] * losses[k] for k in range(len(losses)))
        return self._surrogate(alpha, losses, local, used)

    def _losses(self, model: Any, inputs: dict[str, Any], objective_adv: torch.Tensor):
        """(K per-objective losses, the run's own loss or None in gradient space, the memoised per-token log π)."""
        t = self.trainer
        metrics = trl_compat.metrics(t, "train")
        with trl_compat.MemoisedLogps(t) as memo:
            start = {key: len(v) for key, v in metrics.items()}
            first: dict[str, int] | None = None
            losses = []
            for k in range(objective_adv.shape[1]):
                losses.append(trl_compat.policy_loss(t, model, {**inputs, "advantages": objective_adv[:, k]}))
                first = first or {key: len(v) for key, v in metrics.items()}
            own = trl_compat.policy_loss(t, model, inputs) if t.mo.needs.gram == "generation_batch" else None
            for key, v in metrics.items():  # TRL logs entropy / clip ratios on every call: keep one call's entries
                del v[first.get(key, start.get(key, 0)) :]
        return losses, own, memo.out[0]

    def _surrogate(self, alpha: torch.Tensor, losses: list, local: torch.Tensor, used: list[bool]) -> torch.Tensor:
        """Σ_k α_k ∇L_k from the gradients the Gram pass already holds, through a surrogate linear in the
        parameters: its value is Σ_k α_k L_k, its gradient Σ_k α_k ∇L_k (loss scaling, accumulation and DDP's
        all-reduce act on it as on any loss) — no further backward through the model."""
        alpha_local = alpha.to(local)
        surrogate, offset = torch.zeros((), device=local.device), 0
        for p, is_used in zip(self.params, used, strict=True):
            if is_used:  # a parameter no loss reached keeps grad None, as after a plain backward
                # Σ_k α_k g_k on this parameter's block, element-wise: one (K,) @ (K, P) product over every
                # parameter of a 1.5B model (K·P > 2³¹ elements) crashed CUDA with an illegal memory access
                block = local[:, offset : offset + p.numel()]
                combined = sum(alpha_local[k] * block[k] for k in range(block.shape[0]))
                surrogate = surrogate + (p.float() * combined.view_as(p).float()).sum()
            offset += p.numel()
        value = sum(alpha[k] * losses[k].detach() for k in range(len(losses)))
        return value + (surrogate - surrogate.detach()).to(value)

    # ---- after an optimizer step / a generation batch -------------------------------------------------------------
    def after_optimizer_step(self) -> None:
        """An ``optimizer_step`` gradient weighting sees the step's Gram matrix (a collective call)."""
        if not len(self.acc):
            return
        gram, losses = self.acc.result(self.trainer.accelerator)
        _, extra = self.trainer.mo.weighting.gradient_weights(gram, losses)
        self._log(torch.zeros(0), extra, gram)

    def batch_gram(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(Gram, losses) of the generation batch just consumed, as its mean gradient: TRL scaled each micro-batch
        to its own optimizer step, and the batch spans S = steps_per_generation / gradient_accumulation_steps."""
        args = self.trainer.args
        steps = args.steps_per_generation / args.gradient_accumulation_steps
        return self.acc.result(self.trainer.accelerator, scale=1 / steps)

    def _log(self, alpha: torch.Tensor, extra: dict[str, float], gram: torch.Tensor) -> None:
        """Log a gradient weighting's metrics and norms; stop the run naming the strategy when α is not finite (a
        NaN Gram matrix means NaN gradients: no weighting of them is worth applying)."""
        t = self.trainer
        if not torch.isfinite(alpha).all():
            cause = "its Gram matrix is not finite" if not torch.isfinite(gram).all() else "its solver diverged"
            raise FloatingPointError(
                f"{t.mo.weighting.name}: non-finite gradient weights {[round(x, 4) for x in alpha.tolist()]} at step "
                f"{t.state.global_step} ({cause}); the run stops here instead of training on garbage"
            )
        metrics = trl_compat.metrics(t, "train")
        for key, value in extra.items():
            metrics[f"mo/{t.mo.weighting.name}/{key}"].append(float(value))
        for k, name in enumerate(t.mo.weighted_names):
            metrics[f"mo/grad_norm/{name}"].append(float(gram[k, k].clamp(min=0).sqrt()))

    # ---- gradients ------------------------------------------------------------------------------------------------
    def local_gradients(self, model: Any, losses: list[torch.Tensor], logps: torch.Tensor, direct: bool):
        """This rank's per-objective gradients of one micro-batch: (K, P) on ``gramian_params`` (``parameters``,
        K backward passes through that subset) or (K, T) w.r.t. the per-token log-probabilities (``logprobs``, no
        extra backward through the model), and which parameters any loss reached. ``direct``: these gradients
        become the update (no later backward through the graph, so the last one frees it)."""
        if self.space == "logprobs":
            flat = [torch.autograd.grad(x, logps, retain_graph=True)[0].reshape(-1) for x in losses]
            return torch.stack(flat), None
        params = self.gram_params(model)
        rows, used = [], [False] * len(params)
        for k, x in enumerate(losses):
            last = direct and k == len(losses) - 1
            grads = torch.autograd.grad(x, params, retain_graph=not last, allow_unused=True)
            used = [u or g is not None for u, g in zip(used, grads, strict=True)]
            pairs = zip(grads, params, strict=True)
            rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in pairs]))
        return torch.stack(rows), used

    def gram_params(self, model: Any) -> list[torch.nn.Parameter]:
        """The trainable parameters matching ``gramian_params`` (all trainable ones by default; LoRA: adapters)."""
        if self.params is None:
            pattern = self.trainer.args.gramian_params
            named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
            if pattern:
                regex = re.compile(pattern)
                named = [(n, p) for n, p in named if regex.search(n)]
            if not named:
                raise ValueError(f"gramian_params {pattern!r} matches no trainable parameter")
            self.params = [p for _, p in named]
            self.params_all = len(named) == sum(1 for p in model.parameters() if p.requires_grad)
        return self.params
