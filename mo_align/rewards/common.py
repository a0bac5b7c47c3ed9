"""Helpers shared by the reward functions: completion text, boxed-answer extraction, the accuracy gate."""

from __future__ import annotations

import re
from typing import Any


CONDITION_KEYS = ("only_if", "otherwise")  # a recipe's conditions (mo_align.objectives), never passed to a reward


def completion_text(completion: Any) -> str:
    """The text of a completion, standard (str) or conversational (list of messages).

    Conversational completions are the concatenated ``content`` of their messages (TRL gives one assistant
    message). Raises ``TypeError`` for anything else; reward functions use :func:`safe_text`, which never raises.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    raise TypeError(f"completion must be a str or a list of messages, got {type(completion).__name__}")


def safe_text(completion: Any) -> str:
    """:func:`completion_text`, but ``""`` instead of an exception for a malformed completion."""
    try:
        return completion_text(completion)
    except Exception:
        return ""


_BRACE = re.compile(r"[{}]")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (brace-matched), or ``None`` when absent or unclosed.

    Spaces between ``\\boxed`` and ``{`` are allowed. Linear in ``len(text)``: one regex scan of the braces that
    follow the last ``\\boxed``, so 1 MB of text or 10k unbalanced braces cost milliseconds.
    """
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    i = start + len("\\boxed")
    n = len(text)
    while i < n and text[i] == " ":
        i += 1
    if i >= n or text[i] != "{":
        return None
    depth = 0
    for m in _BRACE.finditer(text, i):
        if m.group() == "{":
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return text[i + 1 : m.start()]
    return None


def as_column(values: Any, n: int) -> list:
    """A dataset column passed by TRL as a list of length ``n``; ``None`` (missing column) becomes n ``None``s."""
    if values is None:
        return [None] * n
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        return [values] * n
    values = list(values)
    if len(values) != n:
        raise ValueError(f"a dataset column has {len(values)} values for {n} completions")
    return values


def gold_answers(answer: Any, solution: Any, n: int, who: str) -> list:
    """The gold column as ``n`` answers: ``answer`` (mo_align, MATH) or else ``solution`` (TRL / open-r1 datasets),
    whose last ``\\boxed{...}`` is the answer when it holds one (a full worked solution), else its whole text.
    Neither column is a configuration error naming ``who``."""
    if answer is not None:
        return as_column(answer, n)
    if solution is None:
        raise ValueError(f"{who} needs a gold column 'answer' (or 'solution') in the dataset")
    return [s if not isinstance(s, str) else (last_boxed(s) or s) for s in as_column(solution, n)]


def call_frozen(
    fn: Any, prompts: list, completions: list, completion_ids: list, trainer_state: Any = None, **columns: Any
) -> Any:
    """Call a TRL-style reward outside training: stateful rewards (``training`` attribute, e.g. the conciseness
    running mean) are switched to evaluation mode for the call so their state does not move, then restored.

    ``columns`` are the dataset columns TRL passes by name; logging hooks are no-ops.
    """
    saved = getattr(fn, "training", None)
    if saved is not None:
        fn.training = False
    try:
        return fn(
            prompts=prompts,
            completions=completions,
            completion_ids=completion_ids,
            trainer_state=trainer_state,
            log_extra=lambda *a, **k: None,
            log_metric=lambda *a, **k: None,
            **columns,
        )
    finally:
        if saved is not None:
            fn.training = saved
