"""CTWA — Covariance Targeted Weight Adaptation, the method of arXiv 2602.06869 (the paper's §3).

Local covariance law: objective k improves under a policy step when Cov_g(r_k, w̃) > 0 within prompt groups, where
w̃_i is the completion's induced update weight. CTWA raises ℓ_k while that covariance sits below a target c_k:

    w̃_i  = agg_t [ Â_i ρ_it 1[unclipped_it] ]            ρ = π_new/π_old after the batch's update (``exact``),
                                                          or ρ ≡ 1 (``on_policy``, no extra forward):
                                                          w̃_i = Â_i, Â_i L_i/(L_i+1e-8) or Â_i L_i by ``w_agg``
    Ĉ_k  = mean over groups of Cov_g(r_k, w̃)             (population covariance; or pooled over completions)
    e_k  ← Ĉ_k at the first batch, then (1 − τ) e_k + τ Ĉ_k
    ℓ_k  ← ℓ_k + η · max(0, c_k − e_k) · 1[mean r_k < τ_obj,k]
    s_i  = base.scalarize(r_i) with weights base.weights() ∘ exp(ℓ) / w0    (= Σ_k exp(ℓ_k) r_ik for base linear)

The new weights act from the next batch. State: ℓ, e, the deficit streak; all checkpointed. A base with a running
state that includes the batch it scores (``tchebycheff``'s running ideal point, ``update_first``) is advanced in
``pre_update``, before the batch is scored, exactly as when it runs alone.

The unclipped indicator is TRL's token-level PPO clip (loss types grpo, bnpo, dr_grpo, dapo, luspo with
``importance_sampling_level: token``). ``statistic: exact`` is refused (``MOGRPOConfig``) where the policy loss weighs
tokens otherwise: ``loss_type`` cispo / sapo / vespo, ``importance_sampling_level: sequence``, ``delta`` (two-sided
clip), ``off_policy_mask_threshold`` or ``top_entropy_quantile`` < 1 (token masks the indicator does not see); the
``on_policy`` statistic (ρ ≡ 1: the batch's advantages before any update, whatever the loss) remains available.
The exact statistic is taken once per generation batch, after its last optimizer step, so it is also refused where a
generation batch does not end on one (steps_per_generation × num_iterations not a multiple of
gradient_accumulation_steps).

Args:
    num_objectives (`int`): K.
    weights (`list[float]`, *optional*): initial weights w0 (default uniform); ℓ0 = log(max(w0, 1e-8)).
    cov_targets (`list[float]` or `float`, *optional*, defaults to `0.1`): c (paper recipe [0.15, 0.08, 0.08]).
    obj_targets (`list[float]`, `float` or `None`, *optional*, defaults to `None`): gate τ_obj; ``None`` never
        gates (the reference's config uses [1.0, 0.95, 0.95]).
    lambda_lr (`float`, *optional*, defaults to `0.05`): η.   ema_tau (`float`, defaults to `0.1`): τ.
    use_corr_target (`bool`, defaults to `False`): track the correlation instead of the covariance.
    w_agg (`str`, defaults to `"mean"`): token → completion aggregation, ``mean | mean_unclipped | sum``.
    pooled (`bool`, defaults to `False`): pool centred products over completions (reference ``global_metrics``).
    statistic (`str`, defaults to `"exact"`): ``exact`` (post-update forward) or ``on_policy`` (ρ ≡ 1).
    base (`str`, defaults to `"linear"`): the reward-space scalarization CTWA wraps (plug-and-play):
        ``linear | tchebycheff | smooth_tchebycheff``;  base_kwargs (`dict`): its other hyperparameters.
    patience (`int`, defaults to `20`): warn once when every gated objective has been in deficit this many batches.
    max_weight_ratio (`float`, *optional*): bound max_k w_k / min_k w_k (off by default, as in the reference).
    subsample (`float`, defaults to `1.0`): use a random fraction of completions (0.25 approximates the reference's
        rank-0 quarter with split groups).

Deviations from the reference (``compute_ctwa_stats`` and ``_ctwa_update_weights_from_metrics``; the statistic
itself, the outlier filter with numpy's median, population moments, the correlation averaged over the groups whose
std product exceeds 1e-8, EMA, gate and ascent follow it exactly; so does the exclusion of completions without
tokens, whose w̃ is NaN under every ``w_agg`` as the reference's 0/0 sequence advantage):
    1. Statistics use the gathered full batch with complete groups (the reference uses rank 0's shard, 1/W of the
       batch, whose groups hold about G/W members, biasing the population covariance by (m−1)/m with m ≈ G/W
       instead of (G−1)/G; ``subsample: 0.25`` approximates it with a random quarter). With ``subsample`` only the
       covariance sees the subsample: the outlier median, the gate's means and ``unclip_frac`` use the full batch.
    2. State is checkpointed; the weights can be bounded (``max_weight_ratio``) and a stall is reported.
    3. Defaults follow the paper's released recipe where a user would expect them (η 0.05); gating is opt-in
       (the reference's config gates at [1.0, 0.95, 0.95]; pass ``obj_targets`` for it); ``cov_targets`` defaults
       to 0.1 for every objective (reference config [0.1, 0.05, 0.05], script [0.15, 0.08, 0.08], which the
       recipes set). Initial weights need not sum to 1 (the reference asserts it); the default is uniform.
    4. π_old of the exact statistic is the log-probability TRL's own loss used (the first training forward when TRL
       computes none at generation); the reference recomputed it at generation with a separate pass. Both are the
       pre-update policy.
    5. Groups are the trainer's consecutive blocks of ``group_size`` rows (the reference groups by ``uid``); a
       trailing partial block is a group of its own.
    6. ``on_policy`` and the ``base`` option (tchebycheff / smooth_tchebycheff instead of linear) are additions;
       ``statistic: exact`` with ``base: linear`` is the reference.
    7. With vLLM and TRL's importance-sampling correction (``vllm_importance_sampling_correction``) the loss also
       weighs each token by the truncated sampler/trainer ratio; the statistic leaves that factor out (the
       reference had no such correction).
    8. Logging: ``mo/weight/<obj>`` is the weight used on the batch (the reference's ``ctwa/weight`` is the weight
       after the update, one step ahead; ``mo/ctwa/...`` has the post-update state); ``signal_mean`` and
       TRL's ``rewards/<obj>/mean`` replace ``w_std``, ``n_total`` and ``objective_mean``.
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import torch

from mo_align.covariance import group_moments, induced_weights, on_policy_induced_weights, robust_signal
from mo_align.weightings.base import GENERATION, ObjectiveStats, StepSize, TrainerNeeds, Weighting, per_objective
from mo_align.weightings.linear import LinearWeighting
from mo_align.weightings.papers import INTERFERENCE
from mo_align.weightings.smooth_tchebycheff import SmoothTchebycheffWeighting
from mo_align.weightings.tchebycheff import TchebycheffWeighting
from mo_align.weightings.validation import check_number, validate_kwargs


logger = logging.getLogger("mo_align")
# the reward-space scalarizations CTWA wraps, by registry key (imported, not looked up: no ctwa <-> package cycle)
BASE_CLASSES: dict[str, type[Weighting]] = {
    "linear": LinearWeighting,
    "tchebycheff": TchebycheffWeighting,
    "smooth_tchebycheff": SmoothTchebycheffWeighting,
}
BASES = tuple(BASE_CLASSES)


PPO_CLIP_LOSSES = ("grpo", "bnpo", "dr_grpo", "dapo", "luspo")


def exact_statistic_conflict(args: Any) -> str | None:
    """Why the exact statistic's unclipped indicator (TRL's token-level PPO clip) does not describe the policy loss
    configured in ``args`` (a ``GRPOConfig``), naming the field; ``None`` when it does."""
    loss_type = getattr(args, "loss_type", "dapo")
    if loss_type not in PPO_CLIP_LOSSES:
        return f"loss_type {loss_type!r} does not use the token-level PPO clip (one of {list(PPO_CLIP_LOSSES)})"
    if getattr(args, "importance_sampling_level", "token") != "token":
        return "importance_sampling_level 'sequence' clips whole sequences, not tokens (use 'token')"
    if getattr(args, "delta", None) is not None:
        return "delta (two-sided clipping) bounds ratios the unclipped indicator counts as unclipped"
    if getattr(args, "off_policy_mask_threshold", None) is not None:
        return "off_policy_mask_threshold masks tokens the unclipped indicator counts"
    if getattr(args, "top_entropy_quantile", 1.0) < 1.0:
        return "top_entropy_quantile < 1 masks tokens the unclipped indicator counts"
    return None


def group_covariance(
    rewards: torch.Tensor, signal: torch.Tensor, group_size: int, pooled: bool = False
) -> torch.Tensor:
    """Ĉ (K,): within-group population covariance of each objective with the signal, averaged over groups (or
    pooled); non-finite signal entries dropped, groups with < 2 members skipped, 0 when no group is valid."""
    return group_moments(rewards, signal, group_size, pooled)[0]


def _requires(statistic: str) -> frozenset[str]:
    """``exact`` needs log π after the batch's updates; ``on_policy`` needs nothing beyond the rewards."""
    return frozenset({"post_update_logps"}) if statistic == "exact" else frozenset()


