"""Reward registry: ``REWARDS`` maps a name to a factory ``factory(**reward_kwargs) -> reward function``.

A reward function has TRL's signature ``f(prompts, completions, completion_ids, **kwargs) -> list[float | None]``;
dataset columns (e.g. the gold ``answer``) arrive as kwargs, ``None`` means "not applicable" (NaN). The registry
key becomes the function's ``__name__``, which TRL uses as the metric and column name. Only the selected rewards
are built; a name that is not a key is imported as a dotted path ``pkg.module.function``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from mo_align.rewards.common import completion_text
from mo_align.rewards.length import make_conciseness_reward
from mo_align.rewards.math import make_accuracy_reward, make_clarity_reward


RewardFunc = Callable[..., list]

REWARDS: dict[str, Callable[..., RewardFunc]] = {
    "accuracy": make_accuracy_reward,
    "conciseness": make_conciseness_reward,
    "clarity": make_clarity_reward,
}


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
        if name in REWARDS:
            try:
                fn = REWARDS[name](**kwargs)
            except TypeError as exc:
                raise TypeError(f"reward {name!r}: bad reward_kwargs {kwargs}: {exc}") from exc
            fn.__name__ = name
        else:
            target = _import_dotted(name)
            fn = target(**kwargs) if kwargs else target
            if not callable(fn):
                raise ValueError(f"reward {name!r} is not callable")
        funcs.append(fn)
    return funcs


__all__ = ["REWARDS", "completion_text", "get_reward_funcs"]
