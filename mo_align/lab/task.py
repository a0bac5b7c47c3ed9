"""The lab's task: arithmetic prompts, answer styles with known objective profiles, the model and tokenizer.

Styles (accuracy / conciseness / clarity of a typical sample; token lengths with the digit-level tokenizer):

=====  ==========================================================  ======  ========
style  example                                                     share   a/c/cl
=====  ==========================================================  ======  ========
A      ``Step 1: 8+7=15.`` / ``First, 8+7=15.`` ... ``\\boxed{21}``   0.25    1/0/1
B      ``The answer is \\boxed{21}.`` or ``\\boxed{21}``             0.15    1/1/0
C      A with an arithmetic slip                                    0.15    0/0/1
D      short and wrong, boxed                                       0.10    0/1/0
E      ``The answer is 21.`` (no box)                               0.10    0/1/0
F      step-by-step without a box                                   0.05    0/0/0
G      ``1. 15`` / ``2. 21`` / ``\\boxed{21}`` (compact, clear)      0.20    .7/1/1
=====  ==========================================================  ======  ========

G is short *and* clear *and* usually correct, so a Pareto-improving policy exists (as in the paper's setting, where
no objective excludes another); without it no method could avoid a trade-off and the lab could not tell good
weighting from bad.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from mo_align.data.synthetic import all_problems


Problem = tuple[int, str, int, str, int, int]
# the tradeoff regime's knob values, chosen by the sweep in the module docstring
TRADEOFF_SHARE = 0.05
TRADEOFF_ACCURACY = 0.7

MODEL_CONFIG = {
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
}


def prompt_text(p: Problem) -> str:
    a, o1, b, o2, c, _ = p
    return f"Compute {a} {o1} {b} {o2} {c}."


def _steps(p: Problem, slip: int = 0) -> tuple[str, str, int]:
    a, o1, b, o2, c, _ = p
    mid = a + b if o1 == "+" else a - b
    end = (mid + c if o2 == "+" else mid - c) + slip
    return f"{a}{o1}{b}={mid}", f"{mid}{o2}{c}={end}", end


def _slip(rng: random.Random) -> int:
    return rng.choice([-2, -1, 1, 2])


def style_a(p: Problem, rng: random.Random) -> str:
    s1, s2, end = _steps(p)
    if rng.random() < 0.5:
        return f"Step 1: {s1}.\nStep 2: {s2}.\nSo the answer is \\boxed{{{end}}}."
    return f"First, {s1}.\nThen, {s2}.\nSo the answer is \\boxed{{{end}}}."


def style_b(p: Problem, rng: random.Random) -> str:
    return f"The answer is \\boxed{{{p[5]}}}." if rng.random() < 0.5 else f"\\boxed{{{p[5]}}}"


def style_c(p: Problem, rng: random.Random) -> str:
    s1, s2, end = _steps(p, slip=_slip(rng))
    if rng.random() < 0.5:
        return f"Step 1: {s1}.\nStep 2: {s2}.\nSo the answer is \\boxed{{{end}}}."
    return f"First, {s1}.\nThen, {s2}.\nSo the answer is \\boxed{{{end}}}."


def style_d(p: Problem, rng: random.Random) -> str:
    return f"The answer is \\boxed{{{max(0, p[5] + _slip(rng))}}}."


def style_e(p: Problem, rng: random.Random) -> str:
    return f"The answer is {p[5]}."


def style_f(p: Problem, rng: random.Random) -> str:
    s1, s2, end = _steps(p)
    return f"Step 1: {s1}.\nStep 2: {s2}.\nThe answer is {end}."


def style_g(p: Problem, rng: random.Random, accuracy: float = 0.7) -> str:
    _, _, end = _steps(p, slip=_slip(rng) if rng.random() < 1.0 - accuracy else 0)
    a, o1, b, _, _, _ = p
    mid = a + b if o1 == "+" else a - b
    return f"1. {mid}\n2. {end}\n\\boxed{{{end}}}"


STYLE_FUNCS: dict[str, Callable[..., str]] = {
    "A": style_a,
    "B": style_b,
    "C": style_c,
    "D": style_d,
    "E": style_e,
    "F": style_f,
    "G": style_g,
}
# the 6-style mix of LAB_NOTES §1 (no compact style): step-by-step answers are the accurate ones
BASE_SHARES = {"A": 0.30, "B": 0.20, "C": 0.20, "D": 0.15, "E": 0.10, "F": 0.05}
EVAL_PROMPTS = 256  # held-out prompts (x 4 samples at eval): SE of a mean ~0.015, of a paired delta ~0.02


@dataclass(frozen=True)
class Regime:
    """A task regime: the warm start's style shares (sum 1), how often the compact style G is correct, and the
    warm start's length (steps of 64 sequences; with fewer steps the model imitates the styles' arithmetic less
    well, which sets how accurate each style is *as sampled*)."""

    shares: Mapping[str, float]
    compact_accuracy: float = 0.7
    warm_start_steps: int = 400

    def __post_init__(self) -> None:
        unknown = sorted(set(self.shares) - set(STYLE_FUNCS))
        if unknown:
            raise ValueError(f"regime shares: unknown style(s) {unknown}; styles are {sorted(STYLE_FUNCS)}")
        if any(v < 0 for v in self.shares.values()) or abs(sum(self.shares.values()) - 1.0) > 1e-9:
            raise ValueError(f"regime shares must be >= 0 and sum to 1, got {dict(self.shares)}")
        if not 0.0 <= self.compact_accuracy <= 1.0:
            raise ValueError(f"regime compact_accuracy must be in [0, 1], got {self.compact_accuracy}")
        if self.warm_start_steps < 1:
            raise ValueError(f"regime warm_start_steps must be >= 1, got {self.warm_start_steps}")

    def key(self) -> dict[str, Any]:
        """JSON-able identity (part of the warm-start cache key)."""
        shares = {k: round(v, 12) for k, v in sorted(self.shares.items()) if v > 0}
        return {"shares": shares, "compact_accuracy": self.compact_accuracy, "eval_prompts": EVAL_PROMPTS}

    def styles(self) -> dict[str, tuple[float, Callable[[Problem, random.Random], str]]]:
        """style -> (share, completion function) for the styles with a positive share."""
        out = {}
        for name, share in self.shares.items():
            if share > 0:
                fn = STYLE_FUNCS[name]
                out[name] = (share, partial(fn, accuracy=self.compact_accuracy) if name == "G" else fn)
        return out


def compact_regime(share: float, accuracy: float = 0.7, warm_start_steps: int = 400) -> Regime:
    """:data:`BASE_SHARES` scaled by ``1 - share`` plus the compact style G at ``share`` (the sweep's knob)."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"compact share must be in [0, 1), got {share}")
    return Regime({**{k: v * (1.0 - share) for k, v in BASE_SHARES.items()}, "G": share}, accuracy, warm_start_steps)


REGIMES: dict[str, Regime] = {
    # the lab before issue 15: G common (20 %) and 70 % correct, so equal weights find it and trade nothing away
    "easy": Regime({"A": 0.25, "B": 0.15, "C": 0.15, "D": 0.10, "E": 0.10, "F": 0.05, "G": 0.20}, 0.7, 600),
    "tradeoff": compact_regime(TRADEOFF_SHARE, TRADEOFF_ACCURACY),
}
DEFAULT_TASK = "tradeoff"
STYLES = REGIMES["easy"].styles()  # the easy regime's mix (kept for callers of the pre-regime API)


def get_regime(name: str) -> Regime:
    if name not in REGIMES:
        raise ValueError(f"unknown task {name!r}; choose from {sorted(REGIMES)}")
    return REGIMES[name]


def sample_completion(p: Problem, rng: random.Random, regime: Regime | None = None) -> tuple[str, str]:
    """(style name, completion text) drawn from the regime's style mix (default: :data:`DEFAULT_TASK`)."""
    styles = (regime or REGIMES[DEFAULT_TASK]).styles()
    names = list(styles)
    name = rng.choices(names, weights=[styles[n][0] for n in names])[0]
    return name, styles[name][1](p, rng)


def split_problems(n_eval: int = EVAL_PROMPTS, seed: int = 0) -> tuple[list[Problem], list[Problem]]:
    """(train, held-out eval) problems: a fixed shuffle of all 1,899 problems."""
    problems = all_problems()
    random.Random(seed).shuffle(problems)
    return problems[n_eval:], problems[:n_eval]
