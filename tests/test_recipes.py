"""Every recipe parses with unknown keys failing, builds its weighting and resolves its rewards."""

import pathlib

import pytest

from mo_align.rewards import get_reward_funcs
from mo_align.train import parse_args
from mo_align.weightings import WEIGHTINGS, get_weighting


ROOT = pathlib.Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*/*.yaml"))


def test_there_are_recipes():
    assert any(p.parent.name == "tiny" for p in RECIPES)
    assert any(p.parent.name == "qwen2.5-1.5b" for p in RECIPES)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_parses_and_builds(path):
    # GPU recipes ask for bf16, which TrainingArguments refuses on a CPU-only box: override it here only.
    extra = [] if path.parent.name == "tiny" else ["--bf16", "false"]
    script_args, training_args, model_args = parse_args(["--config", str(path), *extra])
    assert path.stem == training_args.weighting, "recipe file name must equal its weighting key"
    assert training_args.weighting in WEIGHTINGS
    weighting = get_weighting(training_args.weighting, len(script_args.reward_funcs), **training_args.weighting_kwargs)
    assert weighting.num_objectives == len(script_args.reward_funcs)
    funcs = get_reward_funcs(script_args.reward_funcs, script_args.reward_kwargs)
    assert [f.__name__ for f in funcs] == script_args.reward_funcs
    assert model_args.model_name_or_path
    first_line = path.read_text().splitlines()[0]
    assert first_line.startswith("# make "), "first line documents the launch command"


def test_every_algorithm_has_a_tiny_recipe():
    tiny = {p.stem for p in RECIPES if p.parent.name == "tiny"}
    assert set(WEIGHTINGS) <= tiny


@pytest.mark.parametrize("path", [p for p in RECIPES if p.parent.name.startswith("tiny")], ids=lambda p: p.stem)
def test_tiny_recipes_evaluate_from_step_zero(path):
    """`make smoke-*` runs evaluate (so `mo-align report` on them compares eval means), starting at step 0."""
    script_args, training_args, _ = parse_args(["--config", str(path)])
    assert script_args.eval_split and training_args.eval_strategy == "steps" and training_args.eval_on_start
    assert training_args.max_steps % training_args.eval_steps == 0  # the last step is evaluated too
