"""A recipe's keys and value types are checked against the configuration dataclasses before anything else runs:
unknown keys first (all of them, each with its closest field), then each value's type, in one line naming the file,
the line, the field and the expected type; the model (a path that does not exist here) is never reached."""

import os
import pathlib
import subprocess
import sys
import warnings

import pytest
import yaml

from mo_align import train as train_mod


ROOT = pathlib.Path(__file__).resolve().parents[1]
NO_MODEL = "/nonexistent/mo-align-model"  # loading it would fail with an OSError, not with the expected line


def _recipe(tmp_path, text: str, name: str = "recipe.yaml") -> str:
    """The tiny linear recipe with ``text`` appended (the keys of ``text`` taken out of it first), its model a path
    that does not exist."""
    base = yaml.safe_load((ROOT / "recipes/tiny/linear.yaml").read_text())
    base.update(model_name_or_path=NO_MODEL, output_dir=str(tmp_path / "out"))
    for key in yaml.safe_load(text) or {}:
        base.pop(key, None)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(base, sort_keys=False) + text)
    return str(path)


def _line_of(path: str, key: str) -> int:
    return next(
        i for i, line in enumerate(pathlib.Path(path).read_text().splitlines(), 1) if line.startswith(key + ":")
    )


# (recipe text, field, expected type as the error line says it, the value as shown)
BAD = [
    # the five
    ("learning_rate: fast\n", "learning_rate", "a float", "'fast' (a string)"),
    ('num_generations: "four"\n', "num_generations", "an integer or null", "'four' (a string)"),
    ('bf16: "yes please"\n', "bf16", "a boolean (true or false) or null", "'yes please' (a string)"),
    ("max_steps: [1, 2]\n", "max_steps", "an integer", "[1, 2] (a list)"),
    ("seed: 1.5\n", "seed", "an integer", "1.5 (a float)"),
    # bools as strings or numbers
    ('use_cpu: "maybe"\n', "use_cpu", "a boolean (true or false)", "'maybe' (a string)"),
    ("mo_diagnostics: 1\n", "mo_diagnostics", "a boolean (true or false)", "1 (an integer)"),
    ('load_in_4bit: "sure"\n', "load_in_4bit", "a boolean (true or false)", "'sure' (a string)"),
    # lists where scalars are expected, and the reverse
    ("per_device_train_batch_size: [16]\n", "per_device_train_batch_size", "an integer", "[16] (a list)"),
    ("weighting: [linear, ctwa]\n", "weighting", "a string", "['linear', 'ctwa'] (a list)"),
    ("temperature: {a: 1}\n", "temperature", "a float", "{'a': 1} (a mapping)"),
    ("reward_weights: 1.0\n", "reward_weights", "a list of floats or null", "1.0 (a float)"),
    ("dataset_kwargs: [1, 2]\n", "dataset_kwargs", "a mapping, a string or null", "[1, 2] (a list)"),
    # floats (or float-looking strings) for integers
    ("max_steps: 12.0\n", "max_steps", "an integer", "12.0 (a float)"),
    ("max_steps: 1e3\n", "max_steps", "an integer", "'1e3' (a string)"),  # YAML 1.1 reads 1e3 as a string
    ("num_generations: 4.5\n", "num_generations", "an integer or null", "4.5 (a float)"),
    # null where the field is not optional
    ("learning_rate: null\n", "learning_rate", "a float", "null"),
    ("reward_funcs: null\n", "reward_funcs", "a list of strings", "null"),
    ("use_cpu: null\n", "use_cpu", "a boolean (true or false)", "null"),
    # values outside an Enum or `choices` field
    ("eval_strategy: sometimes\n", "eval_strategy", "one of 'no', 'steps', 'epoch'", "'sometimes' (a string)"),
    ("dtype: float64\n", "dtype", "one of 'auto', 'bfloat16', 'float16', 'float32' or null", "'float64' (a string)"),
    ("run_name: 2024-01-01\n", "run_name", "a string or null", "datetime.date(2024, 1, 1) (date)"),
    ("env: [A, B]\n", "env", "a mapping", "['A', 'B'] (a list)"),
]


