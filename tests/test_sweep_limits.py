"""mo-align sweep on large or odd sweep files: points counted before any is built (a cap naming the count), each
distinct recipe validated once, Dirichlet seed and alpha checked, point names capped; one line each."""

from pathlib import Path

import pytest
import yaml

import mo_align.sweep.axes
import mo_align.sweep.spec
import mo_align.train
from mo_align.sweep import SweepError, load_sweep, main


ROOT = Path(__file__).resolve().parents[1]


def _files(tmp_path: Path, body: dict, **recipe_changes) -> str:
    """A sweep file over the tiny linear recipe (its model a path that is never loaded here)."""
    recipe = yaml.safe_load((ROOT / "recipes/tiny/linear.yaml").read_text())
    recipe.update(model_name_or_path="/nonexistent/model", **recipe_changes)
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(recipe))
    body = {"recipe": str(tmp_path / "base.yaml"), "output_dir": str(tmp_path / "out"), **body}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(body))
    return str(path)


def _one_line(path: str, capsys) -> str:
    assert main([path]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("mo-align: error: "), err
    return err[0].removeprefix("mo-align: error: ")


def test_ten_thousand_points_validate_each_distinct_recipe_once(tmp_path, monkeypatch):
    """Before: every point went through the recipe parser (10,000 parses, 347 s). Points that differ only in name,
    place, seed and preference vector share one recipe check; here the two learning rates are the distinct ones."""
    calls = []
    parse_args = mo_align.train.parse_args

    def counting(argv):
        calls.append(yaml.safe_load(Path(argv[1]).read_text())["learning_rate"])
        return parse_args(argv)

    monkeypatch.setattr(mo_align.train, "parse_args", counting)
    body = {
        "preferences": {"dirichlet": {"n": 2500, "seed": 1}},
        "seeds": [0, 1],
        "set": {"learning_rate": [1e-4, 1e-3]},
    }
    sweep = load_sweep(_files(tmp_path, body))
    assert len(sweep.points) == 2500 * 2 * 2 == 10_000  # the cap itself is allowed
    assert len({p.name for p in sweep.points}) == 10_000
    assert sorted(calls) == [1e-4, 1e-3]  # one parse per distinct recipe


def test_a_preference_a_weighting_rejects_is_still_caught_behind_the_cache(tmp_path):
    """The shared recipe check is done with the first point's preference; every other preference is still built
    into its weighting (linear weights are at most 1e6)."""
    path = _files(tmp_path, {"preferences": [[1, 0, 0], [2e6, 0, 0]]})
    with pytest.raises(SweepError) as info:
        load_sweep(path)
    assert str(info.value) == (
        f"{path}: point linear-w2e+06_0_0-seed0: linear: weights must be finite, non-negative and <= 1e+06, "
        "got 2000000.0"
    )


def _never(*args, **kwargs):
    raise AssertionError("built before the points were counted")


def test_ten_to_the_ten_points_are_refused_by_count_before_any_is_built(tmp_path, monkeypatch, capsys):
    """Before: 10 `set` lines of 10 values each built 10¹⁰ points until a MemoryError (56–86 s)."""
    monkeypatch.setattr(mo_align.sweep.spec, "point_name", _never)
    axes = {"temperature": [0.1 * i for i in range(1, 11)], "beta": [0.01 * i for i in range(10)]}
    axes.update({f: list(range(1, 11)) for f in ("max_steps", "logging_steps", "eval_steps", "save_steps")})
    axes.update({f: list(range(2, 12)) for f in ("save_total_limit", "max_completion_length", "top_k")})
    axes["mo_diagnostics_patience"] = list(range(1, 11))
    path = _files(tmp_path, {"set": axes})
    assert _one_line(path, capsys) == (
        f"{path}: axes: 10,000,000,000 points (algorithms x preferences x set values x seeds); a sweep has at most "
        "10,000 (max_points: N in the sweep file raises the cap)"
    )


def test_a_huge_dirichlet_n_is_refused_before_drawing(tmp_path, monkeypatch, capsys):
    """Before: `dirichlet: {n: 100000000}` drew 10⁸ vectors into a MemoryError."""
    monkeypatch.setattr(mo_align.sweep.axes, "dirichlet_points", _never)
    path = _files(tmp_path, {"preferences": {"dirichlet": {"n": 10**8}}, "algorithms": ["linear", "mgda"]})
    assert _one_line(path, capsys).startswith(f"{path}: axes: 100,000,001 points (")


def test_max_points_raises_or_lowers_the_cap(tmp_path, capsys):
    body = {"preferences": {"grid": 2}, "seeds": [0, 1]}  # 6 preferences x 2 seeds
    assert len(load_sweep(_files(tmp_path, {**body, "max_points": 12}), check_recipes=False).points) == 12
    path = _files(tmp_path, {**body, "max_points": 11})
    assert _one_line(path, capsys).startswith(f"{path}: axes: 12 points (")
    for bad in (0, "many", 2.5):
        path = _files(tmp_path, {**body, "max_points": bad})
        assert _one_line(path, capsys) == f"{path}: max_points: {bad!r}: an integer >= 1"


@pytest.mark.parametrize(
    ("spec", "field", "says"),
    [
        ({"n": 3, "seed": "abc"}, "preferences.dirichlet.seed", "'abc': an integer >= 0"),  # was a traceback
        ({"n": 3, "seed": -1}, "preferences.dirichlet.seed", "-1: an integer >= 0"),  # numpy's ValueError
        ({"n": 3, "seed": 1.5}, "preferences.dirichlet.seed", "1.5: an integer >= 0"),
        ({"n": 3, "alpha": float("inf")}, "preferences.dirichlet.alpha", "inf: a finite number in (0, 1e+06]"),
        ({"n": 3, "alpha": float("nan")}, "preferences.dirichlet.alpha", "nan: a finite number in (0, 1e+06]"),
        ({"n": 3, "alpha": 1e300}, "preferences.dirichlet.alpha", "1e+300: a finite number in (0, 1e+06]"),
        ({"n": 3, "alpha": True}, "preferences.dirichlet.alpha", "True: a finite number in (0, 1e+06]"),
        ({"n": "1e8"}, "preferences.dirichlet", "n (an integer >= 1) is required; keys: n, seed, alpha"),
    ],
)
def test_dirichlet_seed_and_alpha_are_one_line(tmp_path, capsys, spec, field, says):
    """Before: `seed: abc` ended in int()'s traceback; `alpha: .inf` drew NaN vectors, reported as a weights error."""
    path = _files(tmp_path, {"preferences": {"dirichlet": spec}})
    assert _one_line(path, capsys) == f"{path}: {field}: {says}"


def test_seeds_outside_numpys_range_are_one_line(tmp_path, capsys):
    path = _files(tmp_path, {"seeds": [0, 2**32]})
    assert _one_line(path, capsys) == f"{path}: seeds: [0, 4294967296]: each in [0, 2**32 - 1] (numpy's seed range)"


def test_a_bad_seed_in_the_base_recipe_names_the_recipe_file_and_line(tmp_path, capsys):
    """Before: `seed: abc` in the base recipe was reported as `seeds: None: a non-empty list of integers`."""
    path = _files(tmp_path, {}, seed="abc")
    recipe = tmp_path / "base.yaml"
    line = next(i for i, text in enumerate(recipe.read_text().splitlines(), 1) if text.startswith("seed:"))
    assert _one_line(path, capsys) == f"{recipe}:{line}:1: field 'seed' expects an integer, got 'abc' (a string)"


def test_long_labels_and_values_are_cut_with_a_hash_and_the_points_are_written(tmp_path):
    """Before: a 300-character label made a 300-byte directory name: ENAMETOOLONG when the point was written."""
    long_a, long_b = "a" * 300, "a" * 299 + "b"  # the same first 120 characters
    body = {
        "algorithms": {long_a: {"weighting": "linear"}, long_b: {"weighting": "linear"}},
        "set": {"gramian_params": ["x" * 300]},
        "seeds": [0, 7],
        "accelerate_config": "cpu",
    }
    path = _files(tmp_path, body)
    sweep = load_sweep(path)
    names = [p.name for p in sweep.points]
    assert len(set(names)) == 4 and all(len(n) == 120 + len("-seed0") for n in names)
    assert all(n.startswith("a" * 110 + "-h") for n in names)
    by_label = {p.label: p.name.rsplit("-seed", 1)[0] for p in sweep.points}
    assert len(set(by_label.values())) == 2  # the two labels differ only after 120 characters: their hashes differ
    assert {p.name.rsplit("-seed", 1)[0] for p in sweep.points if p.label == long_a} == {by_label[long_a]}
    assert main([path, "--print-commands"]) == 0  # writes each point's recipe, all in one folder
    assert all((tmp_path / "out" / "recipes" / f"{n}.yaml").exists() for n in names)


@pytest.mark.parametrize(
    ("body", "where", "says"),
    [
        (
            {"set": {"max_steps": [4, 1.5]}},
            "set.max_steps[1]",
            "field 'max_steps' expects an integer, got 1.5 (a float)",
        ),
        (
            {"overrides": {"bf16": "maybe"}},
            "overrides.bf16",
            "field 'bf16' expects a boolean (true or false) or null, got 'maybe' (a string)",
        ),
    ],
)
def test_a_wrong_type_in_set_or_overrides_names_the_sweep_field(tmp_path, capsys, body, where, says):
    """Before: reported for the first point using it, naming a temporary recipe file (or, before recipe fields were
    type-checked, as argparse's usage text)."""
    path = _files(tmp_path, body)
    assert _one_line(path, capsys) == f"{path}: {where}: {says}"
