"""The recipe block ``preference_conditioning:``, checked in one line per mistake before anything is loaded.

.. code-block:: yaml

    preference_conditioning:
      sampler: dirichlet          # dirichlet (+ alpha: a number or K numbers), list (+ preferences), grid
      alpha: 1.0                  #   (+ points_per_axis: N, or step: 1/(N-1)): the simplex grid of N points per axis
      template: "Preference: accuracy {accuracy:.2f}, conciseness {conciseness:.2f}, clarity {clarity:.2f}"
      placement: system           # system message (conversational prompts) | prefix (before the prompt's text)
      seed: 0                     # optional: the draws' seed (default: the run's seed)
      eval_preference: [0.4, 0.3, 0.3]   # optional: stated at the run's own evaluations (default: 1/K each)

:func:`parse_block` checks what needs no objective names (the config's ``__post_init__``: the keys, the sampler's
parameters, the template's syntax, the placement, and that the weighting takes a preference per row);
:func:`check_objectives` checks what does (vector lengths, the template's field names) once the objectives are known.
"""

from __future__ import annotations

import math
import string
from typing import Any

from mo_align.simplex import MAX_ALPHA
from mo_align.text import excerpt


SAMPLERS = ("dirichlet", "list", "grid")
PLACEMENTS = ("system", "prefix")
KEYS = (
    "sampler",
    "alpha",
    "preferences",
    "points_per_axis",
    "step",
    "template",
    "placement",
    "seed",
    "eval_preference",
)
SAMPLER_KEYS = {"dirichlet": ("alpha",), "list": ("preferences",), "grid": ("points_per_axis", "step")}
MAX_GRID_STEPS = 100
MAX_TEMPLATE_CHARS = 2000
NAME = "preference_conditioning"


def _fail(where: str, message: str) -> ValueError:
    return ValueError(f"{NAME}.{where}: {message}" if where else f"{NAME}: {message}")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _vector(value: Any, where: str) -> list[float]:
    """A preference: finite numbers >= 0, not all 0 (normalised to sum to 1 by the sampler)."""
    if not isinstance(value, list | tuple) or not value or not all(_number(x) for x in value):
        raise _fail(where, f"{excerpt(value)} is not a list of numbers (one per objective)")
    if any(x < 0 for x in value) or sum(value) <= 0:
        raise _fail(where, f"{excerpt(value)}: entries must be >= 0 and not all 0")
    return [float(x) for x in value]


def refusal(strategy: type) -> str | None:
    """Why the weighting class ``strategy`` cannot be conditioned (one clause), or None when it can."""
    if getattr(strategy, "accepts_row_preferences", False):
        return None
    if strategy.space == "gradient":
        return "it weights per-objective gradients of the whole batch, so a preference per prompt has no place in it"
    return "its weights are its own state, adapted from training statistics, not a preference given per prompt"


def _sampler(raw: dict[str, Any]) -> dict[str, Any]:
    kind = raw.get("sampler", "dirichlet")
    if kind not in SAMPLERS:
        raise _fail("sampler", f"{excerpt(kind)}: one of {', '.join(SAMPLERS)}")
    stray = [k for k in raw if k in sum(SAMPLER_KEYS.values(), ()) and k not in SAMPLER_KEYS[kind]]
    if stray:
        raise _fail(stray[0], f"is not a parameter of sampler {kind!r} (its keys: {', '.join(SAMPLER_KEYS[kind])})")
    if kind == "dirichlet":
        alpha = raw.get("alpha", 1.0)
        values = alpha if isinstance(alpha, list | tuple) else [alpha]
        if not values or not all(_number(a) and 0 < a <= MAX_ALPHA for a in values):
            raise _fail("alpha", f"{excerpt(alpha)}: a number, or one per objective, in (0, {MAX_ALPHA:g}]")
        return {
            "sampler": kind,
            "alpha": [float(a) for a in values] if isinstance(alpha, list | tuple) else float(alpha),
        }
    if kind == "list":
        prefs = raw.get("preferences")
        if not isinstance(prefs, list) or not prefs:
            raise _fail("preferences", f"{excerpt(prefs)}: a non-empty list of preference vectors")
        vectors = [_vector(w, f"preferences[{i}]") for i, w in enumerate(prefs)]
        if len({len(w) for w in vectors}) > 1:
            raise _fail("preferences", "the vectors have different lengths")
        return {"sampler": kind, "preferences": vectors}
    return {"sampler": kind, "points_per_axis": _grid_steps(raw) + 1}