@pytest.mark.parametrize(("text", "field", "expected", "shown"), BAD, ids=[b[0].strip()[:40] for b in BAD])
def test_a_wrong_type_is_one_line_naming_file_line_field_and_type(tmp_path, capsys, text, field, expected, shown):
    """Before: argparse's 219-line usage without the file (strings for numbers or booleans), or the value reached the
    dataclasses: `max_steps: [1, 2]` went on to load the model, `seed: 1.5` ended in numpy's traceback."""
    path = _recipe(tmp_path, text)
    with warnings.catch_warnings(record=True) as caught:  # nothing was constructed: not even a deprecation warning
        warnings.simplefilter("always")
        with pytest.raises(SystemExit) as exc:
            train_mod.cli(["--config", path])
    assert exc.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    line = _line_of(path, field)
    assert err == [f"mo-align: error: {path}:{line}:1: field '{field}' expects {expected}, got {shown}"]
    assert len(err[0]) <= 300 + len(path)
    assert not caught, [str(w.message) for w in caught]


def test_an_unquoted_no_in_a_string_field_says_to_quote_it(tmp_path, capsys):
    path = _recipe(tmp_path, "save_strategy: no\n")
    with pytest.raises(SystemExit):
        train_mod.cli(["--config", path])
    err = capsys.readouterr().err.strip()
    assert err == (
        f"mo-align: error: {path}:{_line_of(path, 'save_strategy')}:1: field 'save_strategy' expects one of 'no', "
        "'steps', 'epoch', 'best', got false (a boolean); YAML reads unquoted yes/no/on/off as booleans: quote the "
        "string"
    )


def test_a_long_choice_list_is_cut_to_keep_the_line_short(tmp_path, capsys):
    path = _recipe(tmp_path, "optim: adam\n")
    with pytest.raises(SystemExit):
        train_mod.cli(["--config", path])
    err = capsys.readouterr().err.strip()
    assert "field 'optim' expects one of 'adamw_torch', " in err and "values), got 'adam' (a string)" in err
    assert len(err) < 300 + len(path)


