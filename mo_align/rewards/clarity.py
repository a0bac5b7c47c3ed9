"""clarity ∈ {0, 1}: a non-empty boxed answer plus a step-by-step structure.

Reference behaviour (``multiobjective_math/clarity.py``), reproduced as is, permissiveness included:

* a **non-empty box**: ``\\boxed{`` then optional whitespace, a character that is neither whitespace nor ``}``, and a
  closing ``}`` later (``\\boxed{}``, ``\\boxed{ }`` and an unclosed ``\\boxed{5`` fail);
* and a **structure**: at least 2 matches of the enumerator pattern, or at least 2 ordinal words. Both patterns are
  case-insensitive and count non-overlapping matches.

  - Enumerator (A): a boundary (line start, whitespace or ``(``), an optional ``step``, then digits, one letter, or
    a run of the roman letters ``ivxlcdm``, then one of ``) . : -``. (B): a boundary (line start or whitespace), a
    bullet ``-``, ``*`` or ``•``, then whitespace.
  - Ordinal words: first … tenth, next, then.

  This is **very permissive**: `` 5.`` (any number before a period, e.g. ``... = 12. ``), `` - `` (a subtraction
  with spaces), ``Step 1:``, ``(a)``, `` did.`` (roman letters) all count, and "Then" is one ordinal. So almost any
  multi-sentence solution with a box scores 1: "We compute 2 + 3 = 5. Then 5 - 1 = 4. \\boxed{4}" → 1, while "The
  answer is \\boxed{5}" → 0.

Options: ``strict`` counts enumerators only at the start of a line (after spaces/tabs), so ``... = 12. `` no longer
counts (the ordinal branch is unchanged); ``gate_on_accuracy`` gives 1 only to correct completions
(the reference's commented-out variant; ``accuracy_mode`` picks the checker, ``"reference"`` being exactly that
variant's).
"""

from __future__ import annotations

import re
from typing import Any

from mo_align.rewards.accuracy import AccuracyReward
from mo_align.rewards.common import gold_answers, safe_text


NONEMPTY_BOX = re.compile(r"\\boxed\{\s*[^\s}][^}]*\}")  # the reference's pattern; see has_nonempty_box
_BOX_OPEN = re.compile(r"\\boxed\{\s*")
ENUMERATOR = re.compile(
    r"(?:^|\s|\()(?:step\s*)?(?:\d+|[a-z]|[ivxlcdm]+)[).:\-]"  # (A) numbered / lettered / roman
    r"|(?:^|\s)[-*•]\s+",  # (B) bullet
    re.IGNORECASE | re.MULTILINE,
)
ENUMERATOR_STRICT = re.compile(
    r"^[ \t]*(?:step\s*)?(?:\d+|[a-z]|[ivxlcdm]+)[).:\-]|^[ \t]*[-*•]\s+", re.IGNORECASE | re.MULTILINE
)
ORDINALS = re.compile(r"\b(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|next|then)\b", re.I)


def has_steps(text: str, strict: bool = False) -> bool:
    """>= 2 enumerator matches or >= 2 ordinal words."""
    pattern = ENUMERATOR_STRICT if strict else ENUMERATOR
    return len(pattern.findall(text)) >= 2 or len(ORDINALS.findall(text)) >= 2


def has_nonempty_box(text: str) -> bool:
    """``NONEMPTY_BOX.search(text) is not None``, in linear time.

    The pattern's ``[^}]*\\}`` rescans the rest of the text from every ``\\boxed{`` that has no closing brace, so
    1 MB of ``\\boxed{ x`` took 89 s. Equivalent test: some ``\\boxed{`` whose first non-space character is not
    ``}`` and has a ``}`` anywhere after it (the first ``}`` after it then ends the match). The whitespace runs
    after distinct ``\\boxed{`` are disjoint, so the scan is O(len(text)).
    """
    last_close = text.rfind("}")
    return any(m.end() < last_close and text[m.end()] != "}" for m in _BOX_OPEN.finditer(text))


def clarity_score(text: str, strict: bool = False) -> float:
    """1.0 iff a non-empty ``\\boxed{}`` and a step structure (ungated)."""
    return float(has_nonempty_box(text) and has_steps(text, strict))


class ClarityReward:
    """The clarity objective with TRL's reward signature.

    Args:
        strict (`bool`, defaults to ``False``): enumerators only at line start.
        gate_on_accuracy (`bool`, defaults to ``False``): 1 only if the completion is also correct (needs the
            ``answer`` column).
        accuracy_mode (`str`, defaults to ``"verify"``): the checker of the gate (see :mod:`.accuracy`).
        accuracy_kwargs (`dict`, *optional*): further :class:`~mo_align.rewards.accuracy.AccuracyReward` arguments.
    """

    __name__ = "clarity"

    def __init__(
        self,
        strict: bool = False,
        gate_on_accuracy: bool = False,
        accuracy_mode: str = "verify",
        accuracy_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.strict = bool(strict)
        self.gate_on_accuracy = bool(gate_on_accuracy)
        self._accuracy = None
        if self.gate_on_accuracy:
            self._accuracy = AccuracyReward(mode=accuracy_mode, **(accuracy_kwargs or {}))

    def __call__(
        self, prompts=None, completions=None, completion_ids=None, answer=None, **kwargs
    ) -> list[float | None]:
        texts = [safe_text(c) for c in (completions or [])]
        scores: list[float | None] = [clarity_score(t, self.strict) for t in texts]
        if self._accuracy is not None:
            golds = gold_answers(answer, kwargs.get("solution"), len(texts), "clarity with gate_on_accuracy")
            correct = self._accuracy.score(texts, golds)
            scores = [None if c is None else s * c for s, c in zip(scores, correct)]
        return scores
