"""Conciseness: 1 when a completion is shorter than the running mean length of all training completions so far.

Reference: ``multiobjective_math/conciseness.py`` (REFERENCE_SPEC §4.2). The running mean includes the current
training batch; evaluation compares against the training mean without updating it; 1.0 before any training batch.
"""

from __future__ import annotations

from typing import Any


class ConcisenessReward:
    """Stateful conciseness objective; ``state_dict``/``load_state_dict`` make it resumable.

    Args:
        reference_length (`float`, *optional*): a fixed reference length instead of the running mean.
    """

    __name__ = "conciseness"

    def __init__(self, reference_length: float | None = None) -> None:
        self.reference_length = reference_length
        self.total_tokens = 0
        self.count = 0
        self.training = True  # set by MOGRPOTrainer: evaluation never moves the running mean

    @property
    def running_mean(self) -> float | None:
        return self.total_tokens / self.count if self.count else None

    def __call__(self, prompts, completions, completion_ids, trainer_state=None, **kwargs) -> list[float | None]:
        if completion_ids is None:
            raise ValueError("conciseness needs completion_ids (token lengths)")
        lengths = [len(ids) for ids in completion_ids]
        training = self.training
        if self.reference_length is not None:
            ref = float(self.reference_length)
        else:
            if training:
                self.total_tokens += sum(lengths)
                self.count += len(lengths)
            ref = self.running_mean
            if ref is None:
                return [1.0] * len(lengths)
        return [float(n < ref) for n in lengths]

    def state_dict(self) -> dict[str, Any]:
        return {"total_tokens": self.total_tokens, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total_tokens = int(state["total_tokens"])
        self.count = int(state["count"])


def make_conciseness_reward(reference_length: float | None = None) -> ConcisenessReward:
    return ConcisenessReward(reference_length=reference_length)