def _ctwa_step(log_weights, ema, stat, objective_means, cov_targets, obj_targets, lambda_lr, ema_tau):
    """ctwa_update, also returning the gated deficit max(0, c − e) · gate and the gate (both (K,))."""
    k = log_weights.shape[0]
    c = torch.as_tensor(cov_targets, dtype=log_weights.dtype).expand(k)
    tau = torch.full((k,), math.inf) if obj_targets is None else torch.as_tensor(obj_targets, dtype=torch.float64)
    new_ema = stat.to(log_weights.dtype) if ema is None else (1 - ema_tau) * ema + ema_tau * stat.to(ema.dtype)
    gate = ~(objective_means.double() >= tau.expand(k))  # NaN mean: not reached -> gate open
    deficit = torch.clamp(c - new_ema, min=0.0) * gate.to(log_weights.dtype)
    return log_weights + lambda_lr * deficit, new_ema, deficit, gate


def ctwa_update(
    log_weights: torch.Tensor,
    ema: torch.Tensor | None,
    stat: torch.Tensor,
    objective_means: torch.Tensor,
    *,
    cov_targets: Any,
    obj_targets: Any,
    lambda_lr: float,
    ema_tau: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One CTWA step: EMA of the statistic, gate by objective targets, log-weight ascent on the deficit.
    Returns (new log-weights (K,), new EMA (K,)); ``ema=None`` is the first step (e ← Ĉ)."""
    return _ctwa_step(log_weights, ema, stat, objective_means, cov_targets, obj_targets, lambda_lr, ema_tau)[:2]


class CTWAWeighting(Weighting, key="ctwa"):
    __doc__ = __doc__
    lab_order = 11  # in the lab's and the benchmarks' lists (mo_align.lab.catalog)
    step_size = StepSize(
        kwarg="lambda_lr",
        cadence=GENERATION,
        law="linear",
        note="ℓ_k += η·max(0, c_k − e_k)·gate: log-weights move η × updates at most",
        row=0,
    )
    bench_variants = {"on_policy": {"statistic": "on_policy"}, "exact": {}}  # noqa: RUF012
    papers = (INTERFERENCE,)
    cov_ema_metric = "ema/"  # mo/ctwa/ema/<objective>: the EMA e_k of the covariance statistic
    ranges: ClassVar[dict[str, str]] = {
        "weights": "[0, 1e6]",
        "cov_targets": "[-1e3, 1e3]",
        "obj_targets": "[-1e6, 1e6]",
        "lambda_lr": "[0, 10]",
        "ema_tau": "(0, 1]",
        "patience": "[1, 1e9]",
        "max_weight_ratio": "[1, 1e6]",
        "subsample": "(0, 1]",
    }

    def __init__(
        self,
        num_objectives: int,
        *,
        weights: list[float] | None = None,
        cov_targets: list[float] | float = 0.1,
        obj_targets: list[float] | float | None = None,
        lambda_lr: float = 0.05,
        ema_tau: float = 0.1,
        use_corr_target: bool = False,
        w_agg: str = "mean",
        pooled: bool = False,
        statistic: str = "exact",
        base: str = "linear",
        base_kwargs: dict | None = None,
        patience: int = 20,
        max_weight_ratio: float | None = None,
        subsample: float = 1.0,
    ) -> None:
        super().__init__(num_objectives)
        k = num_objectives
        w0 = per_objective(weights, k, "ctwa: weights") or [1.0 / k] * k
        if any(not math.isfinite(w) or w < 0 for w in w0) or sum(w0) <= 0:
            raise ValueError(f"ctwa: weights must be finite, non-negative, not all zero, got {w0}")
        for field, value, allowed in (
            ("w_agg", w_agg, ("mean", "mean_unclipped", "sum")),
            ("statistic", statistic, ("exact", "on_policy")),
            ("base", base, BASES),
        ):
            if value not in allowed:
                raise ValueError(f"ctwa: {field} must be one of {list(allowed)}, got {value!r}")
        for field, value in (("lambda_lr", lambda_lr), ("ema_tau", ema_tau), ("subsample", subsample)):
            check_number(value, f"ctwa: {field}", self.ranges[field])  # also when built directly, not by recipe
        check_number(max_weight_ratio, "ctwa: max_weight_ratio", self.ranges["max_weight_ratio"])
        self.weights_init, self.lambda_lr, self.ema_tau = w0, lambda_lr, ema_tau
        self.cov_targets = per_objective(cov_targets, k, "ctwa: cov_targets")
        self.obj_targets = per_objective(obj_targets, k, "ctwa: obj_targets")
        self.use_corr_target, self.w_agg, self.pooled, self.statistic = use_corr_target, w_agg, pooled, statistic
        self.base, self.base_kwargs, self.patience = base, dict(base_kwargs or {}), patience
        self.max_weight_ratio, self.subsample = max_weight_ratio, subsample
        self.requires = _requires(statistic)
        init_key = "preference" if base == "smooth_tchebycheff" else "weights"
        base_kwargs = {init_key: w0, **self.base_kwargs}
        validate_kwargs(BASE_CLASSES[base], base_kwargs)  # as get_weighting(base, k, **base_kwargs) checks them
        self._base = BASE_CLASSES[base](k, **base_kwargs)
        self._w0 = torch.tensor(w0, dtype=torch.float64)
        self.log_weights = torch.log(self._w0.clamp(min=1e-8))
        self.ema: torch.Tensor | None = None
        self.streak, self.warned = 0, False

    @classmethod
    def check_config(cls, args: Any, kwargs: dict[str, Any] | None = None) -> None:
        """The exact statistic's unclipped indicator must describe the configured policy loss
        (:func:`exact_statistic_conflict`); ``statistic: on_policy`` runs under any loss."""
        kwargs = (getattr(args, "weighting_kwargs", None) or {}) if kwargs is None else kwargs
        conflict = exact_statistic_conflict(args) if kwargs.get("statistic", "exact") == "exact" else None
        if conflict:
            raise ValueError(f"weighting {cls.name} with statistic 'exact': {conflict}; or set statistic: on_policy")

    @classmethod
    def declared_needs(cls, kwargs: dict[str, Any]) -> TrainerNeeds:
        return cls._needs(_requires(kwargs.get("statistic", "exact")))

    def weights(self) -> torch.Tensor:
        # base weights floored like ℓ0 = log(max(w0, 1e-8)): for base linear this is exp(ℓ) exactly, so a zero initial
        # weight starts at 1e-8 and can grow, as in the reference
        factor = torch.exp(self.log_weights) / self._w0.clamp(min=1e-8)
        return (self._base.weights().double().clamp(min=1e-8) * factor).float()

    def scalarize(self, rewards: torch.Tensor) -> torch.Tensor:
        return self._base.scalarize_with(rewards, self.weights())

    def combine(self, stats: ObjectiveStats) -> torch.Tensor:
        return self._base.combine_with(stats, self.weights())

    def post_update_signal(self, advantages, log_ratio, mask, eps_low: float, eps_high: float):
        """Induced weights w̃ (B,) and the unclipped-token count (``mo_align.covariance.induced_weights``)."""
        return induced_weights(advantages, log_ratio, mask, eps_low, eps_high, self.w_agg)

    def pre_update(self, stats: ObjectiveStats) -> dict[str, float]:
        """Advance a base whose state must include the batch it scores (``update_first``), before ``combine``."""
        return {f"base/{k}": v for k, v in self._base.update(stats).items()} if self._base.update_first else {}

    def update(self, stats: ObjectiveStats) -> dict[str, float]:
        base_metrics = {} if self._base.update_first else self._base.update(stats)
        if stats.extras.get("signal") is None:
            raise ValueError("ctwa.update needs stats.extras['signal'] (per-completion induced weights)")
        signal = stats.extras["signal"]
        if self.statistic == "on_policy":  # the trainer's on-policy signal is Â; aggregate it as w_agg says at ρ ≡ 1
            signal = on_policy_induced_weights(signal, stats.lengths, self.w_agg)
        w = robust_signal(signal, stats.step, self.subsample)
        cov, corr, n_groups = group_moments(stats.rewards, w, stats.group_size, self.pooled)
        means = torch.nanmean(stats.rewards.double(), dim=0)
        self.log_weights, self.ema, deficit, gated = _ctwa_step(
            self.log_weights,
            self.ema,
            corr if self.use_corr_target else cov,
            means,
            self.cov_targets,
            self.obj_targets,
            self.lambda_lr,
            self.ema_tau,
        )
        if self.max_weight_ratio is not None:
            self.log_weights = torch.minimum(
                self.log_weights, self.log_weights.min() + math.log(self.max_weight_ratio)
            )
        stalled = bool(gated.any()) and bool((deficit[gated] > 0).all())
        self.streak = self.streak + 1 if stalled else 0
        if self.streak >= self.patience and not self.warned:
            self.warned = True
            logger.warning(
                "ctwa: every gated objective has been below its covariance target for %d batches; the targets "
                "cannot all be met and the weights grow without bound (set max_weight_ratio to stop it)",
                self.streak,
            )
        out: dict[str, float] = {"weight_sum": float(self.weights().sum()), "n_groups": float(n_groups)}
        out.update(deficit_streak=float(self.streak), stalled=float(self.streak >= self.patience))
        out["signal_mean"] = float(torch.nanmean(w)) if torch.isfinite(w).any() else 0.0
        names = stats.objective_names or tuple(str(i) for i in range(self.num_objectives))
        for i, name in enumerate(names):
            out.update(
                {
                    f"cov/{name}": float(cov[i]),
                    f"corr/{name}": float(corr[i]),
                    f"ema/{name}": float(self.ema[i]),
                    f"deficit/{name}": float(deficit[i]),
                }
            )
        if "unclip_frac" in stats.extras:
            out["unclip_frac"] = float(stats.extras["unclip_frac"])
        out.update({f"base/{key}": v for key, v in base_metrics.items()})
        return out

    def hyperparameters(self) -> dict[str, Any]:
        keys = ("cov_targets", "obj_targets", "lambda_lr", "ema_tau", "use_corr_target", "w_agg", "pooled")
        keys += ("statistic", "base", "base_kwargs", "patience", "max_weight_ratio", "subsample")
        return {"weights": self.weights_init, **{key: getattr(self, key) for key in keys}}

    def state_dict(self) -> dict[str, Any]:
        ema = None if self.ema is None else self.ema.clone()
        return {
            "log_weights": self.log_weights.clone(),
            "ema": ema,
            "streak": self.streak,
            "warned": self.warned,
            "base": self._base.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.log_weights = state["log_weights"].clone()
        self.ema = None if state["ema"] is None else state["ema"].clone()
        self.streak, self.warned = int(state["streak"]), bool(state["warned"])
        self._base.load_state_dict(state["base"])
