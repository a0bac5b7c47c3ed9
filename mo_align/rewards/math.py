"""Math objectives: accuracy (boxed answer matches the gold ``answer``) and clarity (boxed + step structure).

Paper setting: arXiv 2602.06869, reference ``multiobjective_math/{accuracy,clarity}.py`` (REFERENCE_SPEC §4.1, §4.3).
"""

from __future__ import annotations

import re
from typing import Any

from mo_align.rewards.common import completion_text, last_boxed


def _normalize(answer: str) -> str:
    """Light normalisation: drop spaces, ``$`` and a trailing period."""
    return re.sub(r"\s+", "", answer).replace("$", "").rstrip(".")


def make_accuracy_reward() -> Any:
    """accuracy ∈ {0, 1}: the last ``\\boxed{}`` equals the gold ``answer`` column after light normalisation."""

    def accuracy(prompts, completions, completion_ids=None, answer=None, **kwargs) -> list[float | None]:
        if answer is None:
            raise ValueError("accuracy reward needs the gold column 'answer' in the dataset")
        out: list[float | None] = []
        for completion, gold in zip(completions, answer, strict=True):
            pred = last_boxed(completion_text(completion))
            out.append(float(pred is not None and _normalize(pred) == _normalize(str(gold))))
        return out

    return accuracy


# (A) boundary, optional "step", a number / one letter / roman numerals, then ) . : -   (B) a bullet.
_ENUMERATOR = re.compile(
    r"(?:^|[\s(])(?:step\s*)?(?:\d+|[a-z]|[ivxlcdm]+)[).:\-]|(?:^|\s)[-*•]\s", re.IGNORECASE | re.MULTILINE
)
_ENUMERATOR_STRICT = re.compile(r"^\s*(?:step\s*)?(?:\d+|[a-z]|[ivxlcdm]+)[).:\-]|^\s*[-*•]\s", re.I | re.M)
_ORDINALS = re.compile(
    r"\b(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|next|then)\b", re.IGNORECASE
)
_NONEMPTY_BOX = re.compile(r"\\boxed\{\s*[^}\s]")


def clarity_score(text: str, strict: bool = False) -> float:
    """1 iff a non-empty ``\\boxed{}`` and (>= 2 enumerator matches or >= 2 ordinal words)."""
    if not _NONEMPTY_BOX.search(text):
        return 0.0
    pattern = _ENUMERATOR_STRICT if strict else _ENUMERATOR
    steps = len(pattern.findall(text)) >= 2 or len(_ORDINALS.findall(text)) >= 2
    return float(steps)


def make_clarity_reward(strict: bool = False) -> Any:
    """clarity ∈ {0, 1} (REFERENCE_SPEC §4.3); ``strict`` counts enumerators only at line start."""

    def clarity(prompts, completions, completion_ids=None, **kwargs) -> list[float | None]:
        return [clarity_score(completion_text(c), strict) for c in completions]

    return clarity
