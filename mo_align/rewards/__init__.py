"""Reward registry: ``REWARDS`` maps a name to a factory ``factory(**reward_kwargs) -> reward function``.

A reward function has TRL's signature ``f(prompts, completions, completion_ids, **kwargs) -> list[float | None]``;
completions are strings or conversational message lists; dataset columns (e.g. the gold ``answer``) arrive as
kwargs; ``None`` means "not applicable" (NaN). The registry key becomes the function's ``__name__``, which TRL uses
as the metric and column name. Only the selected rewards are built; a name that is not a key is imported as a
dotted path ``pkg.module.function`` (importing runs that module's code, as TRL's ``--reward_funcs`` does).

Only a *declared reward factory* is called with ``reward_kwargs``: a registry entry (by name or by its class's
dotted path), or a class or function that carries :func:`reward_factory`'s mark itself (not inherited). Any other
dotted path is the reward function as it is, and kwargs given for it are an error naming it: validating a recipe
never calls an arbitrary callable (``reward_funcs: [subprocess.getoutput]`` with ``reward_kwargs:
{subprocess.getoutput: {cmd: ...}}`` would run the command).

Objectives (the reference code's three rewards; all binary):

* ``accuracy`` — :class:`~mo_align.rewards.accuracy.AccuracyReward`: last ``\\boxed{}`` equivalent to ``answer``
  (``mode: verify`` with math-verify behind a hard time limit, or ``mode: reference``, the paper's string checker).
* ``conciseness`` — :class:`~mo_align.rewards.length.ConcisenessReward`: shorter than the running mean length of
  all training completions (stateful, checkpointed; a fixed-reference variant for evaluation).
* ``clarity`` — :class:`~mo_align.rewards.clarity.ClarityReward`: non-empty box + step structure.

K learned objectives from one sequence classifier with K labels: :mod:`mo_align.rewards.multi_head` (built in code,
not through the registry, since it needs a model).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from mo_align.rewards.accuracy import AccuracyReward
from mo_align.rewards.clarity import ClarityReward
from mo_align.rewards.common import CONDITION_KEYS, completion_text
from mo_align.rewards.length import ConcisenessReward


RewardFunc = Callable[..., list]
FACTORY_MARK = "__mo_align_reward_factory__"

# name -> the reward's class: its constructor's keyword arguments are the recipe's reward_kwargs[name]
REWARDS: dict[str, Callable[..., RewardFunc]] = {
    "accuracy": AccuracyReward,
    "conciseness": ConcisenessReward,
    "clarity": ClarityReward,
}


def reward_factory(factory: Any) -> Any:
    """Declare ``factory`` (a class or a function returning a reward function) a reward factory: a recipe naming
    it by dotted path builds the reward as ``factory(**reward_kwargs[name])``. Use as a decorator."""
    if not callable(factory):
        raise TypeError(f"reward_factory takes a class or a function, got {type(factory).__name__}")
    setattr(factory, FACTORY_MARK, True)
    return factory


def is_reward_factory(target: Any) -> bool:
    """Whether ``target`` is a built-in reward class (:data:`REWARDS`) or itself carries :func:`reward_factory`'s
    mark (a subclass of a declared class does not inherit it)."""
    if any(target is factory for factory in REWARDS.values()):
        return True
    return hasattr(target, "__dict__") and vars(target).get(FACTORY_MARK) is True


def _import_dotted(path: str) -> Callable[..., Any]:
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ValueError(f"unknown reward {path!r}; choose from {sorted(REWARDS)} or give a dotted path pkg.mod.fn")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(
            f"unknown reward {path!r}: not in {sorted(REWARDS)} and not importable as a dotted path ({exc})"
        ) from exc


def get_reward_funcs(names: list[str], reward_kwargs: dict[str, dict[str, Any]] | None = None) -> list[RewardFunc]:
    """Build the reward functions ``names`` (in order) with their kwargs; validates before anything runs."""
    reward_kwargs = reward_kwargs or {}
    if len(set(names)) != len(names):
        raise ValueError(f"reward_funcs lists an objective twice: {names}")
    funcs = []
    for name in names:
        kwargs = reward_kwargs.get(name) or {}
        if not isinstance(kwargs, dict):
            raise ValueError(f"reward_kwargs[{name!r}] must be a mapping, got {kwargs!r}")
        kwargs = {k: v for k, v in kwargs.items() if k not in CONDITION_KEYS}  # the trainer's (only_if, otherwise)
        if name in REWARDS:
            try:
                fn = REWARDS[name](**kwargs)
            except TypeError as exc:
                raise TypeError(f"reward {name!r}: bad reward_kwargs {kwargs}: {exc}") from exc
            fn.__name__ = name
        else:
            fn = _build_dotted(name, kwargs)
        funcs.append(fn)
    return funcs


def _build_dotted(name: str, kwargs: dict[str, Any]) -> RewardFunc:
    """The reward of a dotted path: a declared factory called with its kwargs, anything else as it is."""
    target = _import_dotted(name)
    if is_reward_factory(target):
        try:
            fn = target(**kwargs)
        except TypeError as exc:
            raise TypeError(f"reward {name!r}: bad reward_kwargs {kwargs}: {exc}") from exc
        if not hasattr(fn, "__name__"):
            fn.__name__ = name.rpartition(".")[2]  # TRL names the metric after it
    elif kwargs:
        raise ValueError(
            f"reward_kwargs[{name!r}]: {name!r} is not a declared reward factory, so it takes no kwargs (given "
            f"{sorted(kwargs)}); mark a factory with @mo_align.rewards.reward_factory"
        )
    else:
        fn = target
    if not callable(fn):
        raise ValueError(f"reward {name!r} is not callable")
    return fn


__all__ = [
    "REWARDS",
    "AccuracyReward",
    "ClarityReward",
    "ConcisenessReward",
    "completion_text",
    "get_reward_funcs",
    "is_reward_factory",
    "reward_factory",
]