def _grid_steps(raw: dict[str, Any]) -> int:
    """Steps per simplex edge: ``points_per_axis`` N gives N − 1, ``step`` s gives 1 / s (an integer)."""
    if ("points_per_axis" in raw) == ("step" in raw):
        raise _fail("points_per_axis", "sampler grid takes exactly one of points_per_axis (N >= 2) or step (1/(N-1))")
    if "points_per_axis" in raw:
        n = raw["points_per_axis"]
        if not isinstance(n, int) or isinstance(n, bool) or not 2 <= n <= MAX_GRID_STEPS + 1:
            raise _fail("points_per_axis", f"{excerpt(n)}: an integer in [2, {MAX_GRID_STEPS + 1}]")
        return n - 1
    step = raw["step"]
    steps = round(1 / step) if _number(step) and 0 < step <= 1 else 0
    if not 1 <= steps <= MAX_GRID_STEPS or abs(steps * step - 1) > 1e-9:
        raise _fail("step", f"{excerpt(step)}: 1/N for an integer N in [1, {MAX_GRID_STEPS}] (e.g. 0.25)")
    return steps


def _template(raw: dict[str, Any]) -> str:
    template = raw.get("template")
    if not isinstance(template, str) or not template.strip():
        raise _fail("template", "is required: a format string stating the preference, e.g. 'Preference: a {a:.2f}'")
    if len(template) > MAX_TEMPLATE_CHARS:
        raise _fail("template", f"is {len(template):,} characters; at most {MAX_TEMPLATE_CHARS:,}")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise _fail("template", f"{excerpt(template)} is not a format string ({exc})") from None
    if not fields:
        raise _fail("template", f"{excerpt(template)} states no preference: name objectives in braces, e.g. {{a:.2f}}")
    return template


def parse_block(
    raw: dict[str, Any] | None, strategy: type, seed: int, name: str | None = None
) -> dict[str, Any] | None:
    """The normalised block (a plain, JSON-ready dict) or None when there is none; ``strategy`` is the weighting's
    class (refused when it cannot take a preference per row; ``name`` the recipe's, default the class's key) and
    ``seed`` the run's (the draws' default seed)."""
    if not raw:
        return None
    unknown = [str(k) for k in raw if k not in KEYS]
    if unknown:
        raise _fail("", f"unknown key(s) {', '.join(map(repr, unknown[:3]))}; keys: {', '.join(KEYS)}")
    why = refusal(strategy)
    if why:
        raise _fail(
            "",
            f"weighting {name or strategy.name!r} cannot be preference-conditioned: {why} (use linear, "
            "tchebycheff or smooth_tchebycheff)",
        )
    spec = _sampler(raw)
    spec["template"] = _template(raw)
    placement = raw.get("placement", "system")
    if placement not in PLACEMENTS:
        raise _fail("placement", f"{excerpt(placement)}: system (a system message) or prefix (before the prompt)")
    spec["placement"] = placement
    spec["seed"] = raw.get("seed", seed)
    if not isinstance(spec["seed"], int) or isinstance(spec["seed"], bool) or not 0 <= spec["seed"] < 2**32:
        raise _fail("seed", f"{excerpt(spec['seed'])}: an integer in [0, 2**32 - 1]")
    eval_preference = raw.get("eval_preference")
    spec["eval_preference"] = None if eval_preference is None else _vector(eval_preference, "eval_preference")
    return spec


def render(template: str, names: tuple[str, ...] | list[str], weights: list[float]) -> str:
    """The preference statement: ``template`` with each objective's weight by name (``{accuracy:.2f}``) or by
    position (``{0:.2f}``)."""
    return template.format(*weights, **dict(zip(names, weights, strict=True)))


def check_objectives(spec: dict[str, Any], names: tuple[str, ...] | list[str]) -> None:
    """What needs the objectives: every vector has K entries, the template names objectives (or positions < K)."""
    k = len(names)
    vectors = {"alpha": spec.get("alpha") if isinstance(spec.get("alpha"), list) else None}
    vectors["eval_preference"] = spec.get("eval_preference")
    vectors.update({f"preferences[{i}]": w for i, w in enumerate(spec.get("preferences") or [])})
    for where, vector in vectors.items():
        if vector is not None and len(vector) != k:
            raise _fail(where, f"has {len(vector)} entries but there are {k} objectives ({', '.join(names)})")
    try:
        render(spec["template"], names, [1.0 / k] * k)
    except (KeyError, IndexError) as exc:
        raise _fail(
            "template", f"field {{{exc.args[0]}}} names no objective; the objectives: {', '.join(names)}"
        ) from None
    except (ValueError, TypeError, AttributeError) as exc:
        raise _fail("template", f"{excerpt(spec['template'])} cannot state a weight ({exc})") from None
