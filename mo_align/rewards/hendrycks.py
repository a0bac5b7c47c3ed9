"""The reference's accuracy checker: Hendrycks-style extraction, normalisation and string comparison.

Behaviour of verl's ``utils/reward_score/math_reward.py`` (a port of the lm-eval-harness Hendrycks MATH checker),
which the reference's ``multiobjective_math/accuracy.py`` calls. Re-implemented here from that
description, quirks included, so that ``accuracy(mode="reference")`` scores exactly what the paper's runs scored:

* **Extraction** (:func:`reference_extract`). If the text contains the literal ``"\\boxed "`` (with a space), the
  answer is what follows its last occurrence up to the next ``$`` (even when a later ``\\boxed{`` exists). Otherwise
  the last ``\\boxed`` is brace-matched from its position (a ``}`` before any ``{`` sends the depth negative, so
  ``\\boxed5}`` never closes); the match must start with ``\\boxed{``. Without ``\\boxed``, ``\\fbox`` is found but
  always rejected. No box or no closing brace: no answer, score 0.
* **Normalisation** (:func:`strip_string`), in this order: drop newlines and ``\\!``; ``\\\\`` → ``\\``;
  ``tfrac``/``dfrac`` → ``frac``; drop ``\\left``, ``\\right``, ``^{\\circ}``, ``^\\circ``, ``\\$``; a ``"\\text{ "``
  (with a space) cuts the string there (a second one is an error); drop ``\\%`` — **a bare ``%`` is kept**: verl's
  code only removes backslash-percent, so a percent sign stays in the answer (``10%`` vs ``10`` scores
  0); ``" ."`` → ``" 0."``, ``"{."`` → ``"{0."``, a leading ``.`` gets a ``0``; an ``lhs=rhs`` with a left side of
  at most 2 characters keeps ``rhs``; ``\\sqrt3`` → ``\\sqrt{3}`` (the next character, before spaces are
  removed); remove all spaces; ``\\frac12`` → ``\\frac{1}{2}``, ``\\frac1{72}`` → ``\\frac{1}{72}`` (a
  ``\\frac`` followed by a single non-brace character leaves the whole string as it was); exactly ``"0.5"`` →
  ``\\frac{1}{2}``; ``a/b`` of two canonical integers → ``\\frac{a}{b}``.
* **Errors.** A ``\\sqrt`` or ``\\frac`` at the very end of the string, or two ``"\\text{ "``, make the
  normalisation fail; :func:`is_equiv` then compares the two raw strings. Any other failure scores 0.
"""

from __future__ import annotations

import re


_BRACE = re.compile(r"[{}]")


class _NormalisationError(Exception):
    """The reference's normalisation raised (IndexError / AssertionError there); compare raw strings instead."""


def reference_extract(text: str) -> str | None:
    """The answer the reference takes from a completion, or ``None`` (which scores 0)."""
    if "\\boxed " in text:
        return text.split("\\boxed ")[-1].split("$")[0]
    idx = text.rfind("\\boxed")
    if idx < 0:
        # The reference falls back to \fbox, then rejects it because it does not start with "\boxed{".
        return None
    depth = 0
    for m in _BRACE.finditer(text, idx):
        if m.group() == "{":
            depth += 1
            continue
        depth -= 1
        if depth == 0:
            box = text[idx : m.start() + 1]
            return box[len("\\boxed{") : -1] if box.startswith("\\boxed{") else None
    return None


def _cut_units(s: str) -> str:
    marker = "\\text{ "
    if marker not in s:
        return s
    head, *rest = s.split(marker)
    if len(rest) != 1:
        raise _NormalisationError("more than one '\\text{ '")
    return head


def _brace_sqrt_argument(s: str) -> str:
    pieces = s.split("\\sqrt")
    out = [pieces[0]]
    for piece in pieces[1:]:
        if not piece:
            raise _NormalisationError("\\sqrt at the end")
        if piece[0] == "{":
            out.append("\\sqrt" + piece)
        else:
            out.append("\\sqrt{" + piece[0] + "}" + piece[1:])
    return "".join(out)


def _brace_frac_arguments(s: str) -> str:
    pieces = s.split("\\frac")
    out = [pieces[0]]
    for piece in pieces[1:]:
        out.append("\\frac")
        if not piece:
            raise _NormalisationError("\\frac at the end")
        if piece[0] == "{":
            out.append(piece)
        elif len(piece) < 2:
            return s  # the reference gives up and returns its input unchanged
        elif piece[1] == "{":
            out.append("{" + piece[0] + "}" + piece[1:])
        else:
            out.append("{" + piece[0] + "}{" + piece[1] + "}" + piece[2:])
    return "".join(out)


def _integer_slash_to_frac(s: str) -> str:
    parts = s.split("/")
    if len(parts) != 2:
        return s
    try:
        num, den = int(parts[0]), int(parts[1])
    except ValueError:
        return s
    if s != f"{num}/{den}":
        return s
    return "\\frac{" + str(num) + "}{" + str(den) + "}"


_PLAIN_REPLACEMENTS = (
    ("\n", ""),
    ("\\!", ""),
    ("\\\\", "\\"),
    ("tfrac", "frac"),
    ("dfrac", "frac"),
    ("\\left", ""),
    ("\\right", ""),
    ("^{\\circ}", ""),
    ("^\\circ", ""),
    ("\\$", ""),
)


def strip_string(s: str) -> str:
    """The reference normalisation of one answer string; raises ``_NormalisationError`` where the reference raised."""
    for old, new in _PLAIN_REPLACEMENTS:
        s = s.replace(old, new)
    s = _cut_units(s)
    s = s.replace("\\%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        s = sides[1]
    if "\\sqrt" in s:
        s = _brace_sqrt_argument(s)
    s = s.replace(" ", "")
    s = _brace_frac_arguments(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _integer_slash_to_frac(s)


def is_equiv(pred: str | None, gold: str | None) -> bool:
    """The reference comparison: normalised strings equal; raw strings equal when normalisation fails."""
    if pred is None or gold is None:
        return pred is None and gold is None
    try:
        return strip_string(pred) == strip_string(gold)
    except _NormalisationError:
        return pred == gold


def reference_score(text: str, gold: str) -> float:
    """accuracy in the reference's mode: 1.0 iff the extracted answer is :func:`is_equiv` to ``gold``."""
    pred = reference_extract(text)
    return float(pred is not None and is_equiv(pred, gold))