@pytest.mark.parametrize(
    ("command", "text", "field", "expected"),
    [
        ([sys.executable, "-m", "mo_align.train"], "learning_rate: fast\n", "learning_rate", "a float"),
        ([str(pathlib.Path(sys.executable).parent / "mo-align"), "train"], "seed: 1.5\n", "seed", "an integer"),
    ],
    ids=["python -m mo_align.train", "mo-align train"],
)
def test_the_entry_points_print_one_line_and_never_reach_the_model(tmp_path, command, text, field, expected):
    path = _recipe(tmp_path, text)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([*command, "--config", path], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(err) == 1, proc.stderr[-3000:]
    assert err[0].startswith(f"mo-align: error: {path}:{_line_of(path, field)}:1: field '{field}' expects {expected}")
    assert NO_MODEL not in proc.stderr  # the type error, not the missing model


def test_values_the_parser_converts_are_accepted_and_converted(tmp_path):
    """No false alarms: what `--key value` on the command line accepts is accepted in a recipe too."""
    text = (
        'learning_rate: "1e-4"\nbf16: "false"\nuse_cpu: "yes"\nmax_steps: "7"\nmo_run_label: null\n'
        "reward_funcs: accuracy\nsave_strategy: 'no'\nenv: {MO_ALIGN_RECIPE_TEST: '1'}\n"
    )
    script_args, training_args, model_args = train_mod.parse_args(["--config", _recipe(tmp_path, text)])
    assert training_args.learning_rate == 1e-4 and training_args.bf16 is False and training_args.use_cpu is True
    assert training_args.max_steps == 7 and training_args.mo_run_label is None
    assert script_args.reward_funcs == ["accuracy"] and training_args.save_strategy == "no"
    assert model_args.model_name_or_path == NO_MODEL


def test_every_shipped_recipe_passes_the_field_check():
    from mo_align.recipe import check_fields

    types = train_mod.make_parser().dataclass_types
    for path in sorted((ROOT / "recipes").rglob("*.yaml")):
        check_fields(str(path), yaml.safe_load(path.read_text()), types)


def test_unknown_keys_come_first_all_named_with_close_matches(tmp_path, capsys):
    """Before: TRL reported unknown keys only after building the configs, so `num_generations: 1` (or a type
    error) hid the misspelt key, and the line suggested `fail_with_unknown_args=False`."""
    text = "learnin_rate: 0.1\nnum_generations: 1\nseed: 1.5\nbf_16: true\nzzzz_qqqq: 3\n"
    path = _recipe(tmp_path, text)
    with pytest.raises(SystemExit) as exc:
        train_mod.cli(["--config", path])
    assert exc.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == [
        f"mo-align: error: {path}:{_line_of(path, 'learnin_rate')}:1: unknown fields 'learnin_rate' (did you mean "
        "'learning_rate'?), 'bf_16' (did you mean 'bf16'?), 'zzzz_qqqq'; `mo-align train --help` lists the recipe "
        "fields"
    ]
    assert "fail_with_unknown_args" not in err[0]


def test_many_unknown_keys_are_counted_not_listed(tmp_path):
    from mo_align.recipe import RecipeError, check_fields

    data = {f"unknown_{i}": i for i in range(7)}
    types = train_mod.make_parser().dataclass_types
    with pytest.raises(RecipeError) as exc:
        check_fields("r.yaml", {"seed": 0, **data}, types)
    assert str(exc.value) == (
        "r.yaml: unknown fields 'unknown_0', 'unknown_1', 'unknown_2' and 4 more; `mo-align train --help` lists "
        "the recipe fields"
    )


def test_expected_types_come_from_the_dataclass_annotations():
    from mo_align.recipe import describe, recipe_fields

    fields = recipe_fields(train_mod.make_parser().dataclass_types)
    # one per kind of annotation the three dataclasses use
    assert describe(fields["weighting_kwargs"]) == "a mapping, a string or null"  # mo_align's MOGRPOConfig
    assert describe(fields["beta"]) == "a float"  # TRL's GRPOConfig
    assert describe(fields["gradient_accumulation_steps"]) == "an integer"  # transformers' TrainingArguments
    assert describe(fields["lora_r"]) == "an integer"  # TRL's ModelConfig
    assert describe(fields["dataset_path"]) == "a string or null"  # MOScriptArguments
    assert describe(fields["trackio_static_space_id"]) == "a string, false or null"  # a Literal[False] member
    assert describe(fields["advantage_estimator"]) == "one of 'grpo', 'reinforce_pp', 'gdpo'"  # `choices`


def test_num_generations_null_is_one_line(tmp_path, capsys):
    """Before: GRPOConfig's own check divided by it: `TypeError: unsupported operand type(s) for %` (traceback)."""
    path = _recipe(tmp_path, "num_generations: null\n")
    with pytest.raises(SystemExit):
        train_mod.cli(["--config", path])
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"mo-align: error: {path}: num_generations must be >= 2 for group baselines, got None"


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_a_seed_outside_numpys_range_is_one_line(tmp_path, capsys, seed):
    """Before: accepted, then `transformers.set_seed` raised numpy's ValueError as a traceback."""
    path = _recipe(tmp_path, f"seed: {seed}\n")
    with pytest.raises(SystemExit):
        train_mod.cli(["--config", path])
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"mo-align: error: {path}: seed must be an integer in [0, 2**32 - 1] (numpy's seed range), got {seed}"
    )
