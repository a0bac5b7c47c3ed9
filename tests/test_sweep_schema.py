"""The sweep file's schema (dataclasses in mo_align.sweep.spec / axes) and its generic checker
(mo_align.sweep.schema): the keys in their documented order, and one line per mistake, worded as each field says."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from mo_align.sweep import SweepError, load_sweep
from mo_align.sweep.axes import Dirichlet
from mo_align.sweep.schema import is_a, parse
from mo_align.sweep.spec import ALGORITHM_KEYS, KEYS


ROOT = Path(__file__).resolve().parents[1]
ALGORITHM = "keys: weighting, weighting_kwargs, preferences, recipe"


def test_the_keys_are_the_documented_ones_in_order():
    assert KEYS == (
        "recipe",
        "output_dir",
        "preferences",
        "algorithms",
        "seeds",
        "set",
        "overrides",
        "accelerate_config",
        "max_points",
    )
    assert ALGORITHM_KEYS == ("weighting", "weighting_kwargs", "preferences", "recipe")


def test_types_follow_the_annotations():
    assert is_a(3, int) and not is_a(True, int) and not is_a(3.0, int)
    assert is_a(3, float) and is_a(0.5, float) and not is_a(False, float) and not is_a("3", float)
    assert is_a([1, 2], list[int]) and not is_a([1, True], list[int]) and not is_a((1,), list[int])
    assert is_a(None, list[int] | None) and is_a({}, list | dict | None) and not is_a("x", list | dict | None)
    assert is_a(object(), Any) and is_a(True, bool)


def test_a_dirichlet_axis_reads_with_its_defaults_and_names_the_bad_field():
    assert parse(Dirichlet, {"n": 4}, "f.yaml", "p") == Dirichlet(n=4, seed=0, alpha=1.0)
    with pytest.raises(SweepError) as info:
        parse(Dirichlet, {"n": 4, "seed": None}, "f.yaml", "p")
    assert str(info.value) == "f.yaml: p.seed: None: an integer >= 0"  # null is not optional here


def _body(tmp_path: Path, **change) -> str:
    recipe = yaml.safe_load((ROOT / "recipes/tiny/linear.yaml").read_text())
    recipe["model_name_or_path"] = "/nonexistent/model"
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(recipe))
    body = {"recipe": str(tmp_path / "base.yaml"), "output_dir": str(tmp_path / "out"), **change}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(body))
    return str(path)


LONG = "/tmp/" + "r" * 80 + ".yaml"
CASES = [
    ({"recipe": None}, "recipe: required (a path)"),
    ({"output_dir": ""}, "output_dir: required (a path)"),
    ({"zeta": 1, "alpha": 2}, "alpha: unknown key; a sweep file has " + ", ".join(KEYS)),
    ({"algorithms": []}, "algorithms: expected a list of weighting names or a mapping label -> settings"),
    ({"algorithms": {"linear": 3}}, f"algorithms.linear: unknown key(s) 3; {ALGORITHM}"),
    ({"algorithms": {"linear": {"prefs": 1}}}, f"algorithms.linear: unknown key(s) ['prefs']; {ALGORITHM}"),
    ({"algorithms": {"linear": {"weighting_kwargs": 3}}}, "algorithms.linear.weighting_kwargs: expected a mapping"),
    (
        {"algorithms": {"linear": {"preferences": None}}},
        "algorithms.linear.preferences: true, false, or this algorithm's own preference axis",
    ),
    ({"algorithms": {"ctwa": {"recipe": LONG}}}, f"algorithms.ctwa.recipe: {LONG!r}: no such recipe file"),
    ({"seeds": [True]}, "seeds: [True]: a non-empty list of integers"),
    ({"set": [1]}, "set: expected a mapping of recipe field -> value(s)"),
    ({"accelerate_config": 3}, "accelerate_config: 3: a name (cpu, ddp, zero3, ...: see mo-align --help) or a file"),
    ({"max_points": True}, "max_points: True: an integer >= 1"),
    (
        {"preferences": {"dirichlet": 5}},
        "preferences.dirichlet: n (an integer >= 1) is required; keys: n, seed, alpha",
    ),
    (
        {"preferences": {"dirichlet": {"n": 2, "x": 1}}},
        "preferences.dirichlet: unknown key(s) ['x']; keys: n, seed, alpha",
    ),
    # Before: sorting the unknown keys 2 and 'zz' raised TypeError (a traceback); now one line
    ({"algorithms": {"linear": {"zz": 1, 2: 3}}}, f"algorithms.linear: unknown key(s) [2, 'zz']; {ALGORITHM}"),
]


@pytest.mark.parametrize(("change", "line"), CASES, ids=[c[1].split(":")[0] + str(i) for i, c in enumerate(CASES)])
def test_each_mistake_is_the_one_line_its_field_declares(tmp_path, change, line):
    path = _body(tmp_path, **change)
    with pytest.raises(SweepError) as info:
        load_sweep(path, check_recipes=False)
    assert str(info.value) == f"{path}: {line}"


def test_null_means_the_default_where_the_field_is_optional(tmp_path):
    path = _body(tmp_path, algorithms=None, seeds=None, set=None, overrides=None, accelerate_config=None)
    sweep = load_sweep(path, check_recipes=False)
    assert [p.name for p in sweep.points] == ["linear-seed0"] and sweep.accelerate_config is None
