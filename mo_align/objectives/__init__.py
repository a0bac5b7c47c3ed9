"""What each objective of a run is for: its role (:mod:`~.roles`) and its condition (:mod:`~.conditions`).

:class:`ObjectivePlan` holds both for the K objectives of a run, in ``reward_funcs`` order, and is the one place the
trainer asks: which reward functions to call on a training batch, which columns the weighting sees (the ``train``
objectives, K_train of them, after their conditions are applied), which the interference monitor watches, and what
the run summary and model card record. A run without roles or conditions has the trivial plan (every objective
trained, nothing conditioned), under which everything behaves as before.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch

from mo_align.objectives.conditions import (
    CONDITION_KEYS,
    NOT_APPLICABLE,
    Condition,
    apply_conditions,
    not_applicable_refusal,
    parse_conditions,
    split_conditions,
)
from mo_align.objectives.roles import DEFAULT_ROLE, ROLES, parse_roles, resolve_roles
from mo_align.weightings import Weighting, get_weighting


if TYPE_CHECKING:
    from trl import GRPOTrainer  # typing only: the math-verify server imports this package (no TRL there)


__all__ = [
    "CONDITION_KEYS",
    "NOT_APPLICABLE",
    "ROLES",
    "Condition",
    "ObjectivePlan",
    "not_applicable_refusal",
    "parse_conditions",
    "parse_roles",
    "split_conditions",
]
CONDITIONS_FIELD = "objective_conditions"


@dataclass(frozen=True)
class ObjectivePlan:
    """Roles and conditions of a run's objectives (see the module docstring)."""

    names: tuple[str, ...]
    roles: dict[str, str] = field(default_factory=dict)  # every objective's role
    conditions: dict[str, Condition] = field(default_factory=dict)

    @classmethod
    def build(
        cls, names: Sequence[str], roles: Any = None, conditions: Any = None, field: str = CONDITIONS_FIELD
    ) -> ObjectivePlan:
        """Check ``roles`` (objective -> role) and ``conditions`` (objective -> ``{only_if, otherwise}``, as
        ``MOGRPOConfig.objective_conditions`` holds them; ``field`` names them in errors) against ``names``; one
        line naming the field otherwise."""
        names = tuple(names)
        full = resolve_roles(names, roles)
        parsed = parse_conditions(conditions, names, field)
        for name, c in parsed.items():
            if full[name] == "eval":
                raise ValueError(
                    f"{field}[{name}]: {name!r} has role eval (not scored on training batches), where a condition "
                    "would change nothing; drop the condition or the role"
                )
            if full[c.objective] == "eval":
                raise ValueError(
                    f"{field}[{name}].only_if.objective: {c.objective!r} has role eval, so it is not scored on "
                    "training batches and the condition could never be decided"
                )
        return cls(names, full, parsed)

    @classmethod
    def for_trainer(cls, reward_funcs: Sequence[Any], args: Any) -> ObjectivePlan:
        """The plan of a trainer's ``reward_funcs`` under its config ``args`` (``objective_roles``,
        ``objective_conditions``), the weighting's ``not_applicable`` support checked, before any model is loaded."""
        names = reward_names(reward_funcs)
        plan = cls.build(names, getattr(args, "objective_roles", None), getattr(args, "objective_conditions", None))
        plan.check_weighting(args)
        return plan

    def matching(self, names: Sequence[str]) -> ObjectivePlan:
        """This plan for the names TRL gave the reward functions: itself when they agree; a trivial plan may follow
        other names (TRL adds an environment's reward functions), roles or conditions may not (one line)."""
        if tuple(names) == self.names:
            return self
        if not self.trivial:
            raise ValueError(f"objective_roles / conditions name {list(self.names)}; TRL scores {list(names)}")
        return ObjectivePlan.build(names)

    def renamed(self, names: Sequence[str]) -> ObjectivePlan:
        """The same plan under other names, position by position (a recipe's dotted path -> TRL's function name)."""
        new = dict(zip(self.names, names, strict=True))
        conditions = {new[n]: replace(c, objective=new[c.objective]) for n, c in self.conditions.items()}
        return ObjectivePlan(tuple(names), {new[n]: r for n, r in self.roles.items()}, conditions)

    @property
    def trivial(self) -> bool:
        """Every objective trained, nothing conditioned: the run behaves as without a plan."""
        return not self.conditions and all(r == DEFAULT_ROLE for r in self.roles.values())

    # ---- columns ---------------------------------------------------------------------------------------------------
    def role(self, name: str) -> str:
        return self.roles.get(name, DEFAULT_ROLE)

    def _indices(self, *roles: str) -> list[int]:
        return [k for k, n in enumerate(self.names) if self.role(n) in roles]

    @property
    def train_idx(self) -> list[int]:
        """Columns the weighting combines (the ``train`` objectives)."""
        return self._indices("train")

    @property
    def train_names(self) -> tuple[str, ...]:
        return tuple(self.names[k] for k in self.train_idx)

    @property
    def observed_idx(self) -> list[int]:
        """Columns scored on training batches (``train`` and ``monitor``)."""
        return self._indices("train", "monitor")

    @property
    def observed_names(self) -> tuple[str, ...]:
        return tuple(self.names[k] for k in self.observed_idx)

    @property
    def eval_only(self) -> tuple[str, ...]:
        """Objectives whose reward function is called at evaluation only."""
        return tuple(self.names[k] for k in self._indices("eval"))

    def label(self, name: str) -> str:
        """``clarity (monitor)``: an objective with its role, for messages and tables."""
        return f"{name} ({self.role(name)})"

    # ---- the weighting ---------------------------------------------------------------------------------------------
    def build_weighting(self, args: Any) -> Weighting:
        """``args.weighting`` for the K_train ``train`` objectives; a per-objective list of the wrong length says
        which objectives K counts when roles leave some out."""
        k = len(self.train_idx)
        try:
            return get_weighting(args.weighting, k, **(args.weighting_kwargs or {}))
        except (ValueError, TypeError) as exc:
            if k == len(self.names):
                raise
            left = ", ".join(self.label(n) for n in self.names if n not in self.train_names)
            raise type(exc)(
                f"{exc}; with objective_roles, K counts the {k} train objectives only: {', '.join(self.train_names)} "
                f"(not {left})"
            ) from exc

    def check_weighting(self, args: Any, field: str = CONDITIONS_FIELD) -> None:
        """Refuse ``otherwise: not_applicable`` under a weighting that cannot leave the rows out (one line)."""
        refusal = not_applicable_refusal(
            self.conditions, self.train_names, args.weighting, args.weighting_kwargs or {}, args.advantage_estimator
        )
        if refusal:
            raise ValueError(refusal.replace("reward_kwargs[", f"{field}[", 1))

    # ---- rewards -----------------------------------------------------------------------------------------------
    def condition(self, rewards: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """(rewards (..., K) with the conditions applied, ``mo/conditioned/<objective>/applicable_frac`` metrics)."""
        if not self.conditions:
            return rewards, {}
        out, met = apply_conditions(rewards, self.names, self.conditions)
        metrics = {
            f"mo/conditioned/{n}/applicable_frac": float(m.float().mean()) if m.numel() else 0.0
            for n, m in met.items()
        }
        return out, metrics

    def weighted(self, rewards: torch.Tensor) -> torch.Tensor:
        """The (..., K_train) columns the weighting sees: conditions applied, ``train`` objectives only."""
        return self.condition(rewards)[0][..., self.train_idx]

    @contextlib.contextmanager
    def scoring(self, trainer: GRPOTrainer, training: bool) -> Iterator[None]:
        """On a training batch, TRL's scoring call sees only the objectives scored in training: the ``eval``
        objectives' reward functions are taken out of ``trainer.reward_funcs`` (and the processing classes and names
        beside it) for the call, then restored; :meth:`expand` puts their (NaN) columns back."""
        if not training or not self.eval_only:
            yield
            return
        keep, saved = self.observed_idx, {}
        for attr in ("reward_funcs", "reward_processing_classes", "reward_func_names"):
            saved[attr] = getattr(trainer, attr)
            setattr(trainer, attr, [saved[attr][k] for k in keep])
        try:
            yield
        finally:
            for attr, value in saved.items():
                setattr(trainer, attr, value)

    def expand(self, rewards: torch.Tensor, training: bool) -> torch.Tensor:
        """(N, K) from what :meth:`scoring` let TRL compute: NaN columns for the ``eval`` objectives."""
        if not training or not self.eval_only:
            return rewards
        out = torch.full((rewards.shape[0], len(self.names)), float("nan"), dtype=rewards.dtype, device=rewards.device)
        out[:, self.observed_idx] = rewards
        return out

    def columns(self, raw: torch.Tensor, metrics: Any, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(the weighting's (N, K_train), every objective conditioned (N, K)) of a scored batch's raw rewards; logs
        ``mo/conditioned/<objective>/applicable_frac`` into ``metrics`` (TRL's per-mode lists) and drops the NaN
        ``rewards/<objective>/mean|std`` TRL logged for the ``eval`` objectives on a training batch."""
        conditioned, applicable = self.condition(raw)
        for key, value in applicable.items():
            metrics[key].append(value)
        for name in self.eval_only if training else ():
            for stat in ("mean", "std"):
                metrics.pop(f"rewards/{name}/{stat}", None)
        return conditioned[:, self.train_idx], conditioned

    # ---- records -----------------------------------------------------------------------------------------------
    def record(self) -> dict[str, Any]:
        """What a run summary keeps so the run can be reproduced: every role and every condition (recipe form)."""
        return {
            "objective_roles": dict(self.roles),
            "objective_conditions": {n: c.as_dict() for n, c in self.conditions.items()},
        }


def conditions_from(script_conditions: Mapping[str, Any], config_conditions: Any) -> dict[str, Any]:
    """The run's conditions: those of ``reward_kwargs`` (a recipe) or of ``objective_conditions`` (code), not both."""
    same = (
        script_conditions
        and config_conditions
        and parse_conditions(script_conditions, None, "reward_kwargs")
        == parse_conditions(config_conditions, None, CONDITIONS_FIELD)
    )
    if script_conditions and config_conditions and not same:  # (the same ones: a recipe validated twice)
        raise ValueError(
            f"{CONDITIONS_FIELD} and reward_kwargs[{next(iter(script_conditions))}].only_if both set conditions; "
            "write them in one place (reward_kwargs in a recipe)"
        )
    return dict(script_conditions or config_conditions or {})


def reward_names(reward_funcs: Sequence[Any]) -> tuple[str, ...]:
    """The objective names ``trl.GRPOTrainer`` gives ``reward_funcs`` (a model id's last part; a function's, a
    partial's inner function's or a callable object's class name), known before it loads anything: the plan's roles
    and conditions are keyed by them (the trainer checks them against TRL's ``reward_func_names``). No TRL import
    here: the math-verify server imports ``mo_align.rewards``, which reads this package."""
    names = []
    for fn in reward_funcs:
        if isinstance(fn, str):
            names.append(fn.split("/")[-1])
        elif isinstance(fn, torch.nn.Module) and hasattr(fn, "config"):
            names.append(str(getattr(fn.config, "_name_or_path", "")).split("/")[-1])
        else:
            while isinstance(fn, functools.partial):
                fn = fn.func
            names.append(getattr(fn, "__name__", type(fn).__name__))
    return tuple(names)


def plan_run(
    names: Sequence[str], reward_funcs: Sequence[Any], reward_kwargs: Mapping | None, args: Any
) -> ObjectivePlan:
    """A recipe's plan, before any model is loaded: roles (``args.objective_roles``) and conditions (from
    ``reward_kwargs``, or ``args.objective_conditions``), checked against the recipe's ``names`` (``reward_funcs`` as
    written) and the weighting (``not_applicable``); one line naming the field otherwise. They are written back into
    ``args`` under the names TRL gives the built ``reward_funcs`` (a dotted path's function name), which the trainer
    reads, and the plan is returned under those names."""
    _, given = split_conditions(reward_kwargs)
    field = "reward_kwargs" if given else CONDITIONS_FIELD
    trl_names = reward_names(reward_funcs)
    alias = {t: n for t, n in zip(trl_names, names, strict=True) if t not in names}  # a role keyed by TRL's name
    roles = {alias.get(k, k): v for k, v in (args.objective_roles or {}).items()}
    plan = ObjectivePlan.build(names, roles, conditions_from(given, args.objective_conditions), field)
    plan.check_weighting(args, field)
    plan = plan.renamed(trl_names)
    args.objective_roles = {n: r for n, r in plan.roles.items() if r != DEFAULT_ROLE} or None
    args.objective_conditions = {n: c.as_dict() for n, c in plan.conditions.items()} or None
    return plan
