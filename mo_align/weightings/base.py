"""The `Weighting` interface: a small, stateful, checkpointed strategy that turns K rewards into one signal.

A weighting sees only :class:`ObjectiveStats` (built by the trainer from *gathered* tensors, so identical on every
rank) and returns tensors; the trainer owns autograd, the optimizer and TRL. Three places a weighting can act:

* ``"reward"``: scalarize the rewards s_i = f_w(r_i) (N,), then the configured estimator turns s into advantages
  (GRPO group normalisation, REINFORCE++ batch whitening, or GDPO's normalise-then-sum);
* ``"advantage"``: normalise each objective separately, A (N, K), then combine A_i = Σ_k w_k A_ik;
* ``"gradient"``: choose w from per-objective policy gradients g_k (the trainer supplies what ``requires`` names).

A subclass's typed ``__init__(self, num_objectives, *, ...)`` *is* its hyperparameter schema: recipes splat
``weighting_kwargs`` into it through :func:`mo_align.weightings.get_weighting`, which rejects unknown or ill-typed
keys before any model is loaded. :data:`RANGES` adds the admissible interval of each numeric hyperparameter (one
table for every strategy); any number not listed there must still be finite and at most ``MAX_MAGNITUDE`` in size,
so no NaN, inf or 1e308 reaches a strategy's state.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from mo_align.advantages import batch_whiten, compute_advantages, group_normalize, normalize_then_sum


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
    """s_i = Σ_k w_k v_ik over the non-NaN entries; rows with every entry NaN stay NaN (unscorable)."""
    s = (values * weights.to(values).unsqueeze(0)).nansum(dim=1)
    s[torch.isnan(values).all(dim=1)] = torch.nan
    return s


class Weighting:
    """Base class of every multi-objective weighting.

    Subclasses set ``space`` and override what differs: ``weights`` (the current (K,) weights), ``scalarize``
    (reward space, non-linear scalarizations), ``combine`` (the final (N,) advantages), ``update`` (the state
    transition, called once per training generation batch, after ``combine``) and the state methods.

    Class attributes:
        space: where the weights act, ``"reward"``, ``"advantage"`` or ``"gradient"``.
        requires: statistics beyond rewards the trainer must compute (empty for cheap strategies).
        owns_weights: True when the strategy decides the weights, so TRL's ``reward_weights`` must stay unset.
        needs_objective_advantages: carry per-objective advantages (B, K) into ``compute_loss``.
        update_first: call ``update`` *before* ``combine`` on a training batch, so the batch is scored with the
            state that already includes it (Lagrangian dual step, running ideal points); default False (the
            state moves after the batch is scored and acts from the next batch, as CTWA's weights do).
        gradient_cadence: for ``space == "gradient"``, which gradients ``gradient_weights`` sees.
            ``"micro_batch"``: the Gram matrix of each micro-batch's per-objective gradients, and the α it returns
            is applied to that micro-batch (MGDA). ``"optimizer_step"``: the applied weights are ``weights()``,
            held for the whole optimizer step; ``gradient_weights`` is called once after the step with the Gram
            matrix of the step's accumulated gradients and the step's losses (GradNorm).

    Hooks the trainer calls, in order, on a training generation batch: ``pre_update`` (always), ``update`` if
    ``update_first``, ``combine``, then — per micro-batch or optimizer step for gradient space — ``gradient_weights``,
    then ``update`` (unless ``update_first``; after the batch is consumed when ``requires`` names a post-update
    statistic or a Gram matrix, else right after ``combine``).
    """

    name: ClassVar[str] = "base"
    space: ClassVar[Space] = "reward"
    requires: ClassVar[frozenset[str]] = frozenset()
    owns_weights: ClassVar[bool] = True
    needs_objective_advantages: ClassVar[bool] = False
    update_first: ClassVar[bool] = False
    gradient_cadence: ClassVar[Literal["micro_batch", "optimizer_step"]] = "micro_batch"

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

    # ---- state -------------------------------------------------------------------------------------------------
    def pre_update(self, stats: ObjectiveStats) -> dict[str, float]:
        """State that must include the batch before it is scored, for strategies whose ``update`` comes after
        (CTWA advances its base's running ideal point here). Called on every training batch; default: nothing."""
        return {}

    def update(self, stats: ObjectiveStats) -> dict[str, float]:
        """Advance the state with this batch's statistics; deterministic so every rank agrees. Returns metrics."""
        return {}

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


# ---- hyperparameter validation ----------------------------------------------------------------------------------
MAX_MAGNITUDE = 1e6  # default bound |x| of a numeric hyperparameter without an entry in RANGES

# Admissible values of numeric hyperparameters, per strategy, in interval notation ("(0, 1]"); a per-objective list
# is checked entry by entry. Bounds are wide enough for every recipe and paper setting, narrow enough that no value
# overflows a float32 weight within a run (e.g. CTWA's log-weights grow by at most lambda_lr x deficit per batch).
RANGES: dict[str, dict[str, str]] = {
    "linear": {"weights": "[0, 1e6]"},
    "tchebycheff": {"weights": "[0, 1e6]", "ideal": "[-1e6, 1e6]"},
    "smooth_tchebycheff": {"preference": "[0, 1e6]", "omd_lr": "[0, 100]", "temperature": "(0, 1e6]"},
    "lagrangian": {"primary": "[0, 1e6]", "thresholds": "[-1e6, 1e6]", "dual_lr": "[0, 100]", "max_lambda": "[0, 1e6]"},
    "mgda": {"max_iter": "[1, 1e7]", "tol": "(0, 1)"},
    "gradnorm": {"alpha": "[0, 10]", "lr": "[0, 10]", "min_weight": "(0, 1]"},
    "dynamic": {"weights": "[0, 1e6]", "regularization": "(0, 1e6]", "accumulation_steps": "[1, 1e6]"},
    "ctwa": {
        "weights": "[0, 1e6]", "cov_targets": "[-1e3, 1e3]", "obj_targets": "[-1e6, 1e6]", "lambda_lr": "[0, 10]",
        "ema_tau": "(0, 1]", "patience": "[1, 1e9]", "max_weight_ratio": "[1, 1e6]", "subsample": "(0, 1]",
    },
}  # fmt: skip


def _interval(spec: str) -> tuple[float, float, bool, bool]:
    """``"(0, 1]"`` -> (0.0, 1.0, lower open, upper open)."""
    lo, hi = (float(x) for x in spec[1:-1].split(","))
    return lo, hi, spec[0] == "(", spec[-1] == ")"


def excerpt(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (error messages never print a whole recipe value)."""
    text = repr(value) if len(str(value)) < 10 * limit else repr(str(value)[: 2 * limit])
    return text if len(text) <= limit else f"{text[: limit - 14]}... ({len(str(value))} chars)"


def check_number(value: Any, where: str, spec: str | None = None) -> None:
    """Raise ``ValueError`` ("``where`` must be finite and ..., got x") unless ``value`` (a number, or a list of
    numbers) is finite and inside ``spec`` (interval notation; default ``[-MAX_MAGNITUDE, MAX_MAGNITUDE]``).
    Values of other types are left to the type check."""
    lo, hi, lo_open, hi_open = _interval(spec or f"[-{MAX_MAGNITUDE}, {MAX_MAGNITUDE}]")
    many = isinstance(value, list | tuple)
    for v in value if many else [value]:
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if math.isfinite(v) and (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi):
            continue
        lower = (
            ("non-negative" if many else ">= 0") if (lo == 0 and not lo_open) else f"{'>' if lo_open else '>='} {lo:g}"
        )
        upper = f"{'<' if hi_open else '<='} {hi:g}"
        rule = f"finite, {lower} and {upper}" if lower == "non-negative" else f"finite and {lower} and {upper}"
        raise ValueError(f"{where} must be {rule}, got {excerpt(v)}")


def _matches(value: Any, annotation: Any) -> bool:
    """Loose runtime check of a YAML/JSON value against a constructor annotation."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(annotation))
    if origin is Literal:
        return value in typing.get_args(annotation)
    if origin in (list, tuple, typing.Sequence):
        if not isinstance(value, list | tuple):
            return False
        inner = typing.get_args(annotation)
        return not inner or all(_matches(v, inner[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def validate_kwargs(cls: type[Weighting], kwargs: dict[str, Any]) -> None:
    """Raise ``TypeError`` naming the field for an unknown or ill-typed weighting kwarg, ``ValueError`` for a number
    that is not finite or outside its :data:`RANGES` interval."""
    sig = inspect.signature(cls.__init__)
    hints = typing.get_type_hints(cls.__init__)
    allowed = [p for p in sig.parameters if p not in ("self", "num_objectives")]
    ranges = RANGES.get(cls.name, {})
    for key, value in kwargs.items():
        if key not in allowed:
            raise TypeError(f"weighting '{cls.name}' got an unknown kwarg {excerpt(key)}; valid kwargs: {allowed}")
        if not _matches(value, hints.get(key, Any)):
            raise TypeError(
                f"weighting '{cls.name}' kwarg {key!r} must be {hints.get(key)}, got {excerpt(value)} "
                f"({type(value).__name__})"
            )
        check_number(value, f"{cls.name}: {key}", ranges.get(key))


# ---- runtime guard ------------------------------------------------------------------------------------------------
def _state_entries(value: Any, prefix: str = "") -> list[tuple[str, torch.Tensor]]:
    """(dotted name, float tensor) for every float tensor or float in a (nested) state dict."""
    if isinstance(value, torch.Tensor):
        return [(prefix, value.detach().double().reshape(-1))] if value.is_floating_point() else []
    if isinstance(value, float):
        return [(prefix, torch.tensor([value], dtype=torch.float64))]
    if isinstance(value, dict):
        return [e for k, v in value.items() for e in _state_entries(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(value, list | tuple):
        return [e for i, v in enumerate(value) for e in _state_entries(v, f"{prefix}[{i}]")]
    return []


def check_finite_weights(weighting: Weighting, step: int) -> None:
    """Stop the run when a strategy's weights are no longer finite, naming the strategy and the state that
    overflowed (entries holding NaN or +inf; else the finite entry of largest magnitude, e.g. a log-weight whose
    exponential overflows). Without this, inf/NaN weights become all-zero advantages and the run exits 0."""
    w = weighting.weights()
    if torch.isfinite(w).all():
        return
    entries = [(n, t) for n, t in _state_entries(weighting.state_dict()) if t.numel()]
    bad = [n for n, t in entries if (torch.isnan(t) | (t == math.inf)).any()]
    if bad:
        culprit = "non-finite state: " + ", ".join(bad)
    elif entries:
        name, t = max(entries, key=lambda e: float(e[1].nan_to_num(0.0, 0.0, 0.0).abs().max()))
        culprit = f"state {name} reached |x| = {float(t.abs().max()):.3g}"
    else:
        culprit = "no state (weights() itself)"
    raise FloatingPointError(
        f"{weighting.name}: non-finite weights {[round(x, 4) for x in w.tolist()]} at step {step} ({culprit}); "
        "the run stops here instead of training on garbage: lower the strategy's step size or bound its weights"
    )
