"""State transitions that wait until a generation batch has been trained on, and the callback that runs them.

* CTWA's exact statistic (``requires`` ``"post_update_logps"``): the induced weight w̃_i = agg_t[Â_i ρ_it 1[unclipped]]
  needs ρ = π_new/π_old *after* the batch's updates. π_old is the log-probability TRL's own ratio uses: taken from
  TRL's old log-probs when it computes them, else kept from each micro-batch's first training forward (generation
  aligned with the optimizer step: that forward runs on the pre-update policy), saving a pass. π_new is one no-grad
  forward per micro-batch once the batch is consumed.
* Dynamic (a reward-space strategy that ``requires`` a ``"gramian"``): the Gram matrix of the batch's accumulated
  gradients (:meth:`mo_align.trainer.gradient.GradientSpace.batch_gram`) and the batch's learning rate.

:class:`MOCallback` runs them on ``on_step_end`` — after the optimizer step, before logging and checkpointing — so a
checkpoint always holds a weighting state that includes every finished batch (exact resume); it also steps
``optimizer_step`` gradient weightings (GradNorm) and keeps ``mo_summary.json`` fresh. Every generation batch ends on
an optimizer step (steps_per_generation × num_iterations a multiple of gradient_accumulation_steps, refused otherwise
by :meth:`mo_align.weightings.TrainerNeeds.layout_conflict`), so each batch gets its own update.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from transformers import TrainerCallback

from mo_align.trainer import trl_compat
from mo_align.weightings import ObjectiveStats
from mo_align.weightings.validation import check_finite_weights


if TYPE_CHECKING:
    from mo_align.trainer import MOGRPOTrainer


class PostUpdate:
    """The batch awaiting its post-update statistic, and the passes that compute it."""

    def __init__(self, trainer: MOGRPOTrainer) -> None:
        self.trainer = trainer
        self.pending: ObjectiveStats | None = None

    def prepare(self, out: dict[str, Any], stats: ObjectiveStats) -> None:
        """At generation: mark the batch's rows and keep π_old where TRL computed it (or must be computed now)."""
        t = self.trainer
        n_local = out["advantages"].shape[0]
        out["mo_row_index"] = torch.arange(n_local, device=out["advantages"].device)
        old = out.get("old_per_token_logps")
        if old is not None:
            out["mo_old_logps"] = old
        elif t.args.use_liger_kernel:
            out["mo_old_logps"] = self.logps(out)  # the fused loss never exposes per-token log-probs
        # else: compute_loss keeps the first training forward's log-probs (see keep_old_logps)
        self.pending = stats

    def keep_old_logps(self, batch: dict[str, Any], compute_loss: Any) -> Any:
        """Run ``compute_loss()`` (the micro-batch's first training forward) and keep its per-token log π as π_old
        on the buffered micro-batch."""
        with trl_compat.MemoisedLogps(self.trainer) as memo:
            result = compute_loss()
        batch["mo_old_logps"] = memo.out[0].detach()
        return result

    @torch.no_grad()
    def logps(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-token log π of the current model on a (local) batch of completions, (B, T)."""
        t = self.trainer
        input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        attention_mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        logits_to_keep = batch["completion_ids"].size(1)
        size = t.args.per_device_train_batch_size
        return trl_compat.per_token_logps(t, t.model, input_ids, attention_mask, logits_to_keep, batch_size=size)[0]

    def run(self) -> None:
        """After the last optimizer step on a generation batch: its statistics, then ``weighting.update``."""
        t = self.trainer
        stats, self.pending = self.pending, None
        if stats is None or trl_compat.buffered_micro_batches(t) is None:
            return
        if t.mo.needs.gram == "generation_batch":
            stats.extras["gramian"], stats.extras["losses"] = t.mo.gradient.batch_gram()
            stats.extras.setdefault("lr", trl_compat.learning_rate(t))
        if t.mo.needs.post_update_logps:
            self._signal(stats)
        t.mo_log_update(t.mo.weighting.update(stats))

    def _signal(self, stats: ObjectiveStats) -> None:
        t = self.trainer
        batches = trl_compat.buffered_micro_batches(t)
        signal = torch.zeros(sum(mb["mo_row_index"].numel() for mb in batches), dtype=torch.float32)
        unclipped = torch.zeros(2, dtype=torch.float64)  # (unclipped tokens, tokens) on this process
        eps_low, eps_high = t.args.epsilon, t.args.epsilon_high or t.args.epsilon
        for mb in batches:
            if "mo_old_logps" not in mb:
                raise RuntimeError("CTWA exact statistic: a micro-batch was never trained on, its π_old is unknown")
            mask = mb["completion_mask"].float()
            log_ratio = (self.logps(mb) - mb["mo_old_logps"]).float().cpu()
            adv = mb["advantages"].cpu()
            w, n_unclipped = t.mo.weighting.post_update_signal(adv, log_ratio, mask.cpu(), eps_low, eps_high)
            signal[mb["mo_row_index"].cpu()] = w.float()
            unclipped += torch.tensor([n_unclipped, float(mask.sum())], dtype=torch.float64)
        device = t.accelerator.device
        stats.extras["signal"] = t.accelerator.gather(signal.to(device)).cpu()
        totals = t.accelerator.reduce(unclipped.to(device), reduction="sum").cpu()
        stats.extras["unclip_frac"] = float(totals[0] / totals[1].clamp(min=1))


class MOCallback(TrainerCallback):
    """Deferred state transitions after each optimizer step, and the throttled run summary."""

    def __init__(self, trainer: MOGRPOTrainer) -> None:
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        t = self.trainer
        if t.mo.needs.gram == "optimizer_step":
            t.mo.gradient.after_optimizer_step()
        generate_every = t.args.steps_per_generation * t.num_iterations
        if t.mo.post_update.pending is not None and trl_compat.micro_step(t) % generate_every == 0:
            t.mo.post_update.run()
        check_finite_weights(t.mo.weighting, state.global_step)  # gradient-space states move inside compute_loss

    def on_log(self, args, state, control, **kwargs):
        self.trainer.write_summary(force=False)  # throttled: a killed run still has a recent summary

    def on_save(self, args, state, control, **kwargs):
        self.trainer.write_summary()

    def on_train_end(self, args, state, control, **kwargs):
        self.trainer.write_summary()
