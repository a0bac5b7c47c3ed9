"""Rewards that leave nothing to train on stop the run naming the objectives (mo_align.rewards.unscorable).

Before: an objective returning None for every completion, or every objective NaN on every batch, trained all steps
at grad_norm 0 and exited 0 after one warning."""

from __future__ import annotations

import math

import pytest
import torch

from mo_align import train as train_mod
from mo_align.rewards.unscorable import UnscorableRewardsError, check_scorable
from tests.test_cli import tiny_recipe


def never_applies(prompts, completions, completion_ids=None, **kw):
    """A reward whose parser never matches: None for every completion."""
    return [None] * len(completions)


def odd_rows_only(prompts, completions, completion_ids=None, **kw):
    """Applies to every other completion (NaN on the rest)."""
    return [len(ids) / 8.0 if i % 2 else math.nan for i, ids in enumerate(completion_ids)]


def first_batch_only():
    """A reward that scores the first batch it sees and is NaN on every later one."""
    calls = []

    def scored_once(prompts, completions, completion_ids=None, **kw):
        calls.append(len(completions))
        return [float(len(ids) % 3) for ids in completion_ids] if len(calls) == 1 else [None] * len(completions)

    return scored_once


def _trainer(tiny_model_dir, out, rewards, **overrides):
    from mo_align.trainer import MOGRPOTrainer
    from tests.helpers import tiny_config, tiny_dataset

    return MOGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=rewards,
        args=tiny_config(str(out), **overrides),
        train_dataset=tiny_dataset(48),
    )


def test_an_objective_that_never_applies_stops_after_patience_batches(tiny_model_dir, tmp_path):
    """One generation batch per step (steps_per_generation 1): batches 1, 2, 3 are scored at global steps 0, 1, 2;
    the third (default mo_nan_patience 3) stops the run, so 2 optimizer steps were taken of the 6 asked for."""
    from tests.helpers import reward_short

    trainer = _trainer(tiny_model_dir, tmp_path, [reward_short, never_applies], max_steps=6)
    assert trainer.args.mo_nan_patience == 3
    with pytest.raises(UnscorableRewardsError) as exc:
        trainer.train()
    assert str(exc.value) == (
        "objective 'never_applies' returned None/NaN for every completion of all 3 training batches so far "
        "(mo_nan_patience=3): nothing to train on; check the reward function and the dataset columns it reads"
    )
    assert trainer.state.global_step == 2
    assert [e["step"] for e in trainer.mo_history["train_reward"]] == [1, 2]


def test_every_objective_nan_for_patience_consecutive_batches_stops(tiny_model_dir, tmp_path):
    """The only objective scores batch 1, then is NaN: with mo_nan_patience 2 batches 2 and 3 stop the run at
    global step 2 (batch 3 is scored after 2 steps); batch 1 keeps the never-scored rule from firing."""
    scored_once = first_batch_only()
    trainer = _trainer(tiny_model_dir, tmp_path, [scored_once], max_steps=6, mo_nan_patience=2)
    with pytest.raises(UnscorableRewardsError) as exc:
        trainer.train()
    assert str(exc.value) == (
        "every objective ('scored_once') returned None/NaN for every completion of the last 2 training batches "
        "(mo_nan_patience=2): no completion can be scored; check the reward functions"
    )
    assert trainer.state.global_step == 2


def test_partly_nan_objectives_train_normally(tiny_model_dir, tmp_path):
    """NaN on half the completions of every batch, or NaN on whole batches after scoring once beside an objective
    that scores: all 5 steps are trained, and the partial objective's logged mean is over its scored rows only."""
    from tests.helpers import reward_short

    trainer = _trainer(tiny_model_dir, tmp_path, [reward_short, odd_rows_only, first_batch_only()], max_steps=5)
    trainer.train()
    assert trainer.state.global_step == 5
    means = [e["means"] for e in trainer.mo_history["train_reward"]]
    assert len(means) == 5 and all(math.isfinite(m["odd_rows_only"]) for m in means)
    assert math.isfinite(means[0]["scored_once"]) and all(math.isnan(m["scored_once"]) for m in means[1:])


def test_the_count_goes_on_across_a_resume():
    """The batches so far are the (checkpointed) history: after a resume 2 earlier all-NaN batches + this one stop
    at patience 3; an objective that scored once before is not 'never applies'."""
    names = ("a", "b")
    batch = torch.tensor([[math.nan, 1.0], [math.nan, 0.0]])
    nan_a = [{"step": s, "means": {"a": math.nan, "b": 0.5}} for s in (1, 2)]
    with pytest.raises(UnscorableRewardsError, match=r"^objective 'a' returned None/NaN .* all 3 training batches"):
        check_scorable(batch, nan_a, names, 3)
    check_scorable(batch, nan_a[:1], names, 3)  # 2 batches so far: not yet certain
    scored = [{"step": 1, "means": {"a": 0.2, "b": 0.5}}, *nan_a]
    check_scorable(batch, scored, names, 3)
    all_nan = torch.full((2, 2), math.nan)
    both = [{"step": s, "means": {"a": math.nan, "b": math.nan}} for s in (2, 3)]
    check_scorable(all_nan, [scored[0], both[0]], names, 3)  # a run of 2 all-NaN batches
    with pytest.raises(UnscorableRewardsError, match=r"^every objective \('a', 'b'\) .* the last 3 training batches"):
        check_scorable(all_nan, [scored[0], *both], names, 3)


@pytest.mark.parametrize("value", [0, -1])
def test_mo_nan_patience_is_validated(tmp_path, value):
    from tests.helpers import tiny_config

    with pytest.raises(
        ValueError, match=rf"^mo_nan_patience must be an integer >= 1 \(training batches\), got {value}$"
    ):
        tiny_config(str(tmp_path), mo_nan_patience=value)


def test_cli_stops_with_one_line_and_a_nonzero_status(tmp_path, tiny_model_dir, capsys):
    recipe = tiny_recipe(
        tmp_path,
        tiny_model_dir,
        reward_funcs=["tests.test_nan_stop.never_applies"],
        weighting_kwargs={},
        max_steps=6,
        per_device_train_batch_size=8,
        eval_strategy="no",
        eval_on_start=False,
    )
    with pytest.raises(SystemExit) as exc:
        train_mod.cli(["--config", recipe, "--disable_tqdm", "true"])
    assert exc.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mo-align: error:")]
    assert err == [
        "mo-align: error: objective 'never_applies' returned None/NaN for every completion of all 3 training batches "
        "so far (mo_nan_patience=3): nothing to train on; check the reward function and the dataset columns it reads"
    ]


def test_cli_refuses_a_bad_patience_in_one_line(tmp_path, tiny_model_dir, capsys):
    recipe = tiny_recipe(tmp_path, tiny_model_dir, mo_nan_patience=0)
    with pytest.raises(SystemExit) as exc:
        train_mod.cli(["--config", recipe])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"mo-align: error: {recipe}: mo_nan_patience must be an integer >= 1 (training batches), got 0"
    )
