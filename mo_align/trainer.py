"""``MOGRPOTrainer``: TRL's GRPOTrainer with a multi-reward head and a swappable ``Weighting``.

This is the only module that touches TRL private methods (guarded by ``tests/test_trl_contract.py``). Overrides:

1. ``_calculate_rewards`` — ``super()``, then keep the gathered (N, K) reward matrix r.
2. ``_generate_and_score_completions`` — ``super()``, then replace the batch's advantages by the weighting's:
   ``A = weighting.combine(ObjectiveStats(r, G, L, ...))`` computed on the gathered batch (identical on every
   rank) and sliced to this process; carry the per-objective advantages (B, K) when the weighting asks for them;
   call ``weighting.update`` once per training generation batch; log under ``mo/``; make TRL's logged ``reward``
   the mean of the signal actually optimised, s = weighting.scalarize(r) (TRL issue #5352).
3. ``compute_loss`` — takes the per-objective advantages out of the inputs (exposed to gradient-space
   strategies as ``self.objective_advantages``), then ``super()``.
4. ``_save_checkpoint`` / ``_load_optimizer_and_scheduler`` — persist the weighting state and the state of
   stateful reward functions (``mo_state.pt``), as TRL does for its entropy controller.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from trl import GRPOTrainer

from mo_align.configs import MOGRPOConfig
from mo_align.weightings import ObjectiveStats, Weighting, get_weighting


MO_STATE_FILE = "mo_state.pt"


class MOGRPOTrainer(GRPOTrainer):
    """GRPO with K objectives kept apart until a ``Weighting`` combines them.

    Args:
        model, reward_funcs, train_dataset, eval_dataset, processing_class, callbacks, peft_config, ...:
            as [`trl.GRPOTrainer`]; ``reward_funcs`` are the K objectives, in order.
        args ([`MOGRPOConfig`]): adds ``weighting``, ``weighting_kwargs``, ``advantage_estimator``.
        weighting ([`Weighting`], *optional*): an instance to use instead of building ``args.weighting``
            (dependency injection for custom strategies and tests).
    """

    _tag_names = ["trl", "grpo", "mo_align"]  # noqa: RUF012

    def __init__(self, model: Any, reward_funcs: Any = None, args: MOGRPOConfig | None = None, *a: Any, **kw: Any):
        weighting: Weighting | None = kw.pop("weighting", None)
        if args is None or not isinstance(args, MOGRPOConfig):
            raise TypeError("MOGRPOTrainer needs args=MOGRPOConfig(...)")
        funcs = reward_funcs if isinstance(reward_funcs, list) else [reward_funcs]
        k = len(funcs)
        if weighting is None:
            weighting = get_weighting(args.weighting, k, **(args.weighting_kwargs or {}))
        elif weighting.num_objectives != k:
            raise ValueError(f"weighting has {weighting.num_objectives} objectives but {k} reward_funcs were given")
        self.weighting = weighting
        self.objective_advantages: torch.Tensor | None = None  # (B, K) of the current micro-batch
        self._mo_rewards: torch.Tensor | None = None
        super().__init__(model, reward_funcs, args, *a, **kw)
        self.objective_names: tuple[str, ...] = tuple(self.reward_func_names)

    # ---- 1. capture the gathered reward matrix ----------------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        training = self.model.training
        for fn in self.reward_funcs:
            if hasattr(fn, "training") and not isinstance(fn, torch.nn.Module):
                fn.training = training  # stateful rewards (running means) move on training batches only
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._mo_rewards = rewards.detach().float().cpu()  # (N, K), gathered over processes
        return rewards

    # ---- 2. replace the advantages ------------------------------------------------------------------------------
    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
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
        advantages = self.weighting.combine(stats)  # (N,)
        if not torch.isfinite(advantages).all():
            raise FloatingPointError(f"{self.weighting!r} produced non-finite advantages")
        lo = self.accelerator.process_index * n_local
        out["advantages"] = advantages[lo : lo + n_local].to(out["advantages"])
        objective_adv = stats.objective_advantages()  # (N, K)
        if self.weighting.needs_objective_advantages:
            out["mo_objective_advantages"] = objective_adv[lo : lo + n_local].to(out["advantages"].device)
        scalar = self.weighting.scalarize(r)  # (N,) the signal actually optimised
        self._log_mo_metrics(mode, r, objective_adv, scalar, advantages)
        if mode == "train":
            for key, value in self.weighting.update(stats).items():
                self._metrics[mode][f"mo/{self.weighting.name}/{key}"].append(float(value))
        return out

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

    # ---- 3. per-objective advantages reach the loss -------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.objective_advantages = inputs.pop("mo_objective_advantages", None)
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    # ---- 4. checkpointing ---------------------------------------------------------------------------------------
    def mo_state_dict(self) -> dict[str, Any]:
        rewards = {
            name: fn.state_dict()
            for name, fn in zip(self.reward_func_names, self.reward_funcs, strict=True)
            if hasattr(fn, "state_dict") and not isinstance(fn, torch.nn.Module)
        }
        return {"weighting": self.weighting.name, "weighting_state": self.weighting.state_dict(), "rewards": rewards}

    def load_mo_state_dict(self, state: dict[str, Any]) -> None:
        if state["weighting"] != self.weighting.name:
            raise ValueError(f"checkpoint holds weighting {state['weighting']!r}, run uses {self.weighting.name!r}")
        self.weighting.load_state_dict(state["weighting_state"])
        for name, fn in zip(self.reward_func_names, self.reward_funcs, strict=True):
            if name in state["rewards"]:
                fn.load_state_dict(state["rewards"][name])

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
            torch.save(self.mo_state_dict(), os.path.join(folder, MO_STATE_FILE))

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, MO_STATE_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} is missing: cannot restore the weighting state of this checkpoint")
        self.load_mo_state_dict(torch.load(path, weights_only=False))
