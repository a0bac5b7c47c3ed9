"""The `Weighting` interface: a small, stateful, checkpointed strategy that turns K rewards into one signal.

A weighting sees only :class:`ObjectiveStats` (built by the trainer from *gathered* tensors, so identical on every
rank) and returns tensors; the trainer owns autograd, the optimizer and TRL. Three places a weighting can act:

* ``"reward"``: scalarize the rewards s_i = f_w(r_i) (N,), then the configured estimator turns s into advantages
  (GRPO group normalisation, REINFORCE++ batch whitening, or GDPO's normalise-then-sum);
* ``"advantage"``: normalise each objective separately, A (N, K), then combine A_i = Σ_k w_k A_ik;
* ``"gradient"``: choose w from per-objective policy gradients g_k (the trainer supplies what ``requires`` names).

A subclass's typed ``__init__(self, num_objectives, *, ...)`` *is* its hyperparameter schema: recipes splat
``weighting_kwargs`` into it through :func:`mo_align.weightings.get_weighting`, which rejects unknown or ill-typed
keys before any model is loaded (:mod:`mo_align.weightings.validation`: also the numeric ranges and the runtime
guard on weights).

Every hook a strategy may implement is declared on :class:`Weighting`; what a strategy needs from the trainer, and
when each hook runs, is :meth:`Weighting.trainer_needs` (a :class:`TrainerNeeds`), the one place where ``space``,
``requires``, ``update_first``, ``needs_objective_advantages`` and ``gradient_cadence`` are read together.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from mo_align.advantages import batch_whiten, compute_advantages, group_normalize, normalize_then_sum
from mo_align.weightings.papers import Paper


Space = Literal["reward", "advantage", "gradient"]


@dataclass(frozen=True)
class ObjectiveStats:
    """Everything a weighting may look at for one generation batch (all tensors gathered over ranks).

    Attributes:
        rewards: (N, K) raw rewards, NaN = not applicable.
        group_size: G, consecutive rows share a prompt.
        lengths: (N,) completion token counts L_i.
        estimator: ``"grpo"``, ``"reinforce_pp"`` or ``"gdpo"``.
        scale_rewards: TRL's ``scale_rewards`` for the GRPO estimator (``"group"``, ``"batch"``, ``"none"``).
        step: optimizer steps taken so far (``trainer.state.global_step``).
        objective_names: K names, in column order.
        extras: optional statistics a weighting declared in ``requires`` (e.g. ``"gramian"`` (K, K)).
    """

    rewards: torch.Tensor
    group_size: int
    lengths: torch.Tensor
    estimator: str = "grpo"
    scale_rewards: str = "group"
    step: int = 0
    objective_names: tuple[str, ...] = ()
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def num_objectives(self) -> int:
        return self.rewards.shape[1]

    def normalize(self, scores: torch.Tensor) -> torch.Tensor:
        """(N,) scalar scores -> (N,) advantages with the configured estimator (GDPO falls back to GRPO here)."""
        estimator = "grpo" if self.estimator == "gdpo" else self.estimator
        return compute_advantages(
            scores, estimator=estimator, group_size=self.group_size, lengths=self.lengths, scale=self.scale_rewards
        )

    def objective_advantages(self) -> torch.Tensor:
        """(N, K) per-objective advantages: each column normalised on its own by the estimator."""
        if self.estimator == "reinforce_pp":
            return batch_whiten(self.rewards, self.lengths)
        scale = "group" if self.estimator == "gdpo" else self.scale_rewards
        return group_normalize(self.rewards, self.group_size, scale)


def per_objective(value: Any, k: int, name: str) -> list[float] | None:
    """A hyperparameter given per objective: ``None`` stays ``None``, a number is repeated K times, a sequence
    must have K entries (``name`` prefixes the error, e.g. ``"ctwa: cov_targets"``)."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return [float(value)] * k
    if len(value) != k:
        raise ValueError(f"{name} has {len(value)} entries but there are {k} objectives")
    return [float(v) for v in value]


