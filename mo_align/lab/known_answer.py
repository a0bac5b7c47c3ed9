"""A known-answer check of the lab: where Linear scalarization must go, predicted from the warm start, then observed.

Policy gradient on a fixed scalar reward ``w·r`` moves probability mass toward the answers whose expected scalar is
above the policy's mean; the lab's answers come in a few styles (:mod:`mo_align.lab.styles`), each with its own
expected reward vector ``E[r | s] = (acc_s, conc_s, clar_s)`` as the warm-started policy samples it. So Linear with
weights ``w`` should move mass to the **predicted attractor** ``argmax_s w·E[r | s]`` (:func:`predict_style`). On
the ``tradeoff`` task the step-by-step style A (accurate, long, clear) and the compact style G (less accurate,
short, clear) compete, and G wins iff ``w_acc (acc_A − acc_G) < w_conc (conc_G − conc_A) + w_clar (clar_G −
clar_A)``, roughly ``w_acc (p_A − p_G) < w_conc``.

* :func:`boundary`: along the segment ``w(t) = (1 − t) w_from + t w_to`` the scores ``w(t)·E[r | s]`` are linear in
  ``t``, so the argmax changes at exactly computable points (the upper envelope of lines).
* :func:`place_preferences`: one preference on each side of the first crossing, the nearest to it (on a grid of
  ``1/2000`` of the segment) where the predicted style beats the runner-up by ``margin`` in scalar units (weights
  summing to 1); the weights are rounded to 3 decimals (the run's name carries them: :func:`linear_name`) and the
  prediction recomputed from the rounded weights.
* :func:`observed_style`: the dominant style of an evaluation with its share's 95 % CI (bootstrap over prompts,
  the samples of a prompt together: :mod:`mo_align.stats`), and each style's paired Δ share against the start.
* :func:`check_rows`: per run, **pass** when the predicted style dominates the final evaluation and its share rose
  significantly (paired CI above 0); **moving** when its share rose significantly and the most of any style but it
  does not dominate yet; **fail** otherwise; **too close** when the predicted style leads the runner-up by less
  than :data:`MIN_LEAD` (the prediction itself is within the profiles' noise: no verdict). The lab passes its
  known-answer check (``yes``) when every run with a verdict passes, fails it (``no``) otherwise, and cannot be
  checked when no run has a verdict (e.g. the segment has no boundary and its ends are near-ties).

Profiles are measured on the warm start's samples (every run's step-0 evaluation pooled: the same policy), styles
with fewer than :data:`MIN_STYLE_SAMPLES` samples left out (their means are too noisy to predict from) as is the
``other`` class (no template).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from mo_align.lab.styles import STYLE_CLASSES
from mo_align.stats import CI, bootstrap_mean_ci, paired_delta_ci


MIN_STYLE_SAMPLES = 20
MARGIN = 0.1
MIN_LEAD = 0.05  # half the placement margin: a re-measured profile may shift a placed preference's lead a little
# the segment the check places its preferences on: from the accuracy-only control to the lab's equal weights
SEGMENT = ([1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3])
_GRID = 2000
_LINEAR = re.compile(r"^linear-w(\d+(?:\.\d+)?(?:_\d+(?:\.\d+)?)+)$")


class Crossing(NamedTuple):
    """Where the predicted style changes along a segment: at ``t`` (weights ``weights``) from ``before`` to
    ``after``."""

    t: float
    weights: tuple[float, ...]
    before: str
    after: str


class Preference(NamedTuple):
    """A preference placed by :func:`place_preferences`: its position ``t`` on the segment, weights, the predicted
    style and its lead over the runner-up (scalar units)."""

    t: float
    weights: tuple[float, ...]
    predicted: str
    gap: float


def _means(profile: Any) -> list[float]:
    return [float(v) for v in (profile["means"] if isinstance(profile, Mapping) else profile)]


def style_scores(style_profiles: Mapping[str, Any], w: Sequence[float], exclude: Sequence[str] = ("other",)):
    """``{style: w·E[r | s]}``; a profile is the reward-mean vector or a :func:`~mo_align.lab.styles.style_profiles`
    entry (its ``means``)."""
    out = {}
    for s, profile in style_profiles.items():
        if s in exclude:
            continue
        means = _means(profile)
        if len(means) != len(w):
            raise ValueError(f"style {s!r}: {len(means)} reward means but {len(w)} weights")
        out[s] = float(sum(wk * mk for wk, mk in zip(w, means)))
    if not out:
        raise ValueError("no style profile to predict from")
    return out


def predict_style(style_profiles: Mapping[str, Any], w: Sequence[float]) -> str:
    """The predicted attractor of Linear with weights ``w``: ``argmax_s w·E[r | s]`` (a tie goes to the first style
    in the mapping's order)."""
    scores = style_scores(style_profiles, w)
    return max(scores, key=lambda s: (scores[s], -list(scores).index(s)))


def lead(style_profiles: Mapping[str, Any], w: Sequence[float]) -> float:
    """How far the predicted style's score is above the runner-up's (``inf`` with one style)."""
    values = sorted(style_scores(style_profiles, w).values(), reverse=True)
    return values[0] - values[1] if len(values) > 1 else float("inf")


def _point(w_from: Sequence[float], w_to: Sequence[float], t: float) -> tuple[float, ...]:
    return tuple((1.0 - t) * a + t * b for a, b in zip(w_from, w_to, strict=True))


def boundary(style_profiles: Mapping[str, Any], w_direction: Sequence[Sequence[float]]) -> list[Crossing]:
    """Every point of the segment ``w_direction = (w_from, w_to)`` where the predicted style changes, in order.

    Each style's score is ``a_s + t b_s`` (``a_s = w_from·E[r | s]``, ``b_s = (w_to − w_from)·E[r | s]``); from the
    current argmax, the next crossing is the smallest ``t`` where a line with a larger slope catches up,
    ``t = (a_cur − a_s) / (b_s − b_cur)`` (ties: the largest slope, which stays ahead after it)."""
    w_from, w_to = w_direction
    a = style_scores(style_profiles, w_from)
    b = {s: v - a[s] for s, v in style_scores(style_profiles, w_to).items()}
    cur, t, out = predict_style(style_profiles, w_from), 0.0, []
    while True:
        # slopes rise strictly from one crossing to the next, so this ends after at most one crossing per style
        hits = [(max(t, (a[cur] - a[s]) / (b[s] - b[cur])), s) for s in a if b[s] > b[cur]]
        if not hits:
            return out
        t, nxt = min(hits, key=lambda h: (h[0], -b[h[1]]))
        if t > 1.0:
            return out
        out.append(Crossing(t, _point(w_from, w_to, t), cur, nxt))
        cur = nxt


def _rounded(w: Sequence[float]) -> tuple[float, ...]:
    return tuple(round(float(v), 3) for v in w)


def _placed(style_profiles: Mapping[str, Any], w_from, w_to, t: float) -> Preference:
    w = _rounded(_point(w_from, w_to, t))
    return Preference(t, w, predict_style(style_profiles, w), lead(style_profiles, w))


def place_preferences(
    style_profiles: Mapping[str, Any], w_direction: Sequence[Sequence[float]] = SEGMENT, margin: float = MARGIN
) -> tuple[Crossing | None, list[Preference]]:
    """(the segment's first crossing, one preference on each side of it) — see the module docstring. Where no point
    on a side reaches ``margin``, that side's end of the segment (its lead is then below ``margin``); without a
    crossing, both ends of the segment."""
    w_from, w_to = w_direction
    crossings = boundary(style_profiles, w_direction)
    if not crossings:
        return None, [_placed(style_profiles, w_from, w_to, 0.0), _placed(style_profiles, w_from, w_to, 1.0)]
    first = crossings[0]
    grid = [i / _GRID for i in range(_GRID + 1)]
    sides = []
    for candidates, style, end in (
        ([t for t in reversed(grid) if t < first.t], first.before, 0.0),
        ([t for t in grid if t > first.t], first.after, 1.0),
    ):
        chosen = None
        for t in candidates:
            p = _placed(style_profiles, w_from, w_to, t)
            if p.predicted == style and p.gap >= margin:
                chosen = p
                break
        sides.append(chosen or _placed(style_profiles, w_from, w_to, end))
    return first, sides


def linear_name(w: Sequence[float]) -> str:
    """The lab's algorithm name of Linear with weights ``w`` (3 decimals): ``linear-w0.6_0.2_0.2``."""
    return "linear-w" + "_".join(f"{v:.3f}".rstrip("0").rstrip(".") or "0" for v in _rounded(w))


def parse_linear_name(name: str) -> list[float] | None:
    """The weights of a :func:`linear_name` (``None`` for any other name); refuses weights that sum to 0."""
    m = _LINEAR.match(name)
    if m is None:
        return None
    w = [float(v) for v in m.group(1).split("_")]
    if sum(w) <= 0:
        raise ValueError(f"{name}: Linear weights must not all be 0")
    return w


def linear_weighting(algo: str) -> tuple[str, dict[str, Any]] | None:
    """``("linear", {"weights": w})`` for a :func:`linear_name`, else ``None`` (the lab's worker resolves the named
    algorithms itself)."""
    w = parse_linear_name(algo)
    return None if w is None else ("linear", {"weights": w})


def _indicator(labels: Any, style: str) -> Any:
    return (np.asarray(labels, dtype=object) == style).astype(np.float64)


def observed_style(
    labels: Any, start_labels: Any = None, level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """The dominant style of an evaluation's (prompts, samples) ``labels``: ``style``, ``share`` (its CI over
    prompts, as a dict), every style's share, and with ``start_labels`` (the same prompts) every style's paired
    ``delta_share`` CI."""
    labs = np.asarray(labels, dtype=object)
    if labs.ndim != 2 or labs.size == 0:
        raise ValueError(f"observed style: expected (prompts, samples) labels, got shape {labs.shape}")
    shares = {s: float(_indicator(labs, s).mean()) for s in STYLE_CLASSES}
    dominant = max(shares, key=lambda s: (shares[s], -list(shares).index(s)))
    out: dict[str, Any] = {
        "style": dominant,
        "share": bootstrap_mean_ci(_indicator(labs, dominant), level, n_boot, seed)._asdict(),
        "shares": shares,
    }
    if start_labels is not None:
        out["delta_share"] = {
            s: paired_delta_ci(_indicator(start_labels, s), _indicator(labs, s), level, n_boot, seed)._asdict()
            for s in STYLE_CLASSES
        }
    return out


def verdict(predicted: str, observed: Mapping[str, Any]) -> str:
    """``pass`` / ``moving`` / ``fail`` (module docstring) from :func:`observed_style` with ``start_labels``."""
    rises = observed["delta_share"]
    rose = rises[predicted]["low"] > 0
    if rose and observed["style"] == predicted:
        return "pass"
    top = max(rises, key=lambda s: rises[s]["estimate"])
    return "moving" if rose and top == predicted else "fail"


def check_rows(
    style_profiles: Mapping[str, Any], runs: Sequence[Mapping[str, Any]], min_lead: float = MIN_LEAD
) -> list[dict[str, Any]]:
    """Per run (``{"run", "weights", "start_labels", "final_labels"}``): the prediction from ``style_profiles``, what
    the final evaluation shows and the verdict."""
    rows = []
    for r in runs:
        predicted, ahead = predict_style(style_profiles, r["weights"]), lead(style_profiles, r["weights"])
        observed = observed_style(r["final_labels"], r["start_labels"])
        rows.append(
            {
                "run": r["run"],
                "weights": [float(v) for v in r["weights"]],
                "predicted": predicted,
                "lead": ahead,
                "observed": observed,
                "verdict": verdict(predicted, observed) if ahead >= min_lead else "too close",
            }
        )
    return rows


def format_profiles(style_profiles: Mapping[str, Any], objectives: Sequence[str]) -> list[str]:
    """One line per style: its share of the warm start's samples and its mean reward vector."""
    lines = [f"answer styles at the warm start (mean {' / '.join(objectives)} of the samples of each style):"]
    for s, p in style_profiles.items():
        means = " / ".join(f"{v:.3f}" for v in _means(p))
        lines.append(f"  {s:<5} {p['share']:6.1%} of {p['count']:>5} samples  {means}  ({STYLE_CLASSES[s]})")
    return lines


def format_check(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The table "predicted vs observed" per run, and the overall line."""
    head = [
        "run",
        "weights",
        "predicted (lead)",
        "observed: dominant share [95% CI]",
        "Δ share of predicted",
        "verdict",
    ]
    body = []
    for r in rows:
        obs = r["observed"]
        body.append(
            [
                r["run"],
                "(" + ", ".join(f"{v:.3g}" for v in r["weights"]) + ")",
                f"{r['predicted']} (+{r['lead']:.3f})",
                f"{obs['style']} {CI(**obs['share']).format(signed=False)}",
                CI(**obs["delta_share"][r["predicted"]]).format(),
                r["verdict"],
            ]
        )
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = ["known-answer check: Linear with weights w should move to argmax_s w·E[r | s] (warm-start profiles)"]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *body]]
    decided = [r["verdict"] for r in rows if r["verdict"] != "too close"]
    outcome = "yes" if decided and all(v == "pass" for v in decided) else "no" if decided else "cannot be checked"
    lines.append(
        "pass = the predicted style dominates the final evaluation and its share rose (paired CI over prompts above "
        "0); moving = it rose the most, significantly, but does not dominate yet"
    )
    lines.append(
        f"too close = the predicted style leads the runner-up by less than {MIN_LEAD} (no verdict); the lab passes "
        "when every run with a verdict passes"
    )
    lines.append(f"the lab passes its known-answer check: {outcome}")
    return lines
