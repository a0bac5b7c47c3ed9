"""Conditioned objectives: an objective that counts only where another objective's reward meets a threshold.

In a recipe, next to the reward's own keyword arguments::

    reward_kwargs:
      conciseness: {only_if: {objective: accuracy, at_least: 1.0}, otherwise: 0}

``only_if`` names the deciding objective (one of ``reward_funcs``, not the objective itself) and ``at_least`` and /
or ``at_most`` (inclusive bounds). On a row where the condition is not met the objective's reward is replaced by
``otherwise``: a number (default ``0``), or ``not_applicable`` (NaN: the row is left out of that objective's group
mean and standard deviation and gets advantage 0 for it). A deciding value that is NaN (unscorable, or itself not
applicable) does not meet the condition. Conditions may chain (``a`` only if ``b``, ``b`` only if ``c``: ``a`` reads
``b``'s conditioned value) but not form a cycle. ``only_if`` and ``otherwise`` are read by mo_align and never passed
to the reward function.

The condition is applied by the trainer to the reward matrix once every objective is scored (TRL's
``rewards/<objective>/mean`` keep the raw rewards); ``mo/conditioned/<objective>/applicable_frac`` logs the
fraction of the batch's completions on which the condition held.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import torch

from mo_align.rewards.common import CONDITION_KEYS  # owned by the rewards, which strip them
from mo_align.text import excerpt
from mo_align.weightings import Weighting, weighting_class


BOUNDS = ("at_least", "at_most")
NOT_APPLICABLE = "not_applicable"
DEFAULT_OTHERWISE = 0.0


@dataclass(frozen=True)
class Condition:
    """``only_if`` of one objective: it counts where ``objective``'s reward is within [at_least, at_most]."""

    objective: str
    at_least: float | None = None
    at_most: float | None = None
    otherwise: float | str = DEFAULT_OTHERWISE  # a number, or NOT_APPLICABLE

    @property
    def fill(self) -> float:
        """The value an unmet row gets: ``otherwise``, NaN for ``not_applicable``."""
        return math.nan if self.otherwise == NOT_APPLICABLE else float(self.otherwise)

    def met(self, values: torch.Tensor) -> torch.Tensor:
        """Where the deciding objective's ``values`` meet the condition (NaN never does)."""
        ok = ~torch.isnan(values)
        if self.at_least is not None:
            ok &= values >= self.at_least
        if self.at_most is not None:
            ok &= values <= self.at_most
        return ok

    def as_dict(self) -> dict[str, Any]:
        """The recipe form, defaults filled in (run summaries record it)."""
        only_if: dict[str, Any] = {"objective": self.objective}
        only_if.update({b: getattr(self, b) for b in BOUNDS if getattr(self, b) is not None})
        return {"only_if": only_if, "otherwise": self.otherwise}

    def describe(self) -> str:
        """In words: ``only if accuracy >= 1, otherwise 0``."""
        parts = [f"{self.objective} >= {self.at_least:g}"] if self.at_least is not None else []
        parts += [f"{self.objective} <= {self.at_most:g}"] if self.at_most is not None else []
        otherwise = self.otherwise if isinstance(self.otherwise, str) else f"{self.otherwise:g}"
        return f"only if {' and '.join(parts)}, otherwise {otherwise}"


def split_conditions(reward_kwargs: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the reward kwargs without ``only_if`` / ``otherwise``, the conditions given: objective -> those keys)."""
    kwargs, conditions = {}, {}
    for name, given in (reward_kwargs or {}).items():
        if not isinstance(given, Mapping):
            kwargs[name] = given  # get_reward_funcs names a value that is not a mapping
            continue
        own = {k: v for k, v in given.items() if k in CONDITION_KEYS}
        kwargs[name] = {k: v for k, v in given.items() if k not in CONDITION_KEYS}
        if own:
            conditions[name] = own
    return kwargs, conditions


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ValueError(f"{where} must be a finite number, got {excerpt(value)}")
    return float(value)


def parse_condition(name: str, given: Any, field: str) -> Condition:
    """One objective's ``{only_if: {objective, at_least, at_most}, otherwise}`` (``field`` names it in errors)."""
    if not isinstance(given, Mapping):
        raise ValueError(f"{field} must be a mapping with only_if (and otherwise), got {excerpt(given)}")
    bad = [k for k in given if k not in CONDITION_KEYS]
    if bad:
        raise ValueError(f"{field}: unknown key {excerpt(bad[0])}; a condition has only_if and otherwise")
    only_if = given.get("only_if")
    if not isinstance(only_if, Mapping):
        raise ValueError(
            f"{field}.only_if must be a mapping {{objective, at_least and/or at_most}}, got {excerpt(only_if)}"
        )
    bad = [k for k in only_if if k not in ("objective", *BOUNDS)]
    if bad:
        raise ValueError(f"{field}.only_if: unknown key {excerpt(bad[0])}; use objective, at_least, at_most")
    objective = only_if.get("objective")
    if not isinstance(objective, str) or not objective:
        raise ValueError(f"{field}.only_if.objective must name an objective of reward_funcs, got {excerpt(objective)}")
    if objective == name:
        raise ValueError(f"{field}.only_if.objective: {name!r} cannot be conditioned on itself")
    bounds = {b: _number(only_if[b], f"{field}.only_if.{b}") for b in BOUNDS if only_if.get(b) is not None}
    if not bounds:
        raise ValueError(f"{field}.only_if needs at_least and/or at_most (the threshold on {objective!r})")
    if len(bounds) == 2 and bounds["at_least"] > bounds["at_most"]:
        raise ValueError(
            f"{field}.only_if: at_least {bounds['at_least']:g} > at_most {bounds['at_most']:g}, never met"
        )
    otherwise = given.get("otherwise", DEFAULT_OTHERWISE)
    if otherwise != NOT_APPLICABLE:
        if isinstance(otherwise, str):
            raise ValueError(f"{field}.otherwise must be a number or {NOT_APPLICABLE}, got {excerpt(otherwise)}")
        otherwise = _number(otherwise, f"{field}.otherwise")
    return Condition(objective, bounds.get("at_least"), bounds.get("at_most"), otherwise)


