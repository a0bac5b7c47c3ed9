"""Stop a run that cannot learn from its rewards, naming the objectives.

A reward function returns None / NaN for "not applicable" (TRL's convention), and an objective that is NaN on some
completions trains on the others. Two patterns train on nothing at all (every advantage 0, ``grad_norm`` 0, exit
status 0), and stop the run with a :class:`UnscorableRewardsError` when a training batch is scored:

* an objective NaN on every completion of every training batch so far, once ``patience`` batches were scored: a
  reward that never applies (it reads a missing column, its parser always fails);
* every objective NaN on every completion of the last ``patience`` consecutive training batches: no completion can
  be scored any more.

The batches so far are the trainer's per-batch training reward means (``mo.history["train_reward"]``; a mean is NaN
exactly when its objective was NaN on the whole batch), which a checkpoint restores, so a resumed run counts on.
Evaluation batches do not count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from mo_align.rewards.checks import RewardError


class UnscorableRewardsError(RewardError):
    """Rewards that leave nothing to train on (see the module docstring)."""


def _nan(entry: dict[str, Any], name: str) -> bool:
    value = entry["means"].get(name)
    return value is None or math.isnan(value)


def check_scorable(
    rewards: torch.Tensor, history: Sequence[dict[str, Any]], names: Sequence[str], patience: int
) -> None:
    """Raise :class:`UnscorableRewardsError` for the (N, K) gathered rewards ``rewards`` of a training batch, given
    the earlier training batches' ``history`` (``{"step", "means": {objective: mean}}`` each, oldest first)."""
    nan_now = torch.isnan(rewards).all(dim=0).tolist() if rewards.numel() else [False] * len(names)
    if not any(nan_now):
        return
    batches = len(history) + 1
    never = [n for n, now in zip(names, nan_now, strict=True) if now and all(_nan(e, n) for e in history)]
    if never and batches >= patience:
        which = f"objective {never[0]!r}" if len(never) == 1 else "objectives " + ", ".join(map(repr, never))
        raise UnscorableRewardsError(
            f"{which} returned None/NaN for every completion of all {batches} training batches so far "
            f"(mo_nan_patience={patience}): nothing to train on; check the reward function and the dataset columns "
            "it reads"
        )
    if not all(nan_now):
        return
    run = 1
    for entry in reversed(history):
        if not all(_nan(entry, n) for n in names):
            break
        run += 1
    if run >= patience:
        raise UnscorableRewardsError(
            f"every objective ({', '.join(map(repr, names))}) returned None/NaN for every completion of the last "
            f"{run} training batches (mo_nan_patience={patience}): no completion can be scored; check the reward "
            "functions"
        )
