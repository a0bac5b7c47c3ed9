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
    accelerate_config: ddp                # what --print-commands launches with (cpu, ddp, zero3 or a file;
                                          # omitted: cpu for a point whose recipe has use_cpu: true, else ddp)
    max_points: 10000                     # the most points a sweep may have (default 10,000)

A **preference** w on the simplex Δ^{K-1} (K = the recipe's objectives) goes to the field of each weighting that
takes one — ``preference`` (smooth Tchebycheff), ``pref_vector`` (TorchJD's UPGrad / DualProj) or ``weights``
(linear, Tchebycheff, CTWA's initial weights, Dynamic's) — found by asking ``get_weighting`` which it accepts. A
weighting with none (MGDA, PAMA, ...) or with ``preferences: false`` runs once per seed and ``set`` value.
``grid: N`` is every w = i / N with i ∈ ℕ^K, Σ_k i_k = N (C(N + K − 1, K − 1) points: N = 1 gives the K vertices,
the single-objective runs); ``dirichlet`` draws n points from Dir(alpha·1) with numpy's ``default_rng(seed)``,
rounded to 4 decimals. Every point is one run named ``<label>[-w<w_1>_..._<w_K>][-<field>=<value>...]-seed<s>``
(the report groups seeds by stripping ``-seed<s>``); a name longer than ``MAX_NAME_CHARS`` keeps its first
characters and a short hash of the whole (``-h<8 hex>``) before ``-seed<s>``, so every directory and log name fits
the file system. Points are counted before any is built: more than ``max_points`` is an error naming the count.
Every point is validated before anything runs: its weighting with its own kwargs, and its whole recipe through
``mo_align.train``'s own parser — once per distinct recipe, where recipes differing only in the point's name,
place, seed and preference vector count as one (those are checked on their own).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import yaml

from mo_align.recipe import RecipeError, check_fields, check_recipe
from mo_align.sweep.axes import Axis, SweepError
from mo_align.sweep.axes import fail as _fail
from mo_align.sweep.axes import preference_axis as _preference_axis
from mo_align.sweep.axes import simplex_grid as simplex_grid  # re-exported: mo_align.sweep, mo_align.soup
from mo_align.sweep.schema import checked, parse
from mo_align.text import excerpt
from mo_align.weightings import get_weighting


MAX_POINTS = 10_000  # default cap on a sweep's points (the sweep file's max_points raises it)
ACCELERATE_CONFIG = "a name (cpu, ddp, zero3, ...: see mo-align --help) or a file"
MAPPING = "expected a mapping of recipe field -> value(s)"
ALGORITHMS = "expected a list of weighting names or a mapping label -> settings"
OWN_PREFERENCES = "true, false, or this algorithm's own preference axis"


@dataclass
class SweepFile:
    """The sweep file's keys (the module's docstring) as read; the rest is checked against the base recipe."""

    UNKNOWN: ClassVar[tuple[str, str]] = ("{key}", "unknown key; a sweep file has {keys}")

    recipe: str = checked("required (a path)", bool, None)
    output_dir: str = checked("required (a path)", bool, None)
    preferences: Any = None  # checked by mo_align.sweep.axes.preference_axis
    algorithms: list | dict | None = checked(ALGORITHMS, bool, None, default=None)
    seeds: list[int] | None = checked("a non-empty list of integers", bool, default=None)
    set: dict | None = checked(MAPPING, show=None, default=None)
    overrides: dict | None = checked(MAPPING, show=None, default=None)
    accelerate_config: str | None = checked(ACCELERATE_CONFIG, default=None)
    max_points: int = checked("an integer >= 1", lambda n: n >= 1, default=MAX_POINTS)


@dataclass
class AlgorithmSpec:
    """``algorithms: {label: {...}}``: a weighting (default: the label, or its own recipe's), kwargs over its base
    recipe's, its preference axis (``true``: the sweep's; ``false``: none; or its own) and its own base recipe."""

    UNKNOWN: ClassVar[tuple[str, str]] = ("{where}", "unknown key(s) {bad}; keys: {keys}")
    NOT_MAPPING: ClassVar[str] = "unknown key(s) {value}; keys: {keys}"

    weighting: Any = None  # checked when built (mo_align.weightings.get_weighting)
    weighting_kwargs: Any = checked("expected a mapping", lambda v: isinstance(v, dict) or not v, None, default=None)
    preferences: Any = checked(OWN_PREFERENCES, lambda v: v is not None, None, default=True)
    recipe: str | None = checked("no such recipe file", os.path.isfile, repr, default=None)


KEYS = tuple(f.name for f in fields(SweepFile))
ALGORITHM_KEYS = tuple(f.name for f in fields(AlgorithmSpec))
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
MAX_NAME_CHARS = 120  # a point's name before -seed<s>; longer ones are cut and end in a hash of the whole
IDENTITY_FIELDS = ("output_dir", "run_name", "mo_run_label", "seed")  # per point; the recipe check skips them
SEED_LIMIT = 2**32  # numpy's seed range (transformers.set_seed seeds numpy)


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
    preference_field: str | None = None  # the weighting kwarg that holds ``preference``


@dataclass
class Sweep:
    path: str
    recipe_path: str
    recipe: dict[str, Any]
    output_dir: str
    points: list[Point]
    overrides: dict[str, Any]
    accelerate_config: str | None  # None: not named (cpu for a use_cpu point, else ddp)
    notes: list[str] = field(default_factory=list)
    algorithm_recipes: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # label -> (path, recipe)

    def base_recipe(self, point: Point) -> tuple[str, dict[str, Any]]:
        """(path, recipe) a point starts from: its algorithm's own ``recipe``, else the sweep's."""
        return self.algorithm_recipes.get(point.label, (self.recipe_path, self.recipe))

    def point_dir(self, point: Point) -> str:
        return os.path.join(self.output_dir, point.name)


def _own_recipe(own: str | None, recipe: dict[str, Any], path: str, where: str) -> tuple[str, dict] | None:
    """An algorithm's own base recipe (``recipe: FILE``), read and checked to score the sweep's objectives."""
    if own is None:
        return None
    body = _read(own)
    if not isinstance(body, dict) or body.get("reward_funcs") != recipe.get("reward_funcs"):
        got = body.get("reward_funcs") if isinstance(body, dict) else None
        raise _fail(path, f"{where}.recipe", f"{own} scores {got}, the sweep's recipe {recipe.get('reward_funcs')}")
    return own, body


def _algorithms(raw: list | dict | None, recipe: dict[str, Any], path: str) -> dict[str, dict[str, Any]]:
    """label -> {"weighting", "weighting_kwargs", "preferences", "recipe"}; an algorithm whose weighting is its base
    recipe's (the sweep's, or its own ``recipe``) keeps that recipe's kwargs."""
    labels = (
        dict.fromkeys(raw if raw is not None else [recipe.get("weighting", "linear")])
        if not isinstance(raw, dict)
        else raw
    )
    out = {}
    for label, spec in labels.items():
        algo = parse(AlgorithmSpec, {} if spec is None else spec, path, f"algorithms.{label}")
        own = _own_recipe(algo.recipe, recipe, path, f"algorithms.{label}")
        base_recipe = recipe if own is None else own[1]
        name = algo.weighting if algo.weighting is not None else base_recipe.get("weighting", label) if own else label
        base = dict(base_recipe.get("weighting_kwargs") or {}) if name == base_recipe.get("weighting") else {}
        kwargs = {**base, **(algo.weighting_kwargs or {})}
        out[str(label)] = {
            "weighting": name,
            "weighting_kwargs": kwargs,
            "recipe": own,
            "preferences": algo.preferences,
        }
    return out


def preference_field(name: str, k: int, kwargs: dict[str, Any]) -> str | None:
    """The kwarg through which weighting ``name`` takes a preference vector, or None."""
    for candidate in PREFERENCE_FIELDS:
        try:
            get_weighting(name, k, **{**kwargs, candidate: [1.0 / k] * k})
        except TypeError:
            continue
        except ValueError:
            return candidate  # accepted the key; a bad other value is reported when the point is checked
        return candidate
    return None


def _axis_values(raw: dict | None, path: str, key: str) -> dict[str, Any]:
    """``set`` (field -> its values) or ``overrides`` (field -> value): recipe fields, each value of its type."""
    from mo_align.train import make_parser  # lazy: TRL, transformers, datasets (see load_sweep)

    if not raw:
        return {}
    types = make_parser().dataclass_types
    known = {f.name for dc in types for f in dc.__dataclass_fields__.values()}
    for name, value in raw.items():
        if name in RESERVED:
            raise _fail(path, f"{key}.{name}", f"not settable here: {RESERVED[name]}")
        if name not in known:
            raise _fail(path, f"{key}.{name}", "not a recipe field (mo_align.train's parser has no such argument)")
        if key == "set" and (not isinstance(value, list) or not value):
            raise _fail(path, f"set.{name}", f"{excerpt(value)}: a non-empty list of values (one point each)")
        for i, one in enumerate(value if key == "set" else [value]):
            try:
                check_fields(path, {name: one}, types)
            except RecipeError as exc:
                where = f"set.{name}[{i}]" if key == "set" else f"{key}.{name}"
                raise _fail(path, where, str(exc).split(": ", 1)[1]) from None
    return dict(raw)


def _slug(value: Any) -> str:
    text = format(value, "g") if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", text)


def point_name(label: str, preference: list[float] | None, values: dict[str, Any], seed: int) -> str:
    """``<label>[-w<w_1>_..._<w_K>][-<field>=<value>...]-seed<s>``; beyond ``MAX_NAME_CHARS`` before ``-seed<s>``
    the name is cut and ends in ``-h`` and 8 hex digits of the whole name's SHA-256 (the seeds of one setting share
    it)."""
    parts = [_slug(label)]
    if preference is not None:
        parts.append("w" + "_".join(_slug(x) for x in preference))
    parts += [f"{_slug(k)}={_slug(v)}" for k, v in values.items()]
    body = "-".join(parts)
    if len(body) > MAX_NAME_CHARS:
        digest = hashlib.sha256(body.encode()).hexdigest()[:8]
        body = f"{body[: MAX_NAME_CHARS - 10]}-h{digest}"
    return f"{body}-seed{seed}"


def _read(path: str, dataclass_types: Any = None) -> dict[str, Any]:
    try:
        check_recipe(path, dataclass_types)  # size, aliases, tags, syntax: the recipe rules hold for sweep files too
    except RecipeError as exc:
        raise SweepError(str(exc).replace("a recipe must be", "a sweep file must be")) from None
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _seeds(seeds: list[int] | None, recipe: dict[str, Any], path: str) -> list[int]:
    seeds = [recipe.get("seed", 42)] if seeds is None else seeds  # the recipe's seed: an integer (its type check)
    if not all(0 <= s < SEED_LIMIT for s in seeds):
        raise _fail(path, "seeds", f"{excerpt(seeds)}: each in [0, 2**32 - 1] (numpy's seed range)")
    if len(set(seeds)) != len(seeds):
        raise _fail(path, "seeds", f"{seeds}: a seed is repeated")
    return seeds


def _plan(sweep: Sweep, spec: SweepFile, k: int) -> list[tuple[str, dict[str, Any], Axis | None, str | None]]:
    """(label, algorithm, its preference axis or None, the kwarg taking the preference) for every algorithm, each
    weighting checked with its own kwargs."""
    path = sweep.path
    shared = _preference_axis(spec.preferences, k, path)
    plan = []
    for label, algo in _algorithms(spec.algorithms, sweep.recipe, path).items():
        where = f"algorithms.{label}"
        if algo["recipe"] is not None:
            sweep.algorithm_recipes[label] = algo["recipe"]
        try:
            get_weighting(algo["weighting"], k, **algo["weighting_kwargs"])
        except (TypeError, ValueError) as exc:
            raise _fail(path, where, str(exc)) from None
        own = algo["preferences"]
        mine = shared if isinstance(own, bool) else _preference_axis(own, k, f"{path}: {where}")
        mine = mine if mine and mine[0] > 0 else None
        pref_field = preference_field(algo["weighting"], k, algo["weighting_kwargs"]) if mine else None
        if mine and (pref_field is None or own is False):
            why = "preferences: false" if pref_field else "it takes no preference vector"
            sweep.notes.append(f"{label}: one point per seed and set value ({why})")
        plan.append((label, algo, mine if pref_field and own is not False else None, pref_field))
    return plan


def _expand(sweep: Sweep, spec: SweepFile, k: int) -> None:
    """Every point: algorithm × preference (where the weighting takes one) × set values × seed; counted first."""
    path = sweep.path
    plan = _plan(sweep, spec, k)
    axes = _axis_values(spec.set, path, "set")
    seeds = _seeds(spec.seeds, sweep.recipe, path)
    per_preference = math.prod(len(v) for v in axes.values()) * len(seeds)
    total = sum((axis[0] if axis else 1) * per_preference for _, _, axis, _ in plan)
    if total > spec.max_points:
        raise _fail(
            path,
            "axes",
            f"{total:,} points (algorithms x preferences x set values x seeds); a sweep has at most "
            f"{spec.max_points:,} (max_points: N in the sweep file raises the cap)",
        )
    built: dict[int, list[list[float]]] = {}  # an axis shared by several algorithms is built once
    for label, algo, axis, pref_field in plan:
        prefs = built.setdefault(id(axis), axis[1]()) if axis else [None]
        for pref, values, seed in itertools.product(prefs, itertools.product(*axes.values()), seeds):
            values = dict(zip(axes, values))
            kwargs = dict(algo["weighting_kwargs"])
            if pref is not None:
                kwargs[pref_field] = list(pref)
            name = point_name(label, pref, values, seed)
            field_name = pref_field if pref is not None else None
            sweep.points.append(Point(name, label, algo["weighting"], kwargs, seed, pref, values, field_name))
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


def _recipe_key(recipe: dict[str, Any], point: Point) -> str:
    """What the recipe check depends on: the recipe less the point's name, place, seed and preference vector."""
    generic = {key: value for key, value in recipe.items() if key not in IDENTITY_FIELDS}
    if point.preference_field is not None:
        kwargs = dict(generic["weighting_kwargs"])
        kwargs.pop(point.preference_field)
        generic["weighting_kwargs"] = kwargs
    return json.dumps(generic, sort_keys=True, default=repr)


def _check_recipes(sweep: Sweep, k: int) -> None:
    """Every point's recipe through mo_align.train's own parser (GRPOConfig's checks included), nothing run: once
    per distinct recipe (:func:`_recipe_key`); each distinct weighting setting (a preference vector included) is
    built on its own, which is what the recipe check does with it."""
    from mo_align.train import parse_args  # lazy: TRL, transformers, datasets (see load_sweep)

    checked: set[str] = set()
    weightings: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="mo-align-sweep-") as tmp:
        file = os.path.join(tmp, "recipe.yaml")
        for point in sweep.points:
            setting = json.dumps([point.weighting, point.weighting_kwargs], sort_keys=True, default=repr)
            try:
                if setting not in weightings:
                    weightings.add(setting)
                    get_weighting(point.weighting, k, **point.weighting_kwargs)
                recipe = point_recipe(sweep, point)
                key = _recipe_key(recipe, point)
                if key in checked:
                    continue
                checked.add(key)
                with open(file, "w", encoding="utf-8") as f:
                    yaml.safe_dump(recipe, f, sort_keys=False)
                parse_args(["--config", file])
            except (ValueError, TypeError, SystemExit) as exc:
                why = " ".join(str(exc).replace(file, "its recipe").split()) or "rejected by the recipe parser"
                raise _fail(sweep.path, f"point {point.name}", why) from None


def load_sweep(path: str, check_recipes: bool = True) -> Sweep:
    """Read and validate a sweep file and list its points (a :class:`SweepError` names the file and field)."""
    # lazy: mo_align.train (TRL, transformers, datasets) loads when a sweep file is read, which `mo-align sweep` does
    # with stdout sent to stderr, so that no library's import banner reaches a --print-commands file
    from mo_align.train import make_parser

    spec = parse(SweepFile, _read(path), path)
    if not os.path.isfile(spec.recipe):
        raise _fail(path, "recipe", f"{spec.recipe}: no such file")
    recipe = _read(spec.recipe, make_parser().dataclass_types)  # unknown keys, value types: naming its line
    objectives = recipe.get("reward_funcs")
    if not isinstance(objectives, list) or not objectives:
        raise _fail(path, "recipe", f"{spec.recipe} names no reward_funcs (the objectives)")
    overrides = _axis_values(spec.overrides, path, "overrides")
    sweep = Sweep(path, spec.recipe, recipe, spec.output_dir, [], overrides, spec.accelerate_config)
    roles = recipe.get("objective_roles") if isinstance(recipe.get("objective_roles"), dict) else {}
    k = sum(roles.get(str(o).rsplit(".", 1)[-1], "train") == "train" for o in objectives)  # weights: train ones
    _expand(sweep, spec, k)
    if check_recipes:
        _check_recipes(sweep, k)
    return sweep
