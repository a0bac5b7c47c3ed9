"""What a reward function may return, checked where it returns it, and how long each objective takes.

A reward function returns one value per completion: a finite number, or ``None`` / NaN for "not applicable"
(TRL's convention; a row where every objective is NaN is unscorable). Anything else stops training with an error
naming the reward: a non-sequence (a string, a scalar), a wrong length, a non-numeric entry, ±inf, or a magnitude
above ``MAX_ABS_REWARD`` (the group statistics run in float32, where the square of a reward >= ~1e19 overflows and
a batch silently gets all-zero advantages). The same check runs at the preflight (``mo_align.train``), on every
training batch and on every evaluation.

:class:`RewardMonitor` is what the trainer uses per generation batch: it wraps the reward functions for the
duration of TRL's scoring call (checking each output and timing it), logs ``mo/reward_time/<objective>`` (seconds
spent in that objective's function on this process), warns once per objective when its scores are NaN for a whole
batch, and warns once when one objective takes more than half of a generation batch (generation + scoring).
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from trl.trainer.utils import is_async_callable

from mo_align.text import excerpt


if TYPE_CHECKING:
    from trl import GRPOTrainer


logger = logging.getLogger("mo_align")

MAX_ABS_REWARD = 1e15
DOMINANT_SHARE = 0.5  # warn when one objective takes more than this share of a generation batch
DOMINANT_MIN_S = 0.1  # ... and at least this long (tiny batches are all noise)


class RewardError(ValueError):
    """A reward function returned something that cannot be trained on."""


def check_reward_output(name: str, out: Any, n: int) -> None:
    """Raise :class:`RewardError` naming reward ``name`` unless ``out`` holds ``n`` numbers or ``None`` s, each
    finite (NaN = not applicable) and at most ``MAX_ABS_REWARD`` in magnitude."""
    if hasattr(out, "tolist") and not isinstance(out, list | tuple):  # a tensor or an array
        out = out.tolist()
    if isinstance(out, str | bytes | dict) or not isinstance(out, list | tuple):
        raise RewardError(
            f"reward {name!r} returned a {type(out).__name__} ({excerpt(out)}): it must return a list with one "
            "number (or None) per completion"
        )
    if len(out) != n:
        raise RewardError(f"reward {name!r} returned {len(out)} values for {n} completions (must be 1 each)")
    for i, v in enumerate(out):
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise RewardError(
                f"reward {name!r} returned {excerpt(v)} ({type(v).__name__}) for completion {i}: each value must be "
                "a number or None"
            )
        x = float(v)
        if math.isinf(x) or abs(x) > MAX_ABS_REWARD:
            raise RewardError(
                f"reward {name!r} returned {x:g} for completion {i}: rewards must be finite with |r| <= "
                f"{MAX_ABS_REWARD:g} (return None or NaN for 'not applicable')"
            )


class _Checked:
    """A reward function as TRL calls it, with its output checked and its time recorded (sync functions only)."""

    def __init__(self, fn: Any, name: str, times: dict[str, float]) -> None:
        self.fn, self.name, self.times = fn, name, times
        self.__name__ = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            out = self.fn(*args, **kwargs)
        finally:
            self.times[self.name] = self.times.get(self.name, 0.0) + time.perf_counter() - start
        prompts = kwargs.get("prompts", args[0] if args else None)
        check_reward_output(self.name, out, len(prompts) if prompts is not None else len(out))
        return out


class RewardMonitor:
    """Per-batch reward checks and timing for ``MOGRPOTrainer`` (see the module docstring)."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = tuple(names)
        self.times: dict[str, float] = {}
        self._warned_nan: set[str] = set()
        self._warned_slow = False

    @contextlib.contextmanager
    def checking(self, trainer: GRPOTrainer) -> Iterator[None]:
        """Swap ``trainer.reward_funcs`` for checked, timed wrappers during one scoring call; restore them after.

        ``nn.Module`` reward models and async functions are left as they are (TRL scores them itself); their
        values are still checked on the reward matrix by :meth:`check_batch`."""
        self.times = {}
        original = list(trainer.reward_funcs)
        trainer.reward_funcs = [
            fn if isinstance(fn, torch.nn.Module) or is_async_callable(fn) else _Checked(fn, name, self.times)
            for fn, name in zip(original, self.names, strict=True)
        ]
        try:
            yield
        finally:
            trainer.reward_funcs = original

    def check_batch(self, rewards: torch.Tensor, metrics: dict[str, list], skip: Sequence[str] = ()) -> None:
        """The gathered (N, K) reward matrix: ±inf or huge values are an error naming the objective; an objective
        that is NaN for the whole batch is warned once. Logs ``mo/reward_time/<objective>``. The objectives in
        ``skip`` were not scored (an eval-role objective on a training batch) and are not checked."""
        for k, name in enumerate(self.names):
            if name in skip:
                continue
            col = rewards[:, k]
            bad = col[~torch.isnan(col) & ~(col.abs() <= MAX_ABS_REWARD)]
            if bad.numel():
                raise RewardError(
                    f"reward {name!r} returned {float(bad[0]):g}: rewards must be finite with |r| <= "
                    f"{MAX_ABS_REWARD:g} (return None or NaN for 'not applicable')"
                )
            if col.numel() and torch.isnan(col).all() and name not in self._warned_nan:
                self._warned_nan.add(name)
                logger.warning(
                    "objective %r is NaN (not applicable) for every completion of this batch: it contributes nothing "
                    "to the update (warned once)",
                    name,
                )
            if name in self.times:
                metrics[f"mo/reward_time/{name}"].append(self.times[name])

    def end_batch(self, total_s: float) -> None:
        """Warn once when one objective's scoring took more than half of this generation batch."""
        if self._warned_slow or not self.times:
            return
        name, spent = max(self.times.items(), key=lambda item: item[1])
        if spent >= DOMINANT_MIN_S and spent > DOMINANT_SHARE * total_s:
            self._warned_slow = True
            logger.warning(
                "objective %r took %.2f s of this batch's %.2f s of generation and scoring (%.0f%%): it dominates "
                "the step (see mo/reward_time/*; warned once)",
                name,
                spent,
                total_s,
                100 * spent / max(total_s, 1e-9),
            )
