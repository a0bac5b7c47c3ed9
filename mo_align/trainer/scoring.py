"""A scored generation batch becomes the weighting's advantages (the trainer's override 2).

On the gathered (N, K) reward matrix r (identical on every rank): ``ObjectiveStats(r, G, L, ...)``, then, on a
training batch, ``weighting.pre_update`` and (``update_first``) ``weighting.update``; A = ``weighting.combine(stats)``
sliced to this process; the per-objective advantages (B, K) when the weighting asks for them; the logged metrics
(``mo/...``, among them ``mo/scalar/mean|std``, the signal actually optimised, s = weighting.scalarize(r) — for
gradient- and advantage-space strategies Σ_k w_k r_k with their current weights, GradNorm's summing to K; TRL's own
``reward``, ``reward_std`` and ``rewards/<objective>/mean|std`` keep TRL's meaning); then the state transition at the right time (right
away, or after the batch is consumed: :mod:`mo_align.trainer.post_update`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from mo_align.trainer import trl_compat
from mo_align.weightings import ObjectiveStats


if TYPE_CHECKING:
    from mo_align.trainer import MOGRPOTrainer


def score_batch(trainer: MOGRPOTrainer, out: dict[str, Any]) -> dict[str, Any]:
    """Replace TRL's advantages in ``out`` (the local generation batch) by the weighting's."""
    t, mo = trainer, trainer.mo
    weighting, needs, r = mo.weighting, mo.needs, mo.rewards
    train = t.model.training
    n_local = out["advantages"].shape[0]
    lengths = t.accelerator.gather(out["completion_mask"].sum(dim=1)).float().cpu()  # (N,)
    group_size = t.num_generations if train else t.num_generations_eval
    stats = ObjectiveStats(
        rewards=r,
        group_size=group_size,
        lengths=lengths,
        estimator=t.args.advantage_estimator,
        scale_rewards=t.scale_rewards,
        step=t.state.global_step,
        objective_names=mo.objective_names,
    )
    if train:
        t.mo_log_update(weighting.pre_update(stats))
    if train and needs.update == "before_combine":
        t.mo_log_update(weighting.update(stats))
    cond = mo.conditioning  # preference-conditioned training: each row scored with its prompt's preference
    advantages = weighting.combine(stats) if cond is None else cond.combine(weighting, stats)  # (N,)
    if not torch.isfinite(advantages).all():
        raise FloatingPointError(f"{weighting!r} produced non-finite advantages")
    lo = t.accelerator.process_index * n_local
    out["advantages"] = advantages[lo : lo + n_local].to(out["advantages"])
    objective_adv = stats.objective_advantages()  # (N, K)
    if needs.objective_advantages:
        out["mo_objective_advantages"] = objective_adv[lo : lo + n_local].to(out["advantages"].device)
    scalar = weighting.scalarize(r) if cond is None else cond.scalarize(weighting, r)
    log_batch(t, "train" if train else "eval", r, objective_adv, scalar, advantages)
    if train:
        t.mo_observe_batch(r, advantages, group_size)
    stats.extras["signal"] = advantages  # the on-policy induced weight w_i = A_i (ratio 1)
    if train and needs.post_update_logps:
        mo.post_update.prepare(out, stats)  # the statistic waits for log π after this batch's updates
    elif train and needs.update == "after_batch":
        mo.post_update.pending = stats  # updated from the Gram matrix accumulated while training on this batch
        stats.extras["lr"] = trl_compat.learning_rate(t)  # η_t of this batch's first step (before the scheduler)
    elif train and needs.update == "after_combine":
        t.mo_log_update(weighting.update(stats))
    return out


def log_batch(trainer: MOGRPOTrainer, mode: str, r, objective_adv, scalar, advantages) -> None:
    """``mo/weight|adv`` per objective, ``mo/scalar/mean|std`` (the weighting's scalar s over the batch, NaN rows
    left out), and the completion table's advantages made the ones actually used. TRL's ``reward`` / ``reward_std``
    (the weighted sum with TRL's ``reward_weights``, ones here) and ``rewards/<objective>/mean|std`` stay TRL's."""
    metrics = trl_compat.metrics(trainer, mode)
    weights = trainer.weighting.weights()
    for k, name in enumerate(trainer.objective_names):
        metrics[f"mo/weight/{name}"].append(float(weights[k]))
        metrics[f"mo/adv/{name}/mean"].append(float(objective_adv[:, k].mean()))
        metrics[f"mo/adv/{name}/std"].append(float(objective_adv[:, k].std()) if len(r) > 1 else 0.0)
    finite = scalar[~torch.isnan(scalar)]
    metrics["mo/scalar/mean"].append(float(finite.mean()) if finite.numel() else float("nan"))
    metrics["mo/scalar/std"].append(float(finite.std()) if finite.numel() > 1 else 0.0)
    log = trl_compat.completion_log(trainer, "advantages")
    n = advantages.shape[0]
    if len(log) >= n:
        for _ in range(n):
            log.pop()
        log.extend(advantages.tolist())
