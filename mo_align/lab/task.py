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
from collections.abc import Callable

from mo_align.data.synthetic import all_problems


Problem = tuple[int, str, int, str, int, int]

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


def style_g(p: Problem, rng: random.Random) -> str:
    _, _, end = _steps(p, slip=_slip(rng) if rng.random() < 0.3 else 0)
    a, o1, b, _, _, _ = p
    mid = a + b if o1 == "+" else a - b
    return f"1. {mid}\n2. {end}\n\\boxed{{{end}}}"


STYLES: dict[str, tuple[float, Callable[[Problem, random.Random], str]]] = {
    "A": (0.25, style_a),
    "B": (0.15, style_b),
    "C": (0.15, style_c),
    "D": (0.10, style_d),
    "E": (0.10, style_e),
    "F": (0.05, style_f),
    "G": (0.20, style_g),
}


def sample_completion(p: Problem, rng: random.Random) -> tuple[str, str]:
    """(style name, completion text) drawn from the style mix."""
    names = list(STYLES)
    name = rng.choices(names, weights=[STYLES[n][0] for n in names])[0]
    return name, STYLES[name][1](p, rng)


def split_problems(n_eval: int = 64, seed: int = 0) -> tuple[list[Problem], list[Problem]]:
    """(train, held-out eval) problems: a fixed shuffle of all 1,899 problems."""
    problems = all_problems()
    random.Random(seed).shuffle(problems)
    return problems[n_eval:], problems[:n_eval]
