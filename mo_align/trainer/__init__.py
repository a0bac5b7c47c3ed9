"""``MOGRPOTrainer``: TRL's GRPOTrainer with a multi-reward head and a swappable ``Weighting``. Hook wiring only.

The class below overrides TRL / transformers hooks and delegates each concern to one module of this package; every
TRL private name it touches is listed in :mod:`mo_align.trainer.trl_compat` (checked by
``tests/test_trl_contract.py``). The override map:

1. ``_calculate_rewards`` — ``super()``, each reward's output checked and timed (``mo_align.rewards.checks``), then
   the gathered (N, K) reward matrix r is kept (``mo.rewards``).
2. ``_generate_and_score_completions`` — with ``preference_conditioning``, a preference drawn per prompt and stated
   in it first (:mod:`~mo_align.trainer.conditioning`); ``super()``, then the weighting's advantages replace TRL's
   (:mod:`~mo_align.trainer.scoring`): ``weighting.combine(ObjectiveStats(r, G, L, ...))`` on the gathered batch,
   sliced to this process, the per-objective advantages carried when asked for, ``mo/...`` metrics, and the state
   transition now or after the batch is consumed.
3. ``compute_loss`` — gradient-space machinery (:mod:`~mo_align.trainer.gradient`: per-objective losses from one
   forward, Gram matrices of whole batches, Σ_k α_k ∇L_k) for strategies that ``require`` a ``"gramian"``; π_old
   kept for CTWA's exact statistic (:mod:`~mo_align.trainer.post_update`); else ``super()``.
4. ``_save_checkpoint`` / ``train`` / ``_load_optimizer_and_scheduler`` — ``mo_state.pt`` and complete checkpoints
   (:mod:`~mo_align.trainer.state`).
5. ``evaluate`` / ``evaluation_loop`` — transformers' ``evaluate`` around a loop that runs TRL's (``eval_loss``)
   and the per-objective decode (:mod:`~mo_align.trainer.evaluation`): ``eval_<objective>/mean|delta``.
6. ``create_model_card`` / ``write_summary`` — the model card (``mo_align.runs.card``) and ``mo_summary.json``
   (``mo_align.runs.summary``, its one owner).
7. ``training_step`` — a vLLM server failure (``mo_align.vllm``) stops the run after a checkpoint of the last
   finished step.

A callback (:class:`~mo_align.trainer.post_update.MOCallback`) runs what waits for the optimizer step: CTWA's
post-update statistic, Dynamic's batch Gram matrix, GradNorm's weight step, the throttled summary.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import torch
from accelerate.utils import gather_object
from transformers.trainer_utils import EvalLoopOutput
from trl import GRPOTrainer

from mo_align.configs import MOGRPOConfig, resolve_config
from mo_align.diagnostics import InterferenceMonitor
from mo_align.objectives import ObjectivePlan
from mo_align.rewards.checks import RewardMonitor
from mo_align.rewards.unscorable import check_scorable
from mo_align.runs import progress
from mo_align.runs.card import trainer_model_card
from mo_align.runs.summary import summary_from_trainer, write_summary
from mo_align.trainer import evaluation, state, trl_compat
from mo_align.trainer.checks import check_layout, check_setup
from mo_align.trainer.conditioning import Conditioning
from mo_align.trainer.gradient import GradientSpace
from mo_align.trainer.mostate import MOState, alias
from mo_align.trainer.post_update import MOCallback, PostUpdate
from mo_align.trainer.scoring import score_batch
from mo_align.trainer.state import MO_STATE_FILE
from mo_align.vllm.client import VLLMServerError
from mo_align.vllm.generation import server_mode  # vLLM server mode: mo_align's client, CPU weight sync
from mo_align.weightings import Weighting, get_weighting
from mo_align.weightings.validation import check_finite_weights


__all__ = ["MO_STATE_FILE", "MOGRPOTrainer"]
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

    _tag_names = ["trl", "grpo", "mo_align"]  # noqa: RUF012 (TRL's model tags, trl_compat.ATTRIBUTES)
    SUMMARY_EVERY_S = 30.0  # the longest mo_summary.json lags behind a running training (seconds)

    def __init__(self, model: Any, reward_funcs: Any = None, args: MOGRPOConfig | None = None, *a: Any, **kw: Any):
        weighting: Weighting | None = kw.pop("weighting", None)
        funcs = reward_funcs if isinstance(reward_funcs, list) else [reward_funcs]
        args = resolve_config(args, model, len(funcs))  # None or a plain trl.GRPOConfig, as GRPOTrainer accepts
        plan = ObjectivePlan.for_trainer(funcs, args)  # roles, conditions: the weighting sees the train objectives
        k = len(plan.train_idx)
        if weighting is None:
            weighting = plan.build_weighting(args)
        elif weighting.num_objectives != k:
            given = "reward_funcs were given" if k == len(funcs) else "train objectives (objective_roles)"
            raise ValueError(f"weighting has {weighting.num_objectives} objectives but {k} {given}")
        self.mo = MOState(weighting, plan=plan)  # the multi-objective state, one typed place (trainer.mostate)
        check_layout(weighting, args)
        self.objective_advantages: torch.Tensor | None = None  # (B, K) of the current micro-batch
        with server_mode(args):
            super().__init__(model, reward_funcs, args, *a, **kw)
        mo = self.mo
        check_setup(self, args)
        mo.gradient = GradientSpace(self)
        mo.post_update = PostUpdate(self)
        self.add_callback(MOCallback(self))
        mo.resume_callback = state.ResumeCallback()  # eval_on_start is not repeated at a resume step
        self.add_callback(mo.resume_callback)
        progress.attach(self)  # MO_ALIGN_PROGRESS_FILE: a parent process shows step k/n
        mo.objective_names = tuple(self.reward_func_names)
        mo.conditioning = Conditioning.build(self, weighting)  # preference_conditioning (None without the block)
        mo.plan = plan.matching(mo.objective_names)  # the names TRL gave the reward functions
        mo.reward_monitor = RewardMonitor(mo.objective_names)  # output checks, NaN warnings, timing
        for fn in self.reward_funcs:
            if self.accelerator.num_processes > 1 and hasattr(fn, "all_gather_lengths"):
                # TRL scores each rank's completions locally: a running mean over this rank's lengths only would
                # differ between ranks; every rank calls the reward on every training batch, so a gather is safe.
                fn.all_gather_lengths = lambda xs: gather_object(list(xs))
            if callable(getattr(fn, "warmup", None)):
                fn.warmup()  # start worker processes now, not inside the first batch
        if args.mo_diagnostics:
            mo.monitor = InterferenceMonitor(
                mo.objective_names,
                patience=args.mo_diagnostics_patience,
                tolerance=args.mo_diagnostics_tolerance,
                roles=mo.plan.roles,
            )

    # the state's pieces under their earlier trainer names (read and write ``self.mo``), kept for existing code
    weighting = alias("weighting")
    objective_names = alias("objective_names")
    monitor = alias("monitor")
    mo_needs = alias("needs")
    mo_rewards = alias("rewards")
    mo_history = alias("history")
    mo_eval_start = alias("eval_start")
    mo_eval_starts = alias("eval_starts")
    mo_eval_samples = alias("eval_samples")
    mo_eval_labeler = alias("eval_labeler")
    mo_eval_labels = alias("eval_labels")
    mo_gradient = alias("gradient")
    mo_post_update = alias("post_update")
    mo_reward_monitor = alias("reward_monitor")
    mo_resume_callback = alias("resume_callback")

    # ---- 1. capture the gathered reward matrix ----------------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        training = self.model.training
        for fn in self.reward_funcs:
            if hasattr(fn, "training") and not isinstance(fn, torch.nn.Module):
                fn.training = training  # stateful rewards (running means) move on training batches only
        plan = self.mo.plan  # eval-role objectives are not scored on a training batch (NaN columns)
        with self.mo.reward_monitor.checking(self), plan.scoring(self, training):  # outputs checked and timed
            rewards = plan.expand(
                super()._calculate_rewards(inputs, prompts, completions, completion_ids_list), training
            )
        self.mo.rewards = rewards.detach().float().cpu()  # (N, K), gathered over processes
        skip = plan.eval_only if training else ()
        self.mo.reward_monitor.check_batch(
            self.mo.rewards, trl_compat.metrics(self, "train" if training else "eval"), skip
        )
        if training:  # an objective that never scores, or none scoring for mo_nan_patience batches, stops the run
            observed = self.mo.rewards[:, plan.observed_idx]
            check_scorable(observed, self.mo.history["train_reward"], plan.observed_names, self.args.mo_nan_patience)
        return rewards

    # ---- 2. replace the advantages ------------------------------------------------------------------------------
    def _generate_and_score_completions(self, inputs):
        start = time.perf_counter()
        if self.mo.conditioning is not None:  # a preference drawn per prompt and stated in it, before generation
            inputs = self.mo.conditioning.condition(self, inputs)
        out = super()._generate_and_score_completions(inputs)
        self.mo.reward_monitor.end_batch(time.perf_counter() - start)
        return score_batch(self, out)

    def mo_log_update(self, metrics: dict[str, float]) -> None:
        """Log a state transition's metrics (``mo/<weighting>/...``) after checking the weights stayed finite."""
        check_finite_weights(self.mo.weighting, self.state.global_step)
        for key, value in metrics.items():
            trl_compat.metrics(self, "train")[f"mo/{self.mo.weighting.name}/{key}"].append(float(value))

    def mo_observe_batch(self, r: torch.Tensor, advantages: torch.Tensor, group_size: int) -> None:
        """A training batch in the run history (raw reward means of the objectives scored in training) and the
        interference monitor (``r``: every objective, conditions applied; the eval-role columns NaN)."""
        mo, step = self.mo, self.state.global_step + 1  # the optimizer step this batch trains
        hist, observed, names = mo.history, mo.plan.observed_idx, mo.plan.observed_names
        hist["weights"].append(
            {"step": step, "weights": dict(zip(mo.weighted_names, mo.weighting.weights().tolist()))}
        )
        means = torch.nanmean(mo.rewards[:, observed], dim=0).tolist()
        hist["train_reward"].append({"step": step, "means": dict(zip(names, means))})
        if mo.monitor is None:
            return
        for key, value in mo.monitor.observe_batch(r, advantages, group_size, step).items():
            trl_compat.metrics(self, "train")[key].append(value)
        ema = mo.monitor.ema[observed].tolist()
        hist["cov_ema"].append({"step": step, "values": dict(zip(names, ema))})

    # ---- 3. the loss --------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # `inputs` is TRL's buffered micro-batch, reused across iterations: read our keys, never pop them.
        self.objective_advantages = inputs.get("mo_objective_advantages")
        batch, inputs = inputs, {k: v for k, v in inputs.items() if not k.startswith("mo_")}
        if self.mo.needs.gram and self.model.training and self.objective_advantages is not None:
            if return_outputs:
                raise ValueError("MOGRPOTrainer does not support returning outputs")
            return self.mo.gradient.loss(model, inputs, self.objective_advantages)

        def loss() -> Any:
            return super(MOGRPOTrainer, self).compute_loss(model, inputs, return_outputs, num_items_in_batch)

        if "mo_row_index" not in batch or "mo_old_logps" in batch:
            return loss()
        return self.mo.post_update.keep_old_logps(batch, loss)  # a batch awaiting the post-update statistic

    # ---- 4. checkpoints -----------------------------------------------------------------------------------------
    def mo_state_dict(self) -> dict[str, Any]:
        return state.mo_state_dict(self)

    def load_mo_state_dict(self, mo_state: dict[str, Any]) -> None:
        state.load_mo_state_dict(self, mo_state)

    def _save_checkpoint(self, model, trial):
        state.save_checkpoint(self, lambda: super(MOGRPOTrainer, self)._save_checkpoint(model, trial), trial)

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """``Trainer.train``; ``resume_from_checkpoint=True`` takes the newest *complete* checkpoint, and any
        checkpoint that lacks a file an exact resume needs is refused naming the file. A checkpoint already at
        ``max_steps`` is restored without training (:func:`~mo_align.trainer.state.finish_from_checkpoint`)."""
        resume_from_checkpoint = state.resolve_resume(self, resume_from_checkpoint)
        step = state.checkpoint_step(resume_from_checkpoint)
        if step is not None and 0 < self.args.max_steps <= step:  # transformers would train one step past it
            return state.finish_from_checkpoint(self, resume_from_checkpoint, step)
        try:
            return super().train(resume_from_checkpoint, trial, ignore_keys_for_eval, **kwargs)
        finally:
            self.mo.resume_callback.restore(self.args)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            state.load_checkpoint_state(self, checkpoint)

    # ---- 5. per-objective evaluation ----------------------------------------------------------------------------
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """transformers' ``evaluate`` with the per-objective loop (:meth:`evaluation_loop`): returns and logs
        ``eval_<objective>/mean|delta`` and ``eval_completion_length/mean`` (trackers file them under ``eval/``;
        ``metric_for_best_model: accuracy/mean`` and early stopping read them), plus ``eval_loss``. A dict of eval
        datasets is evaluated one by one with metrics ``eval_<name>_...``, as transformers does."""
        target, own = evaluation.resolve_target(self, eval_dataset)
        if isinstance(target, dict):  # transformers calls back here once per dataset, prefix eval_<name>
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        cache_key, cache = (self.state.global_step, metric_key_prefix), getattr(self, "_mo_eval_cache", {})
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
        target, own = getattr(self, "_mo_eval_target", None) or (dataloader.dataset, False)
        metrics: dict[str, float] = {}
        if self.args.mo_eval_loss:
            output = super().evaluation_loop(
                dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
            )
            metrics.update(output.metrics)
        rows = evaluation.eval_rows(target)
        if self.mo.conditioning is not None:  # every prompt stated with the eval preference
            rows = self.mo.conditioning.state_eval_rows(rows)
        scores, lengths = evaluation.decode_and_score(self, rows, f"{description} (per objective)")
        metrics.update(evaluation.eval_metrics(self, scores, lengths, metric_key_prefix, own))
        return EvalLoopOutput(predictions=None, label_ids=None, metrics=metrics, num_samples=len(lengths))

    # ---- 6. run summary and model card --------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The run summary (``mo_summary.json``, fields in ``mo_align.runs.summary.RunSummary``)."""
        return dict(summary_from_trainer(self))

    def write_summary(self, force: bool = True) -> None:
        """Write ``<output_dir>/mo_summary.json`` (main process). During training it is rewritten at most every
        ``SUMMARY_EVERY_S`` seconds (``force=False``, on log) and always after an evaluation, at a checkpoint and at
        the end of training, so the whole history is not re-serialised at every log step."""
        if not self.args.mo_diagnostics or not self.accelerator.is_main_process:
            return
        now = time.monotonic()
        if not force and now - getattr(self, "_mo_summary_time", -math.inf) < self.SUMMARY_EVERY_S:
            return
        self._mo_summary_time = now
        write_summary(summary_from_trainer(self), self.args.output_dir)

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        """mo_align's model card (:mod:`mo_align.runs.card`): algorithm, objectives, eval table, weight plot, events,
        command. Called by transformers' ``push_to_hub`` and by TRL at every checkpoint (main process only)."""
        trainer_model_card(self, model_name=model_name, dataset_name=dataset_name, tags=tags)

    # ---- 7. vLLM server mode ------------------------------------------------------------------------------------
    def training_step(self, model, inputs, num_items_in_batch=None):
        """A vLLM server failure (``VLLMServerError``, raised on every process) stops the run after a checkpoint of
        the last finished step is written, so the work done so far is kept."""
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