def parse_conditions(given: Any, names: Sequence[str] | None, field: str) -> dict[str, Condition]:
    """Every condition of ``given`` (objective -> its ``only_if`` / ``otherwise``), checked: keys and values, and
    with ``names`` (``reward_funcs``) the objectives named and cycles. ``field`` is e.g. ``"reward_kwargs"``."""
    if given is None:
        return {}
    if not isinstance(given, Mapping):
        raise ValueError(f"{field} must be a mapping of objective -> condition, got {excerpt(given)}")
    conditions = {name: parse_condition(name, spec, f"{field}[{name}]") for name, spec in given.items()}
    for name, c in conditions.items():
        if names is not None and name not in names:
            raise ValueError(f"{field}[{name}]: not an objective of reward_funcs {list(names)}")
        if names is not None and c.objective not in names:
            raise ValueError(
                f"{field}[{name}].only_if.objective: {c.objective!r} is not an objective of reward_funcs {list(names)}"
            )
    order(conditions, field)  # refuses a cycle
    return conditions


def order(conditions: Mapping[str, Condition], field: str = "reward_kwargs") -> list[str]:
    """The conditioned objectives, each after the objective it reads (so a chain reads conditioned values); a cycle
    is one line naming it."""
    done: list[str] = []
    for start in conditions:
        path: list[str] = []
        name = start
        while name in conditions and name not in done:
            if name in path:
                cycle = " -> ".join([*path[path.index(name) :], name])
                raise ValueError(f"{field}[{name}].only_if: the conditions form a cycle ({cycle})")
            path.append(name)
            name = conditions[name].objective
        done.extend(reversed(path))
    return done


def apply_conditions(
    rewards: torch.Tensor, names: Sequence[str], conditions: Mapping[str, Condition]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(rewards (..., K) with each condition applied, objective -> where its condition held). Pure."""
    out, met = rewards.clone(), {}
    for name in order(conditions):
        c, k = conditions[name], names.index(name)
        met[name] = c.met(out[..., names.index(c.objective)])
        out[..., k] = torch.where(met[name], out[..., k], torch.full_like(out[..., k], c.fill))
    return out, met


def _normalises_each_objective(cls: type[Weighting], kwargs: Mapping[str, Any], estimator: str) -> bool:
    """Whether a strategy's advantages are built from per-objective normalised advantages (NaN rows left out of
    each objective's statistics, advantage 0 there): advantage and gradient space, or a plain weighted sum under
    GDPO's normalise-then-sum; CTWA acts through its base scalarization."""
    if cls.space in ("advantage", "gradient"):
        return True
    if cls.name == "ctwa":
        return _normalises_each_objective(weighting_class(kwargs.get("base", "linear")), {}, estimator)
    plain = cls.combine is Weighting.combine and cls.combine_with is Weighting.combine_with
    return estimator == "gdpo" and plain


def not_applicable_refusal(
    conditions: Mapping[str, Condition], train_names: Sequence[str], weighting: str, kwargs: Mapping, estimator: str
) -> str | None:
    """Why ``otherwise: not_applicable`` on a trained objective cannot be honoured by this weighting (one line), or
    ``None``: a strategy that scalarizes the rewards before normalising has no per-objective statistics to leave the
    row out of (a NaN entry would count as 0 in the weighted sum, i.e. ``otherwise: 0``)."""
    na = [n for n, c in conditions.items() if c.otherwise == NOT_APPLICABLE and n in train_names]
    if not na or _normalises_each_objective(weighting_class(weighting), kwargs, estimator):
        return None
    return (
        f"reward_kwargs[{na[0]}].otherwise: not_applicable needs each objective normalised on its own, but weighting "
        f"{weighting!r} with advantage_estimator {estimator!r} scalarizes the rewards first; use a number, "
        "advantage_estimator: gdpo, or an advantage- or gradient-space weighting"
    )
