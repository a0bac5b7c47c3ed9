"""Which answer style a lab completion is written in, and per-style tallies of an evaluation.

The lab's warm-start data (:mod:`mo_align.lab.task`) mixes seven styles, but two pairs share one *template* and
differ only in whether the arithmetic is right: A (step-by-step, boxed) and C (the same with a slip), B (short, boxed)
and D (short and wrong, boxed). A sampled completion is classified by its template, so its correctness is left to the
accuracy reward, and a style's *sampled* accuracy is the quantity measured per class:

=====  =================================================  =========================================================
class  template                                           rule (on the stripped text)
=====  =================================================  =========================================================
A      A and C: ``Step 1: …`` / ``First, …`` + a box       step markers (``Step <n>``, or ``First`` and ``Then``), a box
B      B and D: ``The answer is \\boxed{21}.``, ``\\boxed{21}``  one line with a box
E      ``The answer is 21.``                              one line, no box, ``answer is <integer>``
F      step-by-step without a box                         step markers, no box
G      ``1. 15`` / ``2. 21`` / ``\\boxed{21}``               two or more lines starting ``<n>.``, a box
other  anything else (a broken or mixed template)
=====  =================================================  =========================================================

G is recognised by its numbered lines whatever their numbers: a tiny policy trained toward G writes ``1. 9`` /
``1. 8`` / ``\\boxed{7}`` far more often than ``1.`` / ``2.`` (a numbering slip, as C is A with an arithmetic slip; the
rewards score both the same). Requiring the literal ``1.`` and ``2.`` put 94 % of an equal-weights Linear run's
final samples in ``other`` while they were this compact template.

The box is the clarity reward's non-empty ``\\boxed{...}`` (:func:`mo_align.rewards.clarity.has_nonempty_box`).
Rules are checked top to bottom in the order G, A, F, B, E.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from mo_align.rewards.clarity import has_nonempty_box

# re-exported: the classes and their tallies live with the report, which reads the labels too
from mo_align.runs.report.style_split import STYLE_CLASSES, style_tallies


__all__ = ["STYLE_CLASSES", "style_of", "style_profiles", "style_tallies"]

_NUMBERED_LINE = re.compile(r"^\s*\d+\.\s", re.M)
_STEP = re.compile(r"\bStep\s*\d", re.I)
_FIRST, _THEN = re.compile(r"\bfirst\b", re.I), re.compile(r"\bthen\b", re.I)
_SHORT_UNBOXED = re.compile(r"answer is\s*-?\d+\s*\.?$", re.I)


def style_of(text: str) -> str:
    """The template class of one completion (module docstring); ``"other"`` for anything else."""
    text = (text or "").strip()
    boxed = has_nonempty_box(text)
    if boxed and len(_NUMBERED_LINE.findall(text)) >= 2:
        return "G"
    if _STEP.search(text) or (_FIRST.search(text) and _THEN.search(text)):
        return "A" if boxed else "F"
    if "\n" not in text:
        if boxed:
            return "B"
        if _SHORT_UNBOXED.search(text):
            return "E"
    return "other"


def style_profiles(labels: Any, rewards: Any, min_count: int = 1) -> dict[str, dict[str, Any]]:
    """Per style with at least ``min_count`` samples: its ``count``, ``share`` of all samples and ``means``, the mean
    of each objective over its samples (``NaN`` scores left out), from (prompts, samples) labels and (prompts,
    samples, K) rewards (one evaluation, or several stacked along the prompts)."""
    r = np.asarray(rewards, dtype=np.float64)
    labs = np.asarray(labels, dtype=object)
    if r.ndim != 3 or labs.shape != r.shape[:2]:
        raise ValueError(f"style profiles: labels {labs.shape} do not match rewards {r.shape} (prompts, samples, K)")
    total = labs.size
    out = {}
    for s in STYLE_CLASSES:
        mine = labs == s
        n = int(mine.sum())
        if n < max(1, min_count):
            continue
        means = []
        for k in range(r.shape[2]):
            v = r[:, :, k][mine]
            v = v[np.isfinite(v)]
            means.append(float(v.mean()) if v.size else float("nan"))
        out[s] = {"count": n, "share": n / total, "means": means}
    return out
