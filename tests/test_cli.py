"""Bad input fails early with one clear line (exit 2), before any model is loaded; both entry points agree."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
import yaml

import mo_align.trainer
from mo_align import train as train_mod


ROOT = pathlib.Path(__file__).resolve().parents[1]


def tiny_recipe(tmp_path, model_dir, **overrides):
    with open(ROOT / "recipes" / "tiny" / "linear.yaml") as f:
        recipe = yaml.safe_load(f)
    recipe.update(model_name_or_path=model_dir, output_dir=str(tmp_path / "out"), max_steps=2)
    recipe.update(overrides)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


@pytest.fixture
def no_model(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("the model was loaded before the configuration error was reported")

    monkeypatch.setattr(mo_align.trainer.MOGRPOTrainer, "__init__", fail)


def bad_reward_length(prompts, completions, completion_ids=None, **kw):
    return [1.0]


def bad_reward_type(prompts, completions, completion_ids=None, **kw):
    return ["yes"] * len(completions)


CASES = [
    (
        {"weighting": "nope"},
        "unknown weighting 'nope'; choose from ['aligned_mtl', 'cagrad', 'ctwa', 'dualproj', 'dynamic', 'gradnorm'",
    ),
    ({"weighting_kwargs": {"alpha": 1.0}}, "unknown kwarg 'alpha'"),
    ({"weighting_kwargs": {"weights": [0.5, 0.5]}}, "weights has 2 entries but there are 3 objectives"),
    ({"num_generations": 1}, "num_generations must be >= 2"),
    ({"reward_funcs": ["accuracy", "nope"]}, "unknown reward 'nope'"),
    ({"reward_funcs": ["accuracy", "tests.test_cli.bad_reward_length"]}, "returned 1 values for 2 completions"),
    ({"reward_funcs": ["tests.test_cli.bad_reward_type"]}, "returned 'yes' (str) for completion 0: each value must"),
    ({"not_a_field": 3}, "unknown field 'not_a_field'; `mo-align train --help` lists the recipe fields"),
    ({"reward_weights": [1.0, 1.0, 1.0]}, "reward_weights is set but weighting 'linear' owns"),
    ({"advantage_estimator": "ppo"}, "ppo"),
    ({"multi_objective_aggregation": "normalize_then_sum"}, "use advantage_estimator: gdpo"),
    ({"reward_kwargs": {"clarity": {"bogus": 1}}}, "reward 'clarity': bad reward_kwargs"),
]


@pytest.mark.parametrize(("overrides", "message"), CASES, ids=[str(c[0])[:40] for c in CASES])
def test_bad_recipe_one_line_error(tmp_path, tiny_model_dir, capsys, no_model, overrides, message):
    recipe = tiny_recipe(tmp_path, tiny_model_dir, **overrides)
    if "weighting_kwargs" not in overrides and "reward_funcs" in overrides:
        # keep the recipe consistent: uniform weights for the new number of objectives
        recipe = tiny_recipe(tmp_path, tiny_model_dir, weighting_kwargs={}, **overrides)
    with pytest.raises(SystemExit) as exc:
        train_mod.cli(["--config", recipe])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mo-align: error: "), err
    assert message in err[-1], err[-1]


def test_json_weighting_kwargs_on_the_cli(tmp_path, tiny_model_dir):
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    script_args, training_args, _ = train_mod.parse_args(
        ["--config", recipe, "--weighting_kwargs", '{"weights": [1, 2, 3]}', "--learning_rate", "0.5"]
    )
    assert training_args.weighting_kwargs == {"weights": [1, 2, 3]}
    assert training_args.learning_rate == 0.5
    assert script_args.reward_funcs == ["accuracy", "conciseness", "clarity"]


def test_console_script_and_module_run_the_same_training(tmp_path, tiny_model_dir):
    """`mo-align train` and `python -m mo_align.train` give the same per-objective table on the same recipe, and
    each run's summary records the command as typed."""
    console = pathlib.Path(sys.executable).parent / "mo-align"
    assert console.exists(), "the mo-align console script is not installed in this environment"
    outputs = []
    python = os.path.basename(sys.executable)
    for i, (cmd, typed) in enumerate(
        (
            ([sys.executable, "-m", "mo_align.train"], f"{python} -m mo_align.train"),
            ([str(console), "train"], "mo-align train"),
        )
    ):
        recipe = tiny_recipe(tmp_path, tiny_model_dir, output_dir=str(tmp_path / f"run{i}"))
        proc = subprocess.run(
            [*cmd, "--config", recipe, "--disable_tqdm", "true"], capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        table = proc.stdout[proc.stdout.index("per-objective training reward") :]
        outputs.append(table)
        assert (tmp_path / f"run{i}" / "model.safetensors").exists()
        summary = json.loads((tmp_path / f"run{i}" / "mo_summary.json").read_text())
        assert summary["launch_command"] == f"{typed} --config {recipe} --disable_tqdm true"
        assert summary["eval"][0]["step"] == 0  # the tiny recipe evaluates from step 0
        assert set(summary["eval"][0]["means"]) == {"accuracy", "conciseness", "clarity"}
    assert outputs[0] == outputs[1]
    assert "accuracy" in outputs[0] and "conciseness" in outputs[0] and "clarity" in outputs[0]


def test_mo_align_help(capsys):
    from mo_align.cli import main

    assert main(["--help"]) == 0
    assert "train --config FILE" in capsys.readouterr().out
    assert main(["frobnicate"]) == 2
