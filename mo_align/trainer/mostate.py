"""``MOState``: everything multi-objective a ``MOGRPOTrainer`` holds, in one typed place (``trainer.mo``).

The trainer's modules get the piece they need from it (the weighting, its ``TrainerNeeds``, the run history, the
evaluation record, the gradient and post-update machinery, the monitors) instead of reading loose attributes off
the trainer. The part an exact resume needs goes into ``mo_state.pt`` through :meth:`MOState.state_dict`
(:mod:`mo_align.trainer.state` adds the reward functions' own state and writes the file).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from mo_align.trainer.conditioning import load_state as load_conditioning_state
from mo_align.weightings import TrainerNeeds, Weighting


if TYPE_CHECKING:
    from mo_align.diagnostics import InterferenceMonitor
    from mo_align.rewards.checks import RewardMonitor
    from mo_align.trainer.conditioning import Conditioning
    from mo_align.trainer.gradient import GradientSpace
    from mo_align.trainer.post_update import PostUpdate
    from mo_align.trainer.state import ResumeCallback


def new_history() -> dict[str, list]:
    """The run history: eval points, weights, covariance EMAs and training reward means, one entry per step."""
    return {"eval": [], "weights": [], "cov_ema": [], "train_reward": []}


@dataclass
class MOState:
    """The multi-objective state of one trainer.

    ``eval_samples`` holds the per-sample scores of every evaluation of the trainer's own split: ``{"step",
    "rewards" (prompts, samples, K), "scalar" and "lengths" (prompts, samples)}`` for confidence intervals over
    prompts (:mod:`mo_align.stats`), and ``"labels"`` (prompts, samples) when ``eval_labeler`` (completion text ->
    str, e.g. the lab's answer style) is set; ``eval_labels`` holds the latest evaluation's labels, flat. The
    machinery (``gradient``, ``post_update``, the monitors, ``resume_callback``) is attached once the TRL trainer
    underneath is built; ``objective_names`` too (TRL names the reward functions).
    """

    weighting: Weighting
    needs: TrainerNeeds = field(init=False)  # what to compute for the weighting, and when it updates
    objective_names: tuple[str, ...] = ()
    rewards: torch.Tensor | None = None  # (N, K) gathered rewards of the last scored batch
    history: dict[str, list] = field(default_factory=new_history)
    eval_start: dict[str, float] | None = None  # the first evaluation's means (for deltas)
    eval_starts: dict[str, dict[str, float]] = field(default_factory=dict)  # the same for further eval datasets
    eval_samples: list[dict[str, Any]] = field(default_factory=list)
    eval_labeler: Callable[[str], str] | None = None
    eval_labels: list[str] | None = None
    reward_monitor: RewardMonitor | None = None  # reward output checks, NaN warnings, timing
    monitor: InterferenceMonitor | None = None  # the interference monitor (``mo_diagnostics``)
    gradient: GradientSpace | None = None
    post_update: PostUpdate | None = None
    resume_callback: ResumeCallback | None = None
    conditioning: Conditioning | None = None  # preference-conditioned training (mo_align.trainer.conditioning)

    def __post_init__(self) -> None:
        self.needs = self.weighting.trainer_needs()

    def state_dict(self) -> dict[str, Any]:
        """The part of ``mo_state.pt`` this state owns (tensors and plain values only)."""
        return {
            "weighting": self.weighting.name,
            "weighting_state": self.weighting.state_dict(),
            "eval_start": self.eval_start,
            "eval_starts": self.eval_starts,  # further eval datasets (a dict of them)
            "monitor": self.monitor.state_dict() if self.monitor is not None else None,
            "history": self.history,
            "eval_samples": self.eval_samples,  # the start's per-sample scores: paired CIs after a resume
            "preference_sampler": self.conditioning.state_dict() if self.conditioning is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s part; a checkpoint of another weighting is refused naming both."""
        if state["weighting"] != self.weighting.name:
            raise ValueError(f"checkpoint holds weighting {state['weighting']!r}, run uses {self.weighting.name!r}")
        self.weighting.load_state_dict(state["weighting_state"])
        load_conditioning_state(self.conditioning, state.get("preference_sampler"))
        self.eval_start = state.get("eval_start")
        self.eval_starts = dict(state.get("eval_starts") or {})
        if self.monitor is not None and state.get("monitor") is not None:
            self.monitor.load_state_dict(state["monitor"])
        if state.get("history") is not None:
            self.history = state["history"]
        self.eval_samples = list(state.get("eval_samples") or [])


def alias(name: str) -> property:
    """A trainer attribute kept for existing code: reads and writes ``trainer.mo.<name>``."""

    def get(self: Any) -> Any:
        return getattr(self.mo, name)

    def put(self: Any, value: Any) -> None:
        setattr(self.mo, name, value)

    return property(get, put, doc=f"``self.mo.{name}`` (:class:`~mo_align.trainer.mostate.MOState`).")
