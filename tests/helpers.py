"""Test-only helpers: a stateful weighting, simple deterministic rewards, a tiny trainer factory."""

from __future__ import annotations

from typing import Any

import torch

from mo_align.weightings.base import ObjectiveStats, Weighting


class DriftWeighting(Weighting):
    """Test-only stateful reward-space weighting: w = softmax(ℓ), ℓ_k += lr · (1 − mean r_k) after every batch.

    Its weights depend on the whole history of gathered rewards, so a rank that saw other data, a lost state on
    resume, or a double update would all show up as different weights.
    """

    name = "drift"
    space = "reward"

    def __init__(self, num_objectives: int, *, lr: float = 0.5) -> None:
        super().__init__(num_objectives)
        self.lr = lr
        self.logits = torch.zeros(num_objectives, dtype=torch.float64)
        self.updates = 0

    def weights(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=0).float()

    def update(self, stats: ObjectiveStats) -> dict[str, float]:
        means = torch.nanmean(stats.rewards.double(), dim=0).nan_to_num(0.0)
        self.logits = self.logits + self.lr * (1.0 - means)
        self.updates += 1
        return {"updates": float(self.updates)}

    def state_dict(self) -> dict[str, Any]:
        return {"logits": self.logits.clone(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.logits = state["logits"].clone()
        self.updates = int(state["updates"])


def _text(c: Any) -> str:
    return c if isinstance(c, str) else "".join(m["content"] for m in c)


def reward_has_digit(prompts, completions, completion_ids=None, **kwargs) -> list[float]:
    """1 if the completion contains a digit."""
    return [float(any(ch.isdigit() for ch in _text(c))) for c in completions]


def reward_short(prompts, completions, completion_ids=None, **kwargs) -> list[float]:
    """1 − L/16 (continuous, so groups have variance)."""
    return [1.0 - len(ids) / 16.0 for ids in completion_ids]


def reward_vowels(prompts, completions, completion_ids=None, **kwargs) -> list[float | None]:
    """Fraction of vowels; None (not applicable) for empty completions."""
    out: list[float | None] = []
    for c in completions:
        t = _text(c)
        out.append(sum(ch in "aeiou" for ch in t) / len(t) if t else None)
    return out


def tiny_dataset(n: int = 32):
    from datasets import Dataset

    prompts = [[{"role": "user", "content": f"Compute {i % 9 + 1} + {i % 7 + 1}."}] for i in range(n)]
    return Dataset.from_dict({"prompt": prompts, "answer": [str(i % 9 + i % 7 + 2) for i in range(n)]})


def tiny_config(output_dir: str, **overrides: Any):
    from mo_align.configs import MOGRPOConfig

    kwargs: dict[str, Any] = {
        "output_dir": output_dir,
        "use_cpu": True,
        "bf16": False,
        "activation_checkpointing": False,
        "per_device_train_batch_size": 8,
        "num_generations": 4,
        "max_completion_length": 8,
        "learning_rate": 1e-2,
        "max_steps": 2,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "seed": 0,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }
    kwargs.update(overrides)
    return MOGRPOConfig(**kwargs)