def nan_weighted_sum(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """s_i = Σ_k w_k v_ik over the non-NaN entries; rows with every entry NaN stay NaN (unscorable). ``weights`` is
    (K,), or (N, K) for a weight vector per row (preference-conditioned training)."""
    w = weights.to(values)
    s = (values * (w if w.dim() == 2 else w.unsqueeze(0))).nansum(dim=1)
    s[torch.isnan(values).all(dim=1)] = torch.nan
    return s


@dataclass(frozen=True)
class TrainerNeeds:
    """What a weighting needs from the trainer and when its ``update`` runs (:meth:`Weighting.trainer_needs`).

    Attributes:
        objective_advantages: the per-objective advantages (B, K) reach ``compute_loss`` (gradient-space losses).
        gram: ``None``, or whose Gram matrix of per-objective policy gradients the strategy reads:
            ``"micro_batch"`` (``gradient_weights`` on each micro-batch, its α applied to it: MGDA),
            ``"optimizer_step"`` (``gradient_weights`` once after each optimizer step, ``weights()`` applied during
            it: GradNorm) or ``"generation_batch"`` (``stats.extras["gramian"]`` in ``update``: Dynamic).
        post_update_logps: ``post_update_signal`` after the batch's updates (CTWA's exact statistic).
        update: ``"before_combine"`` (the batch is scored with a state that includes it), ``"after_combine"``
            (right after scoring) or ``"after_batch"`` (after the generation batch's last optimizer step, with the
            deferred statistics in ``stats.extras``; needs every generation batch to end on an optimizer step,
            :meth:`layout_conflict`).
    """

    objective_advantages: bool
    gram: Literal["micro_batch", "optimizer_step", "generation_batch"] | None
    post_update_logps: bool
    update: Literal["before_combine", "after_combine", "after_batch"]

    def layout_conflict(self, name: str, steps_per_generation: int, num_iterations: int, accumulation: int):
        """Why a strategy named ``name`` cannot take one ``update`` per generation batch in this layout (one line
        naming the fields), or ``None``. An ``after_batch`` update runs after the batch's last optimizer step, so
        every generation batch must end on one: steps_per_generation × num_iterations a multiple of
        gradient_accumulation_steps. Otherwise one optimizer step would span two batches and a single update would
        see both (the first batch's statistic lost, Dynamic's Gram matrix that of their sum)."""
        every = steps_per_generation * num_iterations
        if self.update != "after_batch" or every % accumulation == 0:
            return None
        hint = " (or use statistic: on_policy)" if self.post_update_logps else ""
        return (
            f"weighting {name!r} updates once per generation batch, after its last optimizer step: "
            f"steps_per_generation x num_iterations ({steps_per_generation} x {num_iterations} = {every}) must be a "
            f"multiple of gradient_accumulation_steps ({accumulation}); change steps_per_generation{hint}"
        )


@dataclass(frozen=True)
class StepSize:
    """How a strategy adapts, for the lab's ``--eta matched`` rule (:mod:`mo_align.lab.scaling`): its step-size
    keyword (None: no step size), when it updates, how ``matched`` scales the step, what moves, and its row in the
    lab protocol's step-size table (``docs/lab_protocol.md``; ties and the default: the lab's order).

    ``law``: ``linear`` (the state moves by step × a bounded signal per update, so step × updates is the budget),
    ``inverse_lr`` (the step is the policy lr over the keyword: Dynamic's w ← softmax(log w + lr·Gram·1/μ)), or
    ``none`` (not scaled)."""

    kwarg: str | None = None
    cadence: Literal["generation batch", "optimizer step"] | None = None
    law: Literal["linear", "inverse_lr", "none"] = "none"
    note: str = ""
    row: float = math.inf


GENERATION, OPTIMIZER = "generation batch", "optimizer step"  # StepSize.cadence
GRAM_NO_STATE = StepSize(note="α from each micro-batch's Gram matrix: no state", row=7)  # MGDA and TorchJD's


# Every strategy declared with a registry key (``class X(Weighting, key="x")``), built-in or a user's, in the
# order its module was imported. ``mo_align.weightings.WEIGHTINGS`` is the built-in part.
REGISTRY: dict[str, type[Weighting]] = {}


class Weighting:
    """Base class of every multi-objective weighting.

    Subclasses set ``space`` and override what differs: ``weights`` (the current (K,) weights), ``scalarize``
    (reward space, non-linear scalarizations), ``combine`` (the final (N,) advantages), ``update`` (the state
    transition, called once per training generation batch, after ``combine``) and the state methods.

    Class attributes:
        space: where the weights act, ``"reward"``, ``"advantage"`` or ``"gradient"``.
        requires: statistics beyond rewards the trainer must compute (empty for cheap strategies).
        owns_weights: True when the strategy decides the weights, so TRL's ``reward_weights`` must stay unset.
        needs_objective_advantages: carry per-objective advantages (B, K) into ``compute_loss`` (implied by a
            ``"gramian"`` in ``requires``: the per-objective losses are built from them).
        update_first: call ``update`` *before* ``combine`` on a training batch, so the batch is scored with the
            state that already includes it (Lagrangian dual step, running ideal points); default False (the
            state moves after the batch is scored and acts from the next batch, as CTWA's weights do).
        gradient_cadence: for ``space == "gradient"``, which gradients ``gradient_weights`` sees.
            ``"micro_batch"``: the Gram matrix of each micro-batch's per-objective gradients, and the α it returns
            is applied to that micro-batch (MGDA). ``"optimizer_step"``: the applied weights are ``weights()``,
            held for the whole optimizer step; ``gradient_weights`` is called once after the step with the Gram
            matrix of the step's accumulated gradients and the step's losses (GradNorm).
        papers: the strategy's own papers (:class:`~mo_align.weightings.papers.Paper`), cited by model cards
            after arXiv 2602.06869; empty for the classic scalarizations (linear, Tchebycheff, Lagrangian).

    What a strategy declares about itself, all on its class (one file per strategy):
        key (class keyword, ``class X(Weighting, key="x")``): registers the class under ``x`` (= ``name``), so a
            recipe's ``weighting: x`` finds it once its module is imported; a recipe may also name any subclass by
            its dotted path ``pkg.module.ClassName`` (imported then).
        ranges: the admissible interval of each numeric hyperparameter, in interval notation (``"(0, 1]"``; a
            per-objective list is checked entry by entry); a number without one must be finite with
            ``|x| <= 1e6`` (:func:`mo_align.weightings.validation.validate_kwargs`).
        permutation_equivariant: permuting the objectives permutes the weights alike (False for a distinguished
            objective, e.g. Lagrangian's primary, or a random order, PCGrad).
        nonnegative_weights: the weights applied are never negative (False for IMTL-G, Aligned-MTL).
        cov_ema_metric: the prefix under ``mo/<name>/`` of a per-objective covariance EMA the strategy logs itself
            (CTWA: ``"ema/"``), which a run summary rebuilt from ``trainer_state.json`` reads when the
            interference monitor's ``mo/cov_ema/<objective>`` is absent.
        check_config: refuses a training configuration the strategy cannot run under (CTWA's exact statistic).
        accepts_row_preferences: the strategy scores each row with its own preference (``scalarize_rows`` /
            ``combine_rows``), which preference-conditioned training needs (:mod:`mo_align.preferences`); False for
            gradient-space strategies and for those whose weights are their own adaptive state.
        lab_order: its place in the lists of strategies the interference lab runs and the benchmarks time
            (:mod:`mo_align.lab.catalog`; ties and the default, after the others: registry order); ``None``
            keeps a strategy out of them.
        step_size: its :class:`StepSize` (the lab's ``--eta matched`` rule).
        bench_variants: the configurations the benchmarks time, label suffix -> ``weighting_kwargs`` (CTWA: its
            on-policy and exact statistics).

    Hooks the trainer calls, in order, on a training generation batch: ``pre_update`` (always), ``update`` if
    ``update_first``, ``combine``, then — per micro-batch or optimizer step for gradient space — ``gradient_weights``,
    then ``update`` (unless ``update_first``; after the batch is consumed when ``requires`` names a post-update
    statistic or a Gram matrix, else right after ``combine``).
    """

    name: ClassVar[str] = "base"
    papers: ClassVar[tuple[Paper, ...]] = ()
    ranges: ClassVar[dict[str, str]] = {}
    permutation_equivariant: ClassVar[bool] = True
    nonnegative_weights: ClassVar[bool] = True
    cov_ema_metric: ClassVar[str | None] = None
    space: ClassVar[Space] = "reward"
    requires: ClassVar[frozenset[str]] = frozenset()
    owns_weights: ClassVar[bool] = True
    needs_objective_advantages: ClassVar[bool] = False
    update_first: ClassVar[bool] = False
    gradient_cadence: ClassVar[Literal["micro_batch", "optimizer_step"]] = "micro_batch"
    accepts_row_preferences: ClassVar[bool] = False
    lab_order: ClassVar[float | None] = math.inf
    step_size: ClassVar[StepSize] = StepSize()
    bench_variants: ClassVar[dict[str, dict[str, Any]]] = {"": {}}

    def __init_subclass__(cls, key: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if key is None:
            return
        taken = REGISTRY.get(key)
        if taken is not None and (taken.__module__, taken.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"weighting key {key!r} is taken by {taken.__module__}.{taken.__qualname__}")
        cls.name = key
        REGISTRY[key] = cls  # a module imported again (a reload) replaces its own class

    @classmethod
    def check_config(cls, args: Any, kwargs: dict[str, Any] | None = None) -> None:
        """Raise ``ValueError`` (one line naming the fields) when the training config ``args`` (a ``GRPOConfig``)
        cannot run this strategy with hyperparameters ``kwargs`` (default ``args.weighting_kwargs``). Called by
        ``MOGRPOConfig`` before any model is loaded and by the trainer for an instance passed to it. Default: any."""

    def __init__(self, num_objectives: int) -> None:
        if not isinstance(num_objectives, int) or num_objectives < 1:
            raise ValueError(f"num_objectives must be a positive int, got {num_objectives!r}")
        self.num_objectives = num_objectives

    # ---- the pure core ---------------------------------------------------------------------------------------
    def weights(self) -> torch.Tensor:
        """Current weights w, shape (K,). Pure: no state change."""
        return torch.full((self.num_objectives,), 1.0 / self.num_objectives)

    def scalarize(self, rewards: torch.Tensor) -> torch.Tensor:
        """The scalar signal this strategy optimises, s = f_w(r), (N, K) -> (N,), with the current weights."""
        return self.scalarize_with(rewards, self.weights())

    def scalarize_with(self, rewards: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """f_w(r) for given weights (lets wrappers such as CTWA re-weight any scalarization). Default: Σ_k w_k r_ik."""
        return nan_weighted_sum(rewards, weights)

    def combine(self, stats: ObjectiveStats) -> torch.Tensor:
        """Final per-completion advantages (N,) for this batch. Pure: no state change."""
        return self.combine_with(stats, self.weights())

    def combine_with(self, stats: ObjectiveStats, weights: torch.Tensor) -> torch.Tensor:
        """Advantages (N,) for given weights: reward space scalarizes then normalises; advantage space sums A w."""
        if self.space == "reward":
            if stats.estimator == "gdpo":
                return normalize_then_sum(stats.rewards, weights, stats.group_size)
            return stats.normalize(self.scalarize_with(stats.rewards, weights))
        return nan_weighted_sum(stats.objective_advantages(), weights).nan_to_num(0.0)

    def scalarize_rows(self, rewards: torch.Tensor, preferences: torch.Tensor) -> torch.Tensor:
        """f_{w_i}(r_i) with the preference w_i of each row, (N, K) rewards and (N, K) preferences -> (N,); only
        for ``accepts_row_preferences`` strategies (preference-conditioned training)."""
        raise NotImplementedError(f"{type(self).__name__} does not take a preference per row")

    def combine_rows(self, stats: ObjectiveStats, preferences: torch.Tensor) -> torch.Tensor:
        """Advantages (N,) with the preference w_i (N, K) of each row (the G rows of a group share one). Pure."""
        raise NotImplementedError(f"{type(self).__name__} does not take a preference per row")

    # ---- state -------------------------------------------------------------------------------------------------
    def pre_update(self, stats: ObjectiveStats) -> dict[str, float]:
        """State that must include the batch before it is scored, for strategies whose ``update`` comes after
        (CTWA advances its base's running ideal point here). Called on every training batch; default: nothing."""
        return {}

    def update(self, stats: ObjectiveStats) -> dict[str, float]:
        """Advance the state with this batch's statistics; deterministic so every rank agrees. Returns metrics."""
        return {}

    # ---- hooks of the strategies that need more than rewards (declared here, implemented where ``requires`` says)
    def gradient_weights(self, gram: torch.Tensor, losses: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Gradient space: (the coefficients (K,) applied to the per-objective gradients, metrics) from the global
        Gram matrix (K, K) and the losses (K,) of a micro-batch or an optimizer step (``gradient_cadence``)."""
        raise NotImplementedError(f"{type(self).__name__} is not a gradient-space weighting")

    def post_update_signal(self, advantages, log_ratio, mask, eps_low: float, eps_high: float):
        """``requires`` ``"post_update_logps"``: (per-completion signal (B,), unclipped-token count) of a micro-batch
        from its advantages (B,), log π_new − log π_old (B, T) after the batch's updates and its mask (B, T)."""
        raise NotImplementedError(f"{type(self).__name__} does not use a post-update statistic")

    def trainer_needs(self) -> TrainerNeeds:
        """What the trainer must compute for this strategy and when it calls ``update`` (see :class:`TrainerNeeds`)."""
        return self._needs(self.requires)

    @classmethod
    def declared_needs(cls, kwargs: dict[str, Any]) -> TrainerNeeds:
        """:meth:`trainer_needs` of an instance built with ``kwargs``, known without building it (the config checks
        the batch layout with it before any model is loaded). Strategies whose ``requires`` depends on a
        hyperparameter override it."""
        return cls._needs(cls.requires)

    @classmethod
    def _needs(cls, requires: frozenset[str]) -> TrainerNeeds:
        gram = None
        if "gramian" in requires:
            gram = cls.gradient_cadence if cls.space == "gradient" else "generation_batch"
        deferred = "post_update_logps" in requires or gram == "generation_batch"
        update = "before_combine" if cls.update_first else ("after_batch" if deferred else "after_combine")
        objective_advantages = cls.needs_objective_advantages or gram is not None  # per-objective losses need them
        return TrainerNeeds(objective_advantages, gram, "post_update_logps" in requires, update)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (tensors and plain Python values)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = set(state) - set(self.state_dict())
        if unknown:
            raise KeyError(f"{type(self).__name__}.load_state_dict: unexpected keys {sorted(unknown)}")

    # ---- presentation ------------------------------------------------------------------------------------------
    def hyperparameters(self) -> dict[str, Any]:
        """The constructor arguments of this instance (for logs, run summaries and model cards)."""
        params = list(inspect.signature(type(self).__init__).parameters)[1:]
        return {p: getattr(self, p) for p in params if hasattr(self, p)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"
