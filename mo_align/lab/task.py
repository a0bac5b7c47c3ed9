"""The lab's task: arithmetic prompts, answer styles with known objective profiles, task regimes, the model.

Styles (accuracy / conciseness / clarity of a typical sample; token lengths with the digit-level tokenizer):

=====  ==========================================================  ======  ========
style  example                                                     base    a/c/cl
=====  ==========================================================  ======  ========
A      ``Step 1: 8+7=15.`` / ``First, 8+7=15.`` ... ``\\boxed{21}``   0.30    1/0/1
B      ``The answer is \\boxed{21}.`` or ``\\boxed{21}``             0.20    1/1/0
C      A with an arithmetic slip                                    0.20    0/0/1
D      short and wrong, boxed                                       0.15    0/1/0
E      ``The answer is 21.`` (no box)                               0.10    0/1/0
F      step-by-step without a box                                   0.05    0/0/0
G      ``1. 15`` / ``2. 21`` / ``\\boxed{21}`` (compact, clear)      knob    p/1/1
=====  ==========================================================  ======  ========

``base`` is the 6-style mix of ``docs/lab.md`` (:data:`BASE_SHARES`). G is short *and* clear and correct with
probability ``p`` (:attr:`Regime.compact_accuracy`), so a Pareto-improving style exists (as in the paper's setting,
where no objective excludes another). The figures above are the *labels* of the warm-start data; how accurate a style
is when the warm-started model samples it depends on how well a few hundred SFT steps taught its arithmetic: the
step-by-step styles write both intermediate results and are the accurate ones, G must add two digits in one step,
a short answer three.

Task regimes (:data:`REGIMES`, ``python -m mo_align.lab --task NAME``); each is a :class:`Regime` (style shares,
``p``, warm-start steps), and the warm-start cache key includes it:

* ``easy`` — the earlier lab (G 20 %, ``p`` = 0.7, 600 warm-start steps, as ``make lab`` used): G is common,
  equal weights move to it and trade nothing away significantly (``docs/lab.md``: Linear 0/3 seeds with
  interference on the 64-prompt evaluation).
* ``tradeoff`` — the paper's regime: the base mix with G at 5 % (``compact_regime(0.05)``, ``p`` = 0.7, 400 warm-start
  steps). The accurate answers are the long ones; equal-weight Linear moves to the short, clear styles and gives up
  accuracy significantly, while the accuracy-only control gives up conciseness: the same trade-off seen from both
  ends. A Pareto-improving policy (G, answered as accurately as the labels) exists but is hard to reach: G is rare
  and its sampled accuracy is low.

How ``tradeoff`` was chosen (2026-11-29; 2-core CPU shared with other jobs, load average ≈ 5.8; 400-step warm start
per knob value on 1 thread; 50 GRPO steps per run, two 1-thread runs at a time; evaluation on the 256 held-out
prompts × 4 samples at T = 1; Δ = final − start eval mean with its 95 % paired-bootstrap CI over prompts
(:mod:`mo_align.stats`); "interferes" = a Δ CI entirely below 0 while the optimised scalar rose). The knob is the
share of G (the rest is the base mix, scaled); the algorithms keep the lab's paper-recipe hyperparameters.

G share 0.05 (start acc/conc/clar 0.262/0.478/0.487, reference length 22.3 tokens; warm start 274 s, 6 runs 655 s,
932 s in all):

=================  ========================  ========================  ========================  ===========
run                Δ accuracy                Δ conciseness             Δ clarity                 interferes
=================  ========================  ========================  ========================  ===========
linear s0          −0.081 [−0.120, −0.043]   +0.507 [+0.476, +0.538]   +0.498 [+0.467, +0.530]   accuracy
linear s1          −0.071 [−0.110, −0.033]   +0.490 [+0.460, +0.521]   +0.478 [+0.447, +0.508]   accuracy
linear s2          −0.046 [−0.086, −0.006]   +0.481 [+0.452, +0.513]   +0.474 [+0.438, +0.506]   accuracy
accuracy_only s0   +0.182 [+0.133, +0.231]   −0.336 [−0.370, −0.302]   +0.361 [+0.326, +0.397]   conciseness
accuracy_only s1   +0.104 [+0.061, +0.146]   −0.189 [−0.229, −0.149]   +0.217 [+0.178, +0.257]   conciseness
accuracy_only s2   +0.127 [+0.086, +0.168]   −0.279 [−0.317, −0.240]   +0.276 [+0.234, +0.315]   conciseness
=================  ========================  ========================  ========================  ===========

G share 0.10 (start 0.261/0.568/0.526, reference 20.7 tokens; warm start 323 s, 6 runs 515 s, 838 s in all):

=================  ========================  ========================  ========================  ===========
run                Δ accuracy                Δ conciseness             Δ clarity                 interferes
=================  ========================  ========================  ========================  ===========
linear s0          −0.133 [−0.169, −0.093]   +0.410 [+0.377, +0.440]   +0.452 [+0.419, +0.485]   accuracy
linear s1          −0.023 [−0.064, +0.017]   +0.453 [+0.420, +0.484]   +0.430 [+0.398, +0.463]   –
linear s2          −0.020 [−0.062, +0.021]   +0.434 [+0.401, +0.466]   +0.448 [+0.414, +0.482]   –
accuracy_only s0   +0.097 [+0.053, +0.141]   −0.231 [−0.272, −0.192]   +0.169 [+0.130, +0.211]   conciseness
accuracy_only s1   −0.003 [−0.042, +0.035]   −0.123 [−0.164, −0.081]   +0.041 [−0.001, +0.087]   –
accuracy_only s2   +0.075 [+0.034, +0.114]   −0.189 [−0.232, −0.147]   +0.153 [+0.110, +0.195]   conciseness
=================  ========================  ========================  ========================  ===========

(accuracy_only s1 at 0.10: conciseness fell significantly but its scalar, accuracy, did not rise, so by the rule
it is not interference.) Linear interferes on 3/3 seeds at G 5 % and on 1/3 at G 10 %; at 20 % (``easy``) the
64-prompt lab saw none. So ``tradeoff`` = G 5 %, the largest share tried with Linear interfering on every seed.
Confirmation with ``--task tradeoff --algorithms linear --seeds 3 4`` (same warm start, 254 s for the two runs in
parallel, load average ≈ 7): seed 3 Δ accuracy −0.153 [−0.188, −0.117] (conciseness +0.529, clarity +0.448), seed 4
−0.149 [−0.186, −0.113] (+0.498, +0.471); both interfere. **Linear interferes on 5 of 5 seeds** of ``tradeoff``
(median Δ accuracy −0.081, range −0.153…−0.046). Throughout these runs accuracy's within-group covariance with the
advantage stays positive (EMA +0.13…+0.35) while both training and held-out accuracy fall: the first-order law
does not predict accuracy's fall here (the shared parameters move every prompt toward the short, clear styles).

The phase diagram (``make lab-sweep``, :mod:`mo_align.lab.sweep`; ``docs/results/lab_sweep.md``) later ran
{accuracy_only, linear, ctwa} × 3 seeds at G shares 0.02, 0.05, 0.10, 0.20: the linear and accuracy_only runs above
came out identical (the lab is deterministic on CPU), and Linear interferes on 3/3 seeds at 0.02, 3/3 at 0.05, 1/3
at 0.10 and 1/3 at 0.20.
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
# the 6-style mix (no compact style): step-by-step answers are the accurate ones
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
    # the earlier lab: G common (20 %) and 70 % correct, so equal weights find it and trade nothing away
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
