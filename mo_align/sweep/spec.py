"""The sweep file: a base recipe, the axes of a grid of ordinary runs, and where they go (validated in one pass).

A sweep file is a YAML mapping with these keys (anything else is an error naming it)::

    recipe: recipes/tiny/linear.yaml      # the base recipe (required); every point is this recipe plus its values
    output_dir: outputs/sweeps/tiny       # where the points' output_dirs go (required)
    preferences: {grid: 2}                # N steps per simplex edge, or {dirichlet: {n: M, seed: S, alpha: 1.0}},
                                          # or an explicit list of K-vectors; omitted: no preference axis
    algorithms: [linear, ctwa]            # weighting names, or label -> {weighting, weighting_kwargs, preferences,
                                          # recipe} (an algorithm's own `preferences`: false, or its own grid /
                                          # list; its own base `recipe`, e.g. recipes/tiny/ctwa.yaml)
    seeds: [0, 1]                         # default: the recipe's seed
    set: {learning_rate: [5.0e-4, 1.0e-3]}  # any recipe field -> the values it takes (an axis each)
    overrides: {save_strategy: steps, save_steps: 2}  # fixed recipe values for every point (not an axis)
    accelerate_config: ddp                # what --print-commands launches with (cpu, ddp, zero3 or a file)

A **preference** w on the simplex Δ^{K-1} (K = the recipe's objectives) goes to the field of each weighting that
takes one — ``preference`` (smooth Tchebycheff), ``pref_vector`` (TorchJD's UPGrad / DualProj) or ``weights``
(linear, Tchebycheff, CTWA's initial weights, Dynamic's) — found by asking ``get_weighting`` which it accepts. A
weighting with none (MGDA, PAMA, ...) or with ``preferences: false`` runs once per seed and ``set`` value.
``grid: N`` is every w = i / N with i ∈ ℕ^K, Σ_k i_k = N (C(N + K − 1, K − 1) points: N = 1 gives the K vertices,
the single-objective runs); ``dirichlet`` draws n points from Dir(alpha·1) with numpy's ``default_rng(seed)``,
rounded to 4 decimals. Every point is one run named ``<label>[-w<w_1>_..._<w_K>][-<field>=<value>...]-seed<s>``
(the report groups seeds by stripping ``-seed<s>``), validated — weighting kwargs and the whole recipe through
``mo_align.train``'s own parser — before anything runs.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Any

import yaml


KEYS = ("recipe", "output_dir", "preferences", "algorithms", "seeds", "set", "overrides", "accelerate_config")
ALGORITHM_KEYS = ("weighting", "weighting_kwargs", "preferences", "recipe")
PREFERENCE_FIELDS = ("preference", "pref_vector", "weights")  # the first one a weighting accepts
RESERVED = {
    "output_dir": "the sweep's output_dir places every point",
    "seed": "use the sweep's seeds",
    "weighting": "use the sweep's algorithms",
    "weighting_kwargs": "use the sweep's algorithms (label: {weighting_kwargs: ...})",
    "run_name": "each point is named after its values",
    "mo_run_label": "each point is labelled with its algorithm",
    "resume_from_checkpoint": "the sweep resumes every point from its newest complete checkpoint",
}
MAX_POINTS = 10_000


class SweepError(ValueError):
    """A sweep file that cannot run (one line naming the file and the field)."""


@dataclass
class Point:
    """One run of the sweep: its name (= output_dir's basename) and the recipe values it changes."""

    name: str
    label: str
    weighting: str
    weighting_kwargs: dict[str, Any]
    seed: int
    preference: list[float] | None = None
    values: dict[str, Any] = field(default_factory=dict)  # the `set` fields of this point


@dataclass
class Sweep:
    path: str
    recipe_path: str
    recipe: dict[str, Any]
    output_dir: str
    points: list[Point]
    overrides: dict[str, Any]
    accelerate_config: str
    notes: list[str] = field(default_factory=list)
    algorithm_recipes: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # label -> (path, recipe)

    def base_recipe(self, point: Point) -> tuple[str, dict[str, Any]]:
        """(path, recipe) a point starts from: its algorithm's own ``recipe``, else the sweep's."""
        return self.algorithm_recipes.get(point.label, (self.recipe_path, self.recipe))

    def point_dir(self, point: Point) -> str:
        return os.path.join(self.output_dir, point.name)


def simplex_grid(k: int, steps: int) -> list[list[float]]:
    """Every w = i / steps with non-negative integers i summing to steps, vertices first in lexicographic order."""
    out = []
    for cut in itertools.combinations(range(steps + k - 1), k - 1):  # stars and bars
        bounds = (-1, *cut, steps + k - 1)
        counts = [bounds[j + 1] - bounds[j] - 1 for j in range(k)]
        out.append([round(c / steps, 4) for c in counts])
    return sorted(out, reverse=True)


def dirichlet_points(k: int, n: int, seed: int, alpha: float = 1.0) -> list[list[float]]:
    import numpy as np

    draws = np.random.default_rng(seed).dirichlet([alpha] * k, size=n)
    return [[round(float(x), 4) for x in row] for row in draws]


def _fail(path: str, where: str, message: str) -> SweepError:
    return SweepError(f"{path}: {where}: {message}")


def _preferences(raw: Any, k: int, path: str) -> list[list[float]] | None:
    if raw is None:
        return None
    if isinstance(raw, list):
        prefs = []
        for i, w in enumerate(raw):
            ok = isinstance(w, list) and all(isinstance(x, int | float) and not isinstance(x, bool) for x in w)
            if not ok or len(w) != k:
                raise _fail(path, f"preferences[{i}]", f"{w!r} is not a list of {k} numbers (one per objective)")
            if any(x < 0 or not math.isfinite(x) for x in w) or sum(w) <= 0:
                raise _fail(path, f"preferences[{i}]", f"{w!r}: entries must be finite, >= 0, and not all 0")
            prefs.append([float(x) for x in w])
        return prefs
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in ("grid", "dirichlet"):
        raise _fail(path, "preferences", "expected {grid: N}, {dirichlet: {n: M, seed: S}} or a list of vectors")
    if "grid" in raw:
        steps = raw["grid"]
        if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= 100:
            raise _fail(path, "preferences.grid", f"{steps!r}: an integer number of steps in [1, 100]")
        return simplex_grid(k, steps)
    spec = raw["dirichlet"]
    unknown = sorted(set(spec) - {"n", "seed", "alpha"}) if isinstance(spec, dict) else None
    if unknown is None or unknown or not isinstance(spec.get("n"), int) or spec["n"] < 1:
        why = f"unknown key(s) {unknown}" if unknown else "n (>= 1) is required"
        raise _fail(path, "preferences.dirichlet", f"{why}; keys: n, seed, alpha")
    alpha = spec.get("alpha", 1.0)
    if not isinstance(alpha, int | float) or not alpha > 0:
        raise _fail(path, "preferences.dirichlet.alpha", f"{alpha!r}: a number > 0")
    return dirichlet_points(k, spec["n"], int(spec.get("seed", 0)), float(alpha))


def _own_recipe(spec: dict[str, Any], recipe: dict[str, Any], path: str, where: str) -> tuple[str, dict] | None:
    """An algorithm's own base recipe (``recipe: FILE``), read and checked to score the sweep's objectives."""
    own = spec.get("recipe")
    if own is None:
        return None
    if not isinstance(own, str) or not os.path.isfile(own):
        raise _fail(path, f"{where}.recipe", f"{own!r}: no such recipe file")
    body = _read(own)
    if not isinstance(body, dict) or body.get("reward_funcs") != recipe.get("reward_funcs"):
        got = body.get("reward_funcs") if isinstance(body, dict) else None
        raise _fail(path, f"{where}.recipe", f"{own} scores {got}, the sweep's recipe {recipe.get('reward_funcs')}")
    return own, body


def _algorithms(raw: Any, recipe: dict[str, Any], path: str) -> dict[str, dict[str, Any]]:
    """label -> {"weighting", "weighting_kwargs", "preferences", "recipe"}; an algorithm whose weighting is its base
    recipe's (the sweep's, or its own ``recipe``) keeps that recipe's kwargs."""
    if raw is None:
        raw = [recipe.get("weighting", "linear")]
    if isinstance(raw, list):
        raw = dict.fromkeys(raw)
    if not isinstance(raw, dict) or not raw:
        raise _fail(path, "algorithms", "expected a list of weighting names or a mapping label -> settings")
    out = {}
    for label, spec in raw.items():
        spec = {} if spec is None else spec
        if not isinstance(spec, dict) or set(spec) - set(ALGORITHM_KEYS):
            bad = sorted(set(spec) - set(ALGORITHM_KEYS)) if isinstance(spec, dict) else spec
            raise _fail(path, f"algorithms.{label}", f"unknown key(s) {bad}; keys: {', '.join(ALGORITHM_KEYS)}")
        own = _own_recipe(spec, recipe, path, f"algorithms.{label}")
        base_recipe = recipe if own is None else own[1]
        name = spec.get("weighting", label if own is None else base_recipe.get("weighting", label))
        base = dict(base_recipe.get("weighting_kwargs") or {}) if name == base_recipe.get("weighting") else {}
        kwargs = spec.get("weighting_kwargs") or {}
        if not isinstance(kwargs, dict):
            raise _fail(path, f"algorithms.{label}.weighting_kwargs", "expected a mapping")
        out[str(label)] = {"weighting": name, "weighting_kwargs": {**base, **kwargs}, "recipe": own}
        own_prefs = spec.get("preferences", True)
        if own_prefs is None:
            raise _fail(
                path, f"algorithms.{label}.preferences", "true, false, or this algorithm's own preference axis"
            )
        out[str(label)]["preferences"] = own_prefs
    return out


def preference_field(name: str, k: int, kwargs: dict[str, Any]) -> str | None:
    """The kwarg through which weighting ``name`` takes a preference vector, or None."""
    from mo_align.weightings import get_weighting

    for candidate in PREFERENCE_FIELDS:
        try:
            get_weighting(name, k, **{**kwargs, candidate: [1.0 / k] * k})
        except TypeError:
            continue
        except ValueError:
            return candidate  # accepted the key; a bad other value is reported when the point is checked
        return candidate
    return None


def _axis_values(raw: Any, path: str, key: str) -> dict[str, Any]:
    from mo_align.train import make_parser

    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _fail(path, key, "expected a mapping of recipe field -> value(s)")
    known = {f.name for dc in make_parser().dataclass_types for f in dc.__dataclass_fields__.values()}
    for name, value in raw.items():
        if name in RESERVED:
            raise _fail(path, f"{key}.{name}", f"not settable here: {RESERVED[name]}")
        if name not in known:
            raise _fail(path, f"{key}.{name}", "not a recipe field (mo_align.train's parser has no such argument)")
        if key == "set" and (not isinstance(value, list) or not value):
            raise _fail(path, f"set.{name}", f"{value!r}: a non-empty list of values (one point each)")
    return dict(raw)


def _slug(value: Any) -> str:
    text = format(value, "g") if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", text)


def point_name(label: str, preference: list[float] | None, values: dict[str, Any], seed: int) -> str:
    parts = [_slug(label)]
    if preference is not None:
        parts.append("w" + "_".join(_slug(x) for x in preference))
    parts += [f"{_slug(k)}={_slug(v)}" for k, v in values.items()]
    return "-".join([*parts, f"seed{seed}"])


def _read(path: str) -> dict[str, Any]:
    from mo_align.recipe import RecipeError, check_recipe

    try:
        check_recipe(path)  # size, aliases, tags, syntax: the recipe rules hold for sweep files too
    except RecipeError as exc:
        raise SweepError(str(exc).replace("a recipe must be", "a sweep file must be")) from None
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _seeds(raw: Any, recipe: dict[str, Any], path: str) -> list[int]:
    seeds = [recipe.get("seed", 42)] if raw is None else raw
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise _fail(path, "seeds", f"{raw!r}: a non-empty list of integers")
    if len(set(seeds)) != len(seeds):
        raise _fail(path, "seeds", f"{seeds}: a seed is repeated")
    return seeds


def _expand(sweep: Sweep, raw: dict[str, Any], k: int) -> None:
    """Every point: algorithm × preference (where the weighting takes one) × set values × seed."""
    from mo_align.weightings import get_weighting

    path = sweep.path
    prefs = _preferences(raw.get("preferences"), k, path)
    axes = _axis_values(raw.get("set"), path, "set")
    seeds = _seeds(raw.get("seeds"), sweep.recipe, path)
    combos = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    for label, algo in _algorithms(raw.get("algorithms"), sweep.recipe, path).items():
        where = f"algorithms.{label}"
        if algo["recipe"] is not None:
            sweep.algorithm_recipes[label] = algo["recipe"]
        try:
            get_weighting(algo["weighting"], k, **algo["weighting_kwargs"])
        except (TypeError, ValueError) as exc:
            raise _fail(path, where, str(exc)) from None
        own = algo["preferences"]
        mine = prefs if isinstance(own, bool) else _preferences(own, k, f"{path}: {where}")
        pref_field = preference_field(algo["weighting"], k, algo["weighting_kwargs"]) if mine else None
        if mine and (pref_field is None or own is False):
            why = "preferences: false" if pref_field else "it takes no preference vector"
            sweep.notes.append(f"{label}: one point per seed and set value ({why})")
        use = mine if pref_field and own is not False else [None]
        for pref, values, seed in itertools.product(use, combos, seeds):
            kwargs = dict(algo["weighting_kwargs"])
            if pref is not None:
                kwargs[pref_field] = list(pref)
            name = point_name(label, pref, values, seed)
            sweep.points.append(Point(name, label, algo["weighting"], kwargs, seed, pref, values))
            if len(sweep.points) > MAX_POINTS:
                raise _fail(path, "axes", f"more than {MAX_POINTS:,} points")
    names = [p.name for p in sweep.points]
    if len(set(names)) != len(names):
        raise _fail(path, "axes", "two points have the same name (a value repeated on an axis?)")


def point_recipe(sweep: Sweep, point: Point) -> dict[str, Any]:
    """The point's whole recipe: its base recipe (its algorithm's own, else the sweep's), the overrides, the point's
    values, its name and place."""
    recipe = {**sweep.base_recipe(point)[1], **sweep.overrides, **point.values}
    recipe.update(
        output_dir=sweep.point_dir(point),
        run_name=point.name,
        mo_run_label=point.label,
        seed=point.seed,
        weighting=point.weighting,
        weighting_kwargs=point.weighting_kwargs,
    )
    return recipe


def _check_recipes(sweep: Sweep) -> None:
    """Every point's recipe through mo_align.train's own parser (GRPOConfig's checks included), nothing run."""
    from mo_align.train import parse_args

    with tempfile.TemporaryDirectory(prefix="mo-align-sweep-") as tmp:
        file = os.path.join(tmp, "recipe.yaml")
        for point in sweep.points:
            with open(file, "w", encoding="utf-8") as f:
                yaml.safe_dump(point_recipe(sweep, point), f, sort_keys=False)
            try:
                parse_args(["--config", file])
            except (ValueError, TypeError, SystemExit) as exc:
                why = " ".join(str(exc).split()) or "rejected by the recipe parser"
                raise _fail(sweep.path, f"point {point.name}", why) from None


def load_sweep(path: str, check_recipes: bool = True) -> Sweep:
    """Read and validate a sweep file and list its points (a :class:`SweepError` names the file and field)."""
    raw = _read(path)
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise _fail(path, unknown[0], f"unknown key; a sweep file has {', '.join(KEYS)}")
    for key in ("recipe", "output_dir"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise _fail(path, key, "required (a path)")
    if not os.path.isfile(raw["recipe"]):
        raise _fail(path, "recipe", f"{raw['recipe']}: no such file")
    recipe = _read(raw["recipe"])
    objectives = recipe.get("reward_funcs")
    if not isinstance(objectives, list) or not objectives:
        raise _fail(path, "recipe", f"{raw['recipe']} names no reward_funcs (the objectives)")
    overrides = _axis_values(raw.get("overrides"), path, "overrides")
    accelerate = raw.get("accelerate_config", "ddp")
    if not isinstance(accelerate, str):
        raise _fail(
            path, "accelerate_config", f"{accelerate!r}: a name (cpu, ddp, zero3, ...: see mo-align --help) or a file"
        )
    sweep = Sweep(path, raw["recipe"], recipe, raw["output_dir"], [], overrides, accelerate)
    _expand(sweep, raw, len(objectives))
    if check_recipes:
        _check_recipes(sweep)
    return sweep
