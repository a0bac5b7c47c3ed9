"""Math objectives, re-exported for backwards compatibility: accuracy (:mod:`.accuracy`), clarity (:mod:`.clarity`).

Paper setting: arXiv 2602.06869, reference ``multiobjective_math/{accuracy,clarity}.py`` (REFERENCE_SPEC §4.1, §4.3).
"""

from __future__ import annotations

from mo_align.rewards.accuracy import AccuracyReward, make_accuracy_reward
from mo_align.rewards.clarity import ClarityReward, clarity_score, has_steps, make_clarity_reward


__all__ = [
    "AccuracyReward",
    "ClarityReward",
    "clarity_score",
    "has_steps",
    "make_accuracy_reward",
    "make_clarity_reward",
]
