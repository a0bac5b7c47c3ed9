"""``MOGRPOTrainer``: TRL's GRPOTrainer with a multi-reward head and a swappable ``Weighting``.

This is the only module that touches TRL private methods (guarded by ``tests/test_trl_contract.py``). Overrides:

1. ``_calculate_rewards`` — ``super()``, then keep the gathered (N, K) reward matrix r.
2. ``_generate_and_score_completions`` — ``super()``, then replace the batch's advantages by the weighting's:
   ``A = weighting.combine(ObjectiveStats(r, G, L, ...))`` computed on the gathered batch (identical on every
   rank) and sliced to this process; carry the per-objective advantages (B, K) when the weighting asks for them;
   call ``weighting.update`` once per training generation batch; log under ``mo/``; make TRL's logged ``reward``
   the mean of the signal actually optimised, s = weighting.scalarize(r) (TRL issue #5352). For gradient- and
   advantage-space strategies that is Σ_k w_k r_k with their current weights (GradNorm's sum to K); the reference's
   ``critic/score`` used uniform 1/K weights for GradNorm, MGDA, Lagrangian and PAMA.
3. ``compute_loss`` — takes the per-objective advantages out of the inputs (exposed to gradient-space
   strategies as ``self.objective_advantages``), then ``super()``.
4. ``_save_checkpoint`` / ``_load_optimizer_and_scheduler`` — persist the weighting state and the state of
   stateful reward functions (``mo_state.pt``), as TRL does for its entropy controller.
5. ``evaluate`` / ``evaluation_loop`` — transformers' ``evaluate`` (dicts of eval datasets, logging, callbacks)
   around a loop that runs TRL's (``eval_loss``) and then decodes the eval split (greedy by default, one sample per
   prompt, as the paper evaluates; ``mo_align.evaluation``), scores every objective, reward models included, and
   returns ``eval_<objective>/mean`` and ``eval_<objective>/delta`` (vs the first evaluation, e.g.
   ``eval_on_start``) and ``eval_completion_length/mean``. Evaluation never moves any state (weights, running
   means).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import time
from typing import Any

import torch
from accelerate.utils import gather_object
from transformers import TrainerCallback
from transformers.trainer_utils import rotate_checkpoints
from trl import GRPOTrainer

from mo_align import checkpoints
from mo_align.configs import MOGRPOConfig, resolve_config
from mo_align.diagnostics import InterferenceMonitor
from mo_align.evaluation import decode_and_score, eval_rows, fixed_reference_columns
from mo_align.gram import GramAccumulator
from mo_align.hub import redact
from mo_align.launch import typed_command
from mo_align.rewards.checks import RewardMonitor
from mo_align.weightings import ObjectiveStats, Weighting, get_weighting
from mo_align.weightings.base import check_finite_weights


MO_STATE_FILE = "mo_state.pt"
logger = logging.getLogger("mo_align")


class MOGRPOTrainer(GRPOTrainer):
    """GRPO with K objectives kept apart until a ``Weighting`` combines them.

    Args:
        model, reward_funcs, train_dataset, eval_dataset, processing_class, callbacks, peft_config, ...:
            as [`trl.GRPOTrainer`]; ``reward_funcs`` are the K objectives, in order.
        args ([`MOGRPOConfig`], *optional*): adds ``weighting``, ``weighting_kwargs``, ``advantage_estimator``.
            ``None`` (TRL's default config, linear weights of ones) and a plain [`trl.GRPOConfig`] (its
            ``reward_weights`` / ``multi_objective_aggregation`` mapped to linear weights and an estimator, logged)
            are accepted as ``GRPOTrainer`` accepts them (``mo_align.configs.resolve_config``).
        weighting ([`Weighting`], *optional*): an instance to use instead of building ``args.weighting``
            (dependency injection for custom strategies and tests).
    """

    _tag_names = ["trl", "grpo", "mo_align"]  # noqa: RUF012
    SUMMARY_EVERY_S = 30.0  # the longest mo_summary.json lags behind a running training (seconds)

    def __init__(self, model: Any, reward_funcs: Any = None, args: MOGRPOConfig | None = None, *a: Any, **kw: Any):
        weighting: Weighting | None = kw.pop("weighting", None)
        funcs = reward_funcs if isinstance(reward_funcs, list) else [reward_funcs]
        k = len(funcs)
        args = resolve_config(args, model, k)  # None or a plain trl.GRPOConfig are accepted, as GRPOTrainer does
        if weighting is None:
            weighting = get_weighting(args.weighting, k, **(args.weighting_kwargs or {}))
        elif weighting.num_objectives != k:
            raise ValueError(f"weighting has {weighting.num_objectives} objectives but {k} reward_funcs were given")
        self.weighting = weighting
        self.objective_advantages: torch.Tensor | None = None  # (B, K) of the current micro-batch
        self._mo_rewards: torch.Tensor | None = None
        self._mo_eval_start: dict[str, float] | None = None  # first evaluation's means (for deltas)
        self._mo_pending: ObjectiveStats | None = None  # a batch awaiting its post-update statistic
        # per-objective gradients of the current generation batch (Dynamic) or optimizer step (GradNorm)
        self._mo_acc = GramAccumulator(args.gramian_space)
        self._mo_params: list[torch.nn.Parameter] | None = None
        self._mo_params_all = False
        from mo_align.vllm.generation import server_mode  # vLLM server mode: mo_align's client, CPU weight sync (§7)

        with server_mode(args):
            super().__init__(model, reward_funcs, args, *a, **kw)
        self.add_callback(_PostUpdateHook(self))
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if launched != self.accelerator.num_processes:
            # e.g. `accelerate launch` with a multi-GPU config on a machine without GPUs: every process would
            # silently train alone (no gradient sync, no data split).
            raise RuntimeError(
                f"launched {launched} processes but the trainer sees {self.accelerator.num_processes}; on a machine "
                "without GPUs set use_cpu: true (or ddp_backend: gloo) in the recipe"
            )
        zero3 = self.is_deepspeed_enabled and self.accelerator.state.deepspeed_plugin.zero_stage == 3
        if "gramian" in weighting.requires and args.gramian_space == "parameters" and zero3:
            # autograd.grad on ZeRO-3-partitioned parameters returns empty shards and breaks the engine's
            # backward (STACK.md §2): the output-space Gram matrix is exact on what it measures and works.
            raise ValueError(
                f"weighting {weighting.name!r} with gramian_space 'parameters' is not supported under ZeRO-3; "
                "set gramian_space: logprobs"
            )
        if "post_update_logps" in weighting.requires:
            from mo_align.weightings.ctwa import exact_statistic_conflict

            conflict = exact_statistic_conflict(args)
            if conflict:
                raise ValueError(f"weighting {weighting.name!r} with the exact post-update statistic: {conflict}")
        generate_every = args.steps_per_generation * self.num_iterations
        if "post_update_logps" in weighting.requires and args.gradient_accumulation_steps > generate_every:
            # several generation batches per optimizer step: all but the last would lose their post-update statistic
            raise ValueError(
                f"weighting {weighting.name!r} with the exact post-update statistic needs gradient_accumulation_steps "
                f"({args.gradient_accumulation_steps}) <= steps_per_generation x num_iterations ({generate_every}); "
                "raise steps_per_generation or use statistic: on_policy"
            )
        self.objective_names: tuple[str, ...] = tuple(self.reward_func_names)
        self._mo_reward_monitor = RewardMonitor(self.objective_names)  # output checks, NaN warnings, timing
        for fn in self.reward_funcs:
            if self.accelerator.num_processes > 1 and hasattr(fn, "all_gather_lengths"):
                # TRL scores each rank's completions locally: a running mean over this rank's lengths only would
                # differ between ranks; every rank calls the reward on every training batch, so a gather is safe.
                fn.all_gather_lengths = lambda xs: gather_object(list(xs))
            if callable(getattr(fn, "warmup", None)):
                fn.warmup()  # start worker processes now, not inside the first batch
        self.monitor: InterferenceMonitor | None = None
        if args.mo_diagnostics:
            self.monitor = InterferenceMonitor(
                self.objective_names, patience=args.mo_diagnostics_patience, tolerance=args.mo_diagnostics_tolerance
            )
        self._mo_history: dict[str, list] = {"eval": [], "weights": [], "cov_ema": [], "train_reward": []}

    # ---- 1. capture the gathered reward matrix ----------------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        training = self.model.training
        for fn in self.reward_funcs:
            if hasattr(fn, "training") and not isinstance(fn, torch.nn.Module):
                fn.training = training  # stateful rewards (running means) move on training batches only
        with self._mo_reward_monitor.checking(self):  # each output checked (type, length, finite) and timed
            rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._mo_rewards = rewards.detach().float().cpu()  # (N, K), gathered over processes
        self._mo_reward_monitor.check_batch(self._mo_rewards, self._metrics["train" if training else "eval"])
        return rewards

    # ---- 2. replace the advantages ------------------------------------------------------------------------------
    def _generate_and_score_completions(self, inputs):
        start = time.perf_counter()
        out = super()._generate_and_score_completions(inputs)
        self._mo_reward_monitor.end_batch(time.perf_counter() - start)
        mode = "train" if self.model.training else "eval"
        r = self._mo_rewards
        n_local = out["advantages"].shape[0]
        lengths = self.accelerator.gather(out["completion_mask"].sum(dim=1)).float().cpu()  # (N,)
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        stats = ObjectiveStats(
            rewards=r,
            group_size=group_size,
            lengths=lengths,
            estimator=self.args.advantage_estimator,
            scale_rewards=self.scale_rewards,
            step=self.state.global_step,
            objective_names=self.objective_names,
        )
        train = mode == "train"
        if train:
            self._mo_log_update(self.weighting.pre_update(stats))
        if train and self.weighting.update_first:
            self._mo_log_update(self.weighting.update(stats))
        advantages = self.weighting.combine(stats)  # (N,)
        if not torch.isfinite(advantages).all():
            raise FloatingPointError(f"{self.weighting!r} produced non-finite advantages")
        lo = self.accelerator.process_index * n_local
        out["advantages"] = advantages[lo : lo + n_local].to(out["advantages"])
        objective_adv = stats.objective_advantages()  # (N, K)
        if self.weighting.needs_objective_advantages:
            out["mo_objective_advantages"] = objective_adv[lo : lo + n_local].to(out["advantages"].device)
        self._log_mo_metrics(mode, r, objective_adv, self.weighting.scalarize(r), advantages)
        if train:
            self._mo_observe_batch(r, advantages, group_size)
        stats.extras["signal"] = advantages  # the on-policy induced weight w_i = A_i (ratio 1)
        if train and "post_update_logps" in self.weighting.requires:
            # The statistic needs log π after this batch's updates: keep what the post-update pass needs and run
            # it once the generation batch is consumed (see _mo_post_update), before any checkpoint is written.
            out["mo_row_index"] = torch.arange(n_local, device=out["advantages"].device)
            old = out.get("old_per_token_logps")
            if old is not None:
                out["mo_old_logps"] = old
            elif self.args.use_liger_kernel:
                out["mo_old_logps"] = self._mo_logps(out)  # the fused loss never exposes per-token log-probs
            # else: TRL computed no old log-probs because generation is aligned with the optimizer step, so every
            # micro-batch's first training forward runs on the pre-update policy; compute_loss keeps those
            # log-probs (π_old exactly as TRL's own ratio uses it), saving a forward pass per batch.
            self._mo_pending = stats
        elif train and "gramian" in self.weighting.requires and self.weighting.space != "gradient":
            self._mo_pending = stats  # updated from the Gram matrix accumulated while training on this batch
            stats.extras["lr"] = self._get_learning_rate()  # η_t of this batch's first step (before the scheduler)
        elif train and not self.weighting.update_first:
            self._mo_log_update(self.weighting.update(stats))
        return out

    def _mo_log_update(self, metrics: dict[str, float]) -> None:
        check_finite_weights(self.weighting, self.state.global_step)  # after every state transition
        for key, value in metrics.items():
            self._metrics["train"][f"mo/{self.weighting.name}/{key}"].append(float(value))

    @torch.no_grad()
    def _mo_logps(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-token log π of the current model on a (local) batch of completions, (B, T)."""
        input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        attention_mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        logits_to_keep = batch["completion_ids"].size(1)
        logps, _, _ = self._get_per_token_logps_and_entropies(
            self.model, input_ids, attention_mask, logits_to_keep, batch_size=self.args.per_device_train_batch_size
        )
        return logps

    def _mo_post_update(self) -> None:
        """After the last optimizer step on a generation batch: post-update statistic, then ``weighting.update``."""
        stats, self._mo_pending = self._mo_pending, None
        if stats is None or self._buffered_inputs is None:
            return
        if "gramian" in self.weighting.requires:
            # the batch's mean gradient: TRL scaled each micro-batch to its own optimizer step (S steps per batch)
            steps = self.args.steps_per_generation / self.args.gradient_accumulation_steps
            stats.extras["gramian"], stats.extras["losses"] = self._mo_acc.result(self.accelerator, scale=1 / steps)
            stats.extras.setdefault("lr", self._get_learning_rate())
        if "post_update_logps" in self.weighting.requires:
            self._mo_post_update_signal(stats)
        self._mo_log_update(self.weighting.update(stats))

    def _mo_post_update_signal(self, stats: ObjectiveStats) -> None:
        n_local = sum(mb["mo_row_index"].numel() for mb in self._buffered_inputs)
        signal = torch.zeros(n_local, dtype=torch.float32)
        unclipped = torch.zeros(2, dtype=torch.float64)  # (unclipped tokens, tokens) on this process
        eps_low, eps_high = self.args.epsilon, self.args.epsilon_high or self.args.epsilon
        for mb in self._buffered_inputs:
            if "mo_old_logps" not in mb:
                raise RuntimeError("CTWA exact statistic: a micro-batch was never trained on, its π_old is unknown")
            new = self._mo_logps(mb)
            mask = mb["completion_mask"].float()
            log_ratio = (new - mb["mo_old_logps"]).float().cpu()
            adv = mb["advantages"].cpu()
            w, n_unclipped = self.weighting.post_update_signal(adv, log_ratio, mask.cpu(), eps_low, eps_high)
            signal[mb["mo_row_index"].cpu()] = w.float()
            unclipped += torch.tensor([n_unclipped, float(mask.sum())], dtype=torch.float64)
        device = self.accelerator.device
        stats.extras["signal"] = self.accelerator.gather(signal.to(device)).cpu()
        totals = self.accelerator.reduce(unclipped.to(device), reduction="sum").cpu()
        stats.extras["unclip_frac"] = float(totals[0] / totals[1].clamp(min=1))

    def _log_mo_metrics(self, mode, r, objective_adv, scalar, advantages) -> None:
        metrics = self._metrics[mode]
        weights = self.weighting.weights()
        for k, name in enumerate(self.objective_names):
            metrics[f"mo/weight/{name}"].append(float(weights[k]))
            metrics[f"mo/reward/{name}/mean"].append(float(torch.nanmean(r[:, k])))
            metrics[f"mo/adv/{name}/mean"].append(float(objective_adv[:, k].mean()))
            metrics[f"mo/adv/{name}/std"].append(float(objective_adv[:, k].std()) if len(r) > 1 else 0.0)
        # TRL appended `reward`/`reward_std` from its own reward_weights; make them the optimised signal.
        finite = scalar[~torch.isnan(scalar)]
        if metrics.get("reward"):
            metrics["reward"][-1] = float(finite.mean()) if finite.numel() else float("nan")
        if metrics.get("reward_std"):
            metrics["reward_std"][-1] = float(finite.std()) if finite.numel() > 1 else 0.0
        log = self._logs["advantages"]  # a deque: the completions table shows the advantages really used
        n = advantages.shape[0]
        if len(log) >= n:
            for _ in range(n):
                log.pop()
            log.extend(advantages.tolist())

    def _mo_observe_batch(self, r: torch.Tensor, advantages: torch.Tensor, group_size: int) -> None:
        step = self.state.global_step + 1  # the optimizer step this batch trains
        weights = self.weighting.weights()
        hist = self._mo_history
        hist["weights"].append({"step": step, "weights": dict(zip(self.objective_names, weights.tolist()))})
        means = torch.nanmean(r, dim=0).tolist()
        hist["train_reward"].append({"step": step, "means": dict(zip(self.objective_names, means))})
        if self.monitor is None:
            return
        for key, value in self.monitor.observe_batch(r, advantages, group_size, step).items():
            self._metrics["train"][key].append(value)
        ema = self.monitor.ema.tolist()
        hist["cov_ema"].append({"step": step, "values": dict(zip(self.objective_names, ema))})

    # ---- 3. per-objective advantages reach the loss -------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # `inputs` is TRL's buffered micro-batch, reused across iterations: read our keys, never pop them.
        self.objective_advantages = inputs.get("mo_objective_advantages")
        batch = inputs
        inputs = {k: v for k, v in inputs.items() if not k.startswith("mo_")}
        if "gramian" in self.weighting.requires and self.model.training and self.objective_advantages is not None:
            if return_outputs:
                raise ValueError("MOGRPOTrainer does not support returning outputs")
            return self._mo_gradient_loss(model, inputs, self.objective_advantages)
        if "mo_row_index" not in batch or "mo_old_logps" in batch:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        with self._mo_tap_logps() as tap:  # first forward of a batch awaiting the post-update statistic
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        batch["mo_old_logps"] = tap["out"][0].detach()  # the buffered micro-batch: kept for _mo_post_update
        return result

    @contextlib.contextmanager
    def _mo_tap_logps(self):
        """Memoise ``_get_per_token_logps_and_entropies`` for one micro-batch: the first call's output is kept in
        the yielded dict (``"out"``) and returned to every later call (one forward serves several losses)."""
        memo: dict[str, Any] = {}
        compute = self._get_per_token_logps_and_entropies

        def memoised(*a, **k):
            if "out" not in memo:
                memo["out"] = compute(*a, **k)
            return memo["out"]

        self._get_per_token_logps_and_entropies = memoised
        try:
            yield memo
        finally:
            del self._get_per_token_logps_and_entropies

    # ---- 3b. gradient space: per-objective losses from one forward, the global Gram matrix ----------------------
    def _mo_gradient_loss(self, model, inputs, objective_adv: torch.Tensor) -> torch.Tensor:
        """L = Σ_k α_k L_k (gradient space) or the ordinary loss (reward space), plus the Gram matrix of ∇L_k.

        One forward: ``_get_per_token_logps_and_entropies`` is memoised for this micro-batch so TRL's
        ``_compute_loss`` can be evaluated once per objective with that objective's advantages. Since
        ∇(Σ α_k L_k) = Σ α_k ∇L_k, back-propagating the weighted loss applies the combined gradient exactly; when
        the Gram matrix already covers every trainable parameter, the K gradients are combined directly (K backward
        passes in all instead of K + 1).

        Which gradients enter a Gram matrix (``mo_align.gram``): a ``micro_batch`` gradient weighting (MGDA) solves on
        this micro-batch's own; an ``optimizer_step`` one (GradNorm) applies its held ``weights()`` and sees the Gram
        matrix of the whole step's accumulated gradients after the step; a reward-space one (Dynamic) sees the Gram
        matrix of the generation batch's accumulated gradients, taken on the first pass over it (π_old, as the
        reference's separate gradient pass), after the batch is consumed.
        """
        metrics = self._metrics["train"]
        weighting = self.weighting
        gradient_space = weighting.space == "gradient"
        every = self.args.steps_per_generation
        first_pass = self._step % (every * self.num_iterations) < every  # this micro-batch's first iteration
        with self._mo_tap_logps() as memo:
            start = {key: len(v) for key, v in metrics.items()}
            first: dict[str, int] | None = None
            losses = []
            for k in range(objective_adv.shape[1]):
                losses.append(GRPOTrainer._compute_loss(self, model, {**inputs, "advantages": objective_adv[:, k]}))
                first = first or {key: len(v) for key, v in metrics.items()}
            own_loss = None if gradient_space else GRPOTrainer._compute_loss(self, model, inputs)
            # TRL logs entropy / clip ratios on every call: keep one call's entries only
            for key, v in metrics.items():
                del v[first.get(key, start.get(key, 0)) :]
        if not gradient_space:
            if first_pass:  # Dynamic: the generation batch's gradients at π_old
                local, _ = self._mo_local_gradients(model, losses, memo["out"][0], direct=False)
                self._mo_acc.add(local, torch.stack([x.detach() for x in losses]))
            return own_loss
        direct = self.args.gramian_space == "parameters" and self._mo_gram_params(model) and self._mo_params_all
        local, used = self._mo_local_gradients(model, losses, memo["out"][0], direct=direct)
        loss_vec = torch.stack([x.detach() for x in losses])
        if weighting.gradient_cadence == "optimizer_step":
            self._mo_acc.add(local, loss_vec)  # GradNorm: weights held for the step, stepped after it
            alpha = weighting.weights()
        else:
            acc = GramAccumulator(self.args.gramian_space)
            acc.add(local, loss_vec)
            gram, loss_vec = acc.result(self.accelerator)
            alpha, extra = weighting.gradient_weights(gram, loss_vec)
            alpha = self._mo_finite_alpha(alpha, extra, gram)
            for k, name in enumerate(self.objective_names):
                metrics[f"mo/grad_norm/{name}"].append(float(gram[k, k].clamp(min=0).sqrt()))
        for k, name in enumerate(self.objective_names):
            metrics[f"mo/grad_weight/{name}"].append(float(alpha[k]))
        alpha = alpha.to(losses[0].device, losses[0].dtype)
        if not direct:
            return sum(alpha[k] * losses[k] for k in range(len(losses)))
        # The Gram pass already holds every ∇L_k (this rank's): apply Σ_k α_k ∇L_k through a surrogate that is
        # linear in the parameters instead of one more backward through the model. Its value is Σ_k α_k L_k, its
        # gradient Σ_k α_k ∇L_k (loss scaling, accumulation and DDP's all-reduce act on it as on any loss).
        combined = alpha.to(local) @ local  # (P,)
        surrogate, offset = torch.zeros((), device=local.device), 0
        for p, is_used in zip(self._mo_params, used, strict=True):
            if is_used:  # a parameter no loss reached keeps grad None, as after a plain backward
                surrogate = surrogate + (p.float() * combined[offset : offset + p.numel()].view_as(p).float()).sum()
            offset += p.numel()
        value = sum(alpha[k] * losses[k].detach() for k in range(len(losses)))
        return value + (surrogate - surrogate.detach()).to(value)

    def _mo_finite_alpha(self, alpha: torch.Tensor, extra: dict[str, float], gram: torch.Tensor) -> torch.Tensor:
        """Log a gradient weighting's metrics; stop the run naming the strategy when α is not finite (a NaN Gram
        matrix means NaN gradients: no weighting of them is worth applying)."""
        if not torch.isfinite(alpha).all():
            cause = "its Gram matrix is not finite" if not torch.isfinite(gram).all() else "its solver diverged"
            raise FloatingPointError(
                f"{self.weighting.name}: non-finite gradient weights {[round(x, 4) for x in alpha.tolist()]} at step "
                f"{self.state.global_step} ({cause}); the run stops here instead of training on garbage"
            )
        for key, value in extra.items():
            self._metrics["train"][f"mo/{self.weighting.name}/{key}"].append(float(value))
        return alpha

    def _mo_step_gradient_weights(self) -> None:
        """After an optimizer step: an ``optimizer_step`` gradient weighting sees the step's Gram matrix (collective)."""
        if not len(self._mo_acc):
            return
        gram, losses = self._mo_acc.result(self.accelerator)
        _, extra = self.weighting.gradient_weights(gram, losses)
        self._mo_finite_alpha(torch.zeros(0), extra, gram)
        for k, name in enumerate(self.objective_names):
            self._metrics["train"][f"mo/grad_norm/{name}"].append(float(gram[k, k].clamp(min=0).sqrt()))

    def _mo_local_gradients(self, model, losses: list[torch.Tensor], logps: torch.Tensor, direct: bool):
        """This rank's per-objective gradients of one micro-batch: (K, P) on ``gramian_params`` (parameters) or
        (K, T) w.r.t. the per-token log-probabilities (logprobs), and which parameters any loss reached.

        ``direct``: the Gram covers every trainable parameter and these gradients will be applied as the update
        (no later backward through the graph, so the last one frees it).
        ``parameters`` differentiates w.r.t. the ``gramian_params`` subset (K backward passes through it);
        ``logprobs`` w.r.t. the per-token log-probabilities (cheap: no extra backward through the model).
        """
        if self.args.gramian_space == "logprobs":
            flat = [torch.autograd.grad(x, logps, retain_graph=True)[0].reshape(-1) for x in losses]
            return torch.stack(flat), None
        params = self._mo_gram_params(model)
        rows, used = [], [False] * len(params)
        for k, x in enumerate(losses):
            last = direct and k == len(losses) - 1  # nothing back-propagates through the graph after this one
            grads = torch.autograd.grad(x, params, retain_graph=not last, allow_unused=True)
            used = [u or g is not None for u, g in zip(used, grads, strict=True)]
            rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in
                                   zip(grads, params, strict=True)]))  # fmt: skip
        return torch.stack(rows), used

    def _mo_gram_params(self, model) -> list[torch.nn.Parameter]:
        if self._mo_params is None:
            pattern = self.args.gramian_params
            named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
            if pattern:
                regex = re.compile(pattern)
                named = [(n, p) for n, p in named if regex.search(n)]
            if not named:
                raise ValueError(f"gramian_params {pattern!r} matches no trainable parameter")
            self._mo_params = [p for _, p in named]
            self._mo_params_all = len(named) == sum(1 for p in model.parameters() if p.requires_grad)
        return self._mo_params

    # ---- 4. checkpointing ---------------------------------------------------------------------------------------
    def mo_state_dict(self) -> dict[str, Any]:
        rewards = {
            name: fn.state_dict()
            for name, fn in zip(self.reward_func_names, self.reward_funcs, strict=True)
            if hasattr(fn, "state_dict") and not isinstance(fn, torch.nn.Module)
        }
        return {
            "weighting": self.weighting.name,
            "weighting_state": self.weighting.state_dict(),
            "rewards": rewards,
            "eval_start": self._mo_eval_start,
            "eval_starts": getattr(self, "_mo_eval_starts", None) or {},  # further eval datasets (a dict)
            "monitor": self.monitor.state_dict() if self.monitor is not None else None,
            "history": self._mo_history,
        }

    def load_mo_state_dict(self, state: dict[str, Any]) -> None:
        if state["weighting"] != self.weighting.name:
            raise ValueError(f"checkpoint holds weighting {state['weighting']!r}, run uses {self.weighting.name!r}")
        self.weighting.load_state_dict(state["weighting_state"])
        self._mo_eval_start = state.get("eval_start")
        self._mo_eval_starts = dict(state.get("eval_starts") or {})
        if self.monitor is not None and state.get("monitor") is not None:
            self.monitor.load_state_dict(state["monitor"])
        if state.get("history") is not None:
            self._mo_history = state["history"]
        for name, fn in zip(self.reward_func_names, self.reward_funcs, strict=True):
            if name in state["rewards"]:
                fn.load_state_dict(state["rewards"][name])

    def _save_checkpoint(self, model, trial):
        """transformers' checkpoint + ``mo_state.pt``, then the completeness marker (``mo_align.checkpoints``);
        older checkpoints are rotated away only once this one is complete."""
        run_dir = self._get_output_dir(trial=trial)
        folder = os.path.join(run_dir, f"checkpoint-{self.state.global_step}")
        if self.args.should_save:
            checkpoints.unmark(folder)
        limit, self.args.save_total_limit = self.args.save_total_limit, None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        if self.args.should_save:
            torch.save(self.mo_state_dict(), os.path.join(folder, MO_STATE_FILE))
        self.accelerator.wait_for_everyone()  # every rank's files (RNG states, shards) are written
        if self.args.should_save:
            checkpoints.mark_complete(folder)
            rotate_checkpoints(run_dir, limit, self.state.best_model_checkpoint, use_mtime=True)

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """``Trainer.train``; ``resume_from_checkpoint=True`` takes the newest *complete* checkpoint, and any
        checkpoint that lacks a file an exact resume needs is refused naming the file."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint, skipped = checkpoints.last_complete_checkpoint(self.args.output_dir)
            for folder, reason in skipped:
                logger.warning("skipping incomplete checkpoint %s: %s", folder, reason)
            if resume_from_checkpoint is None:
                raise ValueError(f"No complete checkpoint found in output directory ({self.args.output_dir})")
        if isinstance(resume_from_checkpoint, str):
            sharded = self.is_deepspeed_enabled or self.is_fsdp_enabled
            required = checkpoints.required_files(
                self.args.world_size, self.args.process_index, sharded, self.args.save_only_model
            )
            checkpoints.check_resumable(resume_from_checkpoint, required)
        return super().train(resume_from_checkpoint, trial, ignore_keys_for_eval, **kwargs)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, MO_STATE_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} is missing: cannot restore the weighting state of this checkpoint")
        try:
            state = torch.load(path, weights_only=False)
        except Exception as exc:  # truncated / empty: name the file, not only "PytorchStreamReader failed"
            raise RuntimeError(f"{path} is unreadable (truncated or corrupt): {type(exc).__name__}") from exc
        self.load_mo_state_dict(state)

    # ---- 5. per-objective evaluation ----------------------------------------------------------------------------
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """transformers' ``evaluate`` with the per-objective loop (:meth:`evaluation_loop`): returns and logs
        ``eval_<objective>/mean|delta`` and ``eval_completion_length/mean`` (trackers file them under ``eval/``;
        ``metric_for_best_model: accuracy/mean`` and early stopping read them), plus ``eval_loss``. A dict of eval
        datasets is evaluated one by one with metrics ``eval_<name>_...``, as transformers does."""
        own = eval_dataset is None or isinstance(eval_dataset, str)  # the trainer's own split (deltas, history)
        if isinstance(eval_dataset, str):
            target = self.eval_dataset[eval_dataset]
        else:
            target = eval_dataset if eval_dataset is not None else self.eval_dataset
        if target is None:
            raise ValueError("evaluate() needs an eval_dataset")
        if isinstance(target, dict):  # transformers calls back here once per dataset, prefix eval_<name>
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        cache_key = (self.state.global_step, metric_key_prefix)
        cache = getattr(self, "_mo_eval_cache", {})
        if own and cache_key in cache:
            # transformers may request a second evaluation at the same step (end of epoch): the parameters have
            # not changed since, so reuse the result instead of decoding and logging it twice.
            return dict(cache[cache_key])
        self._mo_eval_target = (target, own)
        try:
            metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        finally:
            self._mo_eval_target = None
        if own:
            self._mo_eval_cache = {k: v for k, v in cache.items() if k[0] == cache_key[0]} | {cache_key: dict(metrics)}
        self.write_summary()
        return metrics

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        """TRL's loop (``eval_loss``; when ``mo_eval_loss``), then the per-objective decode of the same split."""
        from transformers.trainer_utils import EvalLoopOutput

        target, own = getattr(self, "_mo_eval_target", None) or (dataloader.dataset, False)
        metrics: dict[str, float] = {}
        if self.args.mo_eval_loss:
            output = super().evaluation_loop(
                dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
            )
            metrics.update(output.metrics)
        scores, lengths = decode_and_score(self, eval_rows(target), f"{description} (per objective)")
        metrics.update(self._mo_eval_metrics(scores, lengths, metric_key_prefix, own))
        return EvalLoopOutput(predictions=None, label_ids=None, metrics=metrics, num_samples=len(lengths))

    def _mo_eval_metrics(self, scores: torch.Tensor, lengths: torch.Tensor, p: str, own: bool) -> dict[str, float]:
        """Metrics ``<p>_<objective>/mean`` (+ ``/delta`` vs the first evaluation of the trainer's own split); the
        primary split (``eval``, or the first of a dict) also feeds the run summary and the interference monitor."""
        metrics: dict[str, float] = {}
        k_obj = len(self.objective_names)
        rewards = scores[:, :k_obj].clone()
        for j, k in enumerate(fixed_reference_columns(self.reward_funcs)):
            # the paper's conciseness compares with the training running mean, which ratchets toward the policy and
            # hides a collapse (LAB_NOTES §4): log both; `mo_eval_fixed_reference` picks the one used as the mean
            fixed, running = scores[:, k_obj + j], scores[:, k]
            name = self.objective_names[k]
            metrics[f"{p}_{name}/fixed_ref"] = float(torch.nanmean(fixed)) if (~torch.isnan(fixed)).any() else math.nan
            metrics[f"{p}_{name}/running_mean"] = float(torch.nanmean(running))
            if self.args.mo_eval_fixed_reference:
                rewards[:, k] = fixed
        for k, name in enumerate(self.objective_names):
            col = rewards[:, k]
            finite = col[~torch.isnan(col)]
            metrics[f"{p}_{name}/mean"] = float(finite.mean()) if finite.numel() else float("nan")
        metrics[f"{p}_completion_length/mean"] = float(lengths.float().mean())
        if not own:
            return metrics  # a dataset passed to evaluate(): no start to compare with
        means = {name: metrics[f"{p}_{name}/mean"] for name in self.objective_names}
        scalar = self.weighting.scalarize(rewards)
        scalar_mean = float(torch.nanmean(scalar)) if (~torch.isnan(scalar)).any() else math.nan
        primary = p == ("eval" if not isinstance(self.eval_dataset, dict) else f"eval_{next(iter(self.eval_dataset))}")
        starts = getattr(self, "_mo_eval_starts", None)
        if starts is None:
            starts = self._mo_eval_starts = {}
        start = self._mo_eval_start if primary else starts.get(p)
        if start is None:
            start = {**means, "__scalar__": scalar_mean}
            if primary:
                self._mo_eval_start = start
            else:
                starts[p] = start
        for name in self.objective_names:
            metrics[f"{p}_{name}/delta"] = means[name] - start.get(name, math.nan)
        if primary:
            step = self.state.global_step
            length = metrics[f"{p}_completion_length/mean"]
            self._mo_history["eval"].append({"step": step, "means": means, "completion_length": length})
            if self.monitor is not None:
                start_scalar = start.get("__scalar__", math.nan)
                metrics.update(self.monitor.observe_eval(means, start, scalar_mean, start_scalar, step))
        return metrics

    # ---- 6. run summary -----------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The run summary (``mo_summary.json``): eval curve, weights, covariance EMAs, events, final/best/delta."""
        hist = self._mo_history
        evals = hist["eval"]
        start = {k: v for k, v in (self._mo_eval_start or {}).items() if k != "__scalar__"}
        final = dict(evals[-1]["means"]) if evals else {}
        best = {n: max(e["means"][n] for e in evals) for n in self.objective_names} if evals else {}
        return {
            "version": 1,
            "run_name": self.args.run_name or os.path.basename(os.path.normpath(self.args.output_dir)),
            "output_dir": os.path.abspath(self.args.output_dir),
            "algorithm": getattr(self, "mo_run_label", None) or self.weighting.name,
            "weighting_hyperparameters": _json_safe(self.weighting.hyperparameters()),
            "advantage_estimator": self.args.advantage_estimator,
            "objectives": list(self.objective_names),
            "seed": self.args.seed,
            "launch_command": redact(typed_command()),
            "eval": evals,
            "start": start,
            "final": final,
            "best": best,
            "delta": {n: final[n] - start[n] for n in final if n in start},
            "weights": hist["weights"],
            "cov_ema": hist["cov_ema"],
            "train_reward": hist["train_reward"],
            "events": list(self.monitor.events) if self.monitor is not None else [],
        }

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        """mo_align's model card (``mo_align.hub``): algorithm, objectives, eval table, weight plot, events, command.

        Called by transformers' ``push_to_hub`` and by TRL at every checkpoint; writes ``README.md`` and
        ``mo_weights.png`` into ``output_dir`` (main process only).
        """
        from mo_align.hub import trainer_model_card

        trainer_model_card(self, model_name=model_name, dataset_name=dataset_name, tags=tags)

    def write_summary(self, force: bool = True) -> None:
        """Write ``<output_dir>/mo_summary.json`` atomically (main process). During training it is rewritten at
        most every ``SUMMARY_EVERY_S`` seconds (``force=False``, on log) and always after an evaluation, at a
        checkpoint and at the end of training, so the whole history is not re-serialised at every log step."""
        if not self.args.mo_diagnostics or not self.accelerator.is_main_process:
            return
        now = time.monotonic()
        if not force and now - getattr(self, "_mo_summary_time", -math.inf) < self.SUMMARY_EVERY_S:
            return
        self._mo_summary_time = now
        os.makedirs(self.args.output_dir, exist_ok=True)
        path = os.path.join(self.args.output_dir, "mo_summary.json")
        with open(path + ".tmp", "w") as f:
            json.dump(_json_safe(self.summary()), f, indent=1)
        os.replace(path + ".tmp", path)

    # ---- 7. vLLM server mode ------------------------------------------------------------------------------------
    def training_step(self, model, inputs, num_items_in_batch=None):
        """A vLLM server failure (mo_align.vllm.client.VLLMServerError, raised on every process) stops the run after a
        checkpoint of the last finished step is written, so the work done so far is kept."""
        from mo_align.vllm.client import VLLMServerError

        try:
            return super().training_step(model, inputs, num_items_in_batch)
        except VLLMServerError as exc:
            raise type(exc)(f"{exc}\n{self._mo_vllm_rescue()}") from exc

    def _mo_vllm_rescue(self) -> str:
        step, strategy = self.state.global_step, getattr(self.args.save_strategy, "value", self.args.save_strategy)
        if strategy == "no" or step == 0:
            return f"no checkpoint written (save_strategy={strategy!r}, global_step={step})"
        # Optimizer step `step` is complete (checkpoints never hold partial gradients): save the state after it.
        self._save_checkpoint(self.model_wrapped, trial=None)
        path = os.path.join(self.args.output_dir, f"checkpoint-{step}")
        return f"checkpoint of step {step} saved to {path}; resume with --resume_from_checkpoint {path}"


class _PostUpdateHook(TrainerCallback):
    """Runs the deferred post-update statistic once a generation batch has been fully consumed.

    ``on_step_end`` fires after the optimizer step and before logging and checkpointing, so a checkpoint always holds
    a weighting state that includes every finished batch (exact resume).
    """

    def __init__(self, trainer: MOGRPOTrainer) -> None:
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        t = self.trainer
        if t.weighting.space == "gradient" and t.weighting.gradient_cadence == "optimizer_step":
            t._mo_step_gradient_weights()
        generate_every = t.args.steps_per_generation * t.num_iterations
        if t._mo_pending is not None and t._step % generate_every == 0:
            t._mo_post_update()
        check_finite_weights(t.weighting, state.global_step)  # gradient-space states move inside compute_loss

    def on_log(self, args, state, control, **kwargs):
        self.trainer.write_summary(force=False)  # throttled: a killed run still has a recent summary

    def on_save(self, args, state, control, **kwargs):
        self.trainer.write_summary()

    def on_train_end(self, args, state, control, **kwargs):
        self.trainer.write_summary()


def _json_safe(value: Any) -> Any:
    """Tensors and tuples to lists, non-finite floats to None, recursively (JSON has no NaN)."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
