"""Objective roles (``objective_roles: {clarity: monitor}``, mo_align.objectives.roles): the weighting sees the train
objectives only, a monitor is scored, logged, evaluated and watched, an eval-role objective is scored at evaluation
only; the summary, the card, the report and the interference monitor name each objective's role."""

from __future__ import annotations

import json

import pytest
import torch

from mo_align import train as train_mod
from mo_align.diagnostics import InterferenceMonitor
from mo_align.hub import render_model_card
from mo_align.objectives import ObjectivePlan
from mo_align.rewards import reward_factory
from mo_align.runs.report import analyse
from mo_align.runs.report.plots import Plots
from mo_align.runs.report.render import blocks
from mo_align.sweep import load_sweep
from tests.test_cli import no_model, tiny_recipe  # noqa: F401 (fixture)
from tests.test_sweep import _recipe, _sweep


@reward_factory
class CountingReward:
    """Scores 1 per completion and records, at every call, whether the trainer had put it in training mode (the
    trainer sets ``training`` on every reward before a batch is scored; evaluation calls it frozen)."""

    calls: list[tuple[bool, int]] = []  # noqa: RUF012

    def __init__(self) -> None:
        self.__name__ = "counting"
        self.training = True

    def __call__(self, prompts, completions, **kwargs):
        CountingReward.calls.append((self.training, len(completions)))
        return [1.0] * len(completions)


COUNTING = f"{__name__}.CountingReward"


def _run(tmp_path, tiny_model_dir, **overrides):
    recipe = tiny_recipe(tmp_path, tiny_model_dir, **overrides)
    return train_mod.main(*train_mod.parse_args(["--config", recipe, "--log_level", "warning"]))


def test_monitor_and_eval_roles_train_end_to_end(tmp_path, tiny_model_dir):
    """accuracy, conciseness (train), clarity (monitor), counting (eval), linear weights [0.25, 0.75]: two steps,
    evaluated at 0 and 2. Before, `objective_roles` was an unknown recipe field and every reward was trained."""
    CountingReward.calls.clear()
    trainer = _run(
        tmp_path,
        tiny_model_dir,
        reward_funcs=["accuracy", "conciseness", "clarity", COUNTING],
        objective_roles={"clarity": "monitor", COUNTING: "eval"},
        weighting_kwargs={"weights": [0.25, 0.75]},
        eval_steps=2,
    )
    assert trainer.weighting.num_objectives == 2 and trainer.mo.weighted_names == ("accuracy", "conciseness")
    # the eval-role reward: never called on a training batch; called at the preflight (2 rows) and both evaluations
    assert CountingReward.calls and not any(training for training, _ in CountingReward.calls)
    assert [n for _, n in CountingReward.calls].count(16) == 2
    train_logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(train_logs) == 2
    for h in train_logs:
        assert h["mo/weight/accuracy"] == 0.25 and h["mo/weight/conciseness"] == 0.75
        assert "mo/weight/clarity" not in h and "mo/weight/counting" not in h  # neither is weighted
        assert "rewards/clarity/mean" in h and "mo/cov/clarity" in h and "mo/zero_var_frac/clarity" in h  # monitored
        assert not any("counting" in k for k in h)  # not scored in training: no NaN metric either
    evals = [h for h in trainer.state.log_history if "eval_counting/mean" in h]
    assert [h["eval_counting/mean"] for h in evals] == [1.0, 1.0] and all("eval_clarity/mean" in h for h in evals)
    out = tmp_path / "out"
    summary = json.loads((out / "mo_summary.json").read_text())
    roles = {"accuracy": "train", "conciseness": "train", "clarity": "monitor", "counting": "eval"}
    assert summary["objective_roles"] == roles and summary["objectives"] == list(roles)
    assert summary["weights"][-1]["weights"] == {"accuracy": 0.25, "conciseness": 0.75}
    assert set(summary["train_reward"][-1]["means"]) == {"accuracy", "conciseness", "clarity"}
    assert summary["preference"]["weights"] == [0.25, 0.75]
    trainer.create_model_card()
    card = (out / "README.md").read_text()
    assert "optimising 2 objectives with the **linear** weighting (2 more scored but not weighted" in card
    assert "3. `clarity`: monitor (scored, logged, evaluated and watched; not weighted)" in card
    assert "4. `counting`: eval (scored at evaluation only)" in card
    assert "1. `accuracy`: train (combined by the weighting)" in card


@pytest.mark.usefixtures("no_model")
def test_weights_list_counts_train_objectives_only(tmp_path, tiny_model_dir, capsys):
    recipe = tiny_recipe(tmp_path, tiny_model_dir, objective_roles={"clarity": "monitor"})  # weights: 3 entries
    with pytest.raises(SystemExit) as exc:
        train_mod.cli(["--config", recipe])
    assert exc.value.code == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert "weights has 3 entries but there are 2 objectives" in err
    assert err.endswith(
        "with objective_roles, K counts the 2 train objectives only: accuracy, conciseness (not clarity (monitor))"
    )


BAD_ROLES = [
    ({"clarity": "watch"}, "objective_roles[clarity]: unknown role 'watch'; choose from train, monitor, eval"),
    ({"clarty": "monitor"}, "objective_roles[clarty]: not an objective of this run"),
    (
        {"accuracy": "monitor", "conciseness": "eval", "clarity": "monitor"},
        "objective_roles: at least one objective must have role train",
    ),
    ("monitor", "objective_roles must be a mapping or a JSON object string"),
]


@pytest.mark.parametrize(("roles", "message"), BAD_ROLES, ids=[m[:30] for _, m in BAD_ROLES])
@pytest.mark.usefixtures("no_model")
def test_bad_roles_are_one_line_before_the_model(tmp_path, tiny_model_dir, capsys, roles, message):
    recipe = tiny_recipe(tmp_path, tiny_model_dir, objective_roles=roles, weighting_kwargs={})
    with pytest.raises(SystemExit) as exc:
        train_mod.cli(["--config", recipe])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_conditions_and_eval_roles_do_not_mix():
    with pytest.raises(
        ValueError, match=r"objective_conditions\[clarity\].only_if.objective: 'accuracy' has role eval"
    ):
        ObjectivePlan.build(
            ["accuracy", "clarity"],
            {"accuracy": "eval"},
            {"clarity": {"only_if": {"objective": "accuracy", "at_least": 1}}},
        )


def test_monitor_skips_eval_role_on_batches_and_names_roles():
    """Eval-role columns are NaN on training batches: no batch metric for them; events name the role."""
    monitor = InterferenceMonitor(("a", "m", "e"), patience=1, roles={"m": "monitor", "e": "eval"})
    r = torch.tensor([[1.0, 0.0, float("nan")], [0.0, 1.0, float("nan")]] * 2)
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    out = monitor.observe_batch(r, adv, 2, step=1)
    assert "mo/cov/e" not in out and "mo/reward_corr/a__e" not in out and "mo/reward_corr/a__m" in out
    assert out["mo/cov/m"] < 0 and out["mo/events/negative_covariance/m"] == 1.0
    assert monitor.events[0]["message"].startswith("m (monitor): covariance with the optimised advantage")


def _summary(name, roles):
    return {
        "run_name": name,
        "algorithm": "linear",
        "objectives": ["a", "m"],
        "objective_roles": roles,
        "weighting_hyperparameters": {"weights": [1.0]} if roles.get("m") == "monitor" else {"weights": [0.5, 0.5]},
        "eval": [{"step": 0, "means": {"a": 0.1, "m": 0.2}}, {"step": 4, "means": {"a": 0.4, "m": 0.1}}],
        "seed": 0,
    }


def test_report_shows_roles_and_keeps_monitors_out_of_the_scalar():
    result = analyse([_summary("r1", {"a": "train", "m": "monitor"}), _summary("r2", {"a": "train", "m": "monitor"})])
    assert result["objective_roles"] == {"a": "train", "m": "monitor"}
    assert result["seed_level"]["preference"] == [1.0, 0.0]  # the linear runs' train weights; the monitor weighs 0
    intro = next(b for b in blocks(result, Plots()) if b[0] == "p")[1]
    assert "objectives (all maximised; role): a (train), m (monitor)." in intro
    card = render_model_card(_summary("r1", {"a": "train", "m": "monitor"}), "user/model")
    assert (
        "2. `m`: monitor" in card
        and "optimising 1 objective with the **linear** weighting (1 more scored but not weighted" in card
    )


def test_sweep_preferences_cover_the_train_objectives(tmp_path, tiny_model_dir):
    """A sweep over a recipe with a monitor draws 2-entry preference vectors (before: 3, refused at every point)."""
    recipe = _recipe(tmp_path, tiny_model_dir, objective_roles={"clarity": "monitor"}, weighting_kwargs={})
    body = {"recipe": recipe, "output_dir": str(tmp_path / "o"), "preferences": {"grid": 2}, "seeds": [0]}
    body["algorithms"] = {"linear": None}
    sweep = load_sweep(_sweep(tmp_path, body))
    assert sorted(p.preference for p in sweep.points) == [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]


def test_roles_that_leave_the_weighting_and_preference_conditioning_are_refused_together():
    """A drawn preference has one weight per objective; with a monitor the weighting sees fewer: one line, early."""
    from mo_align.configs import MOGRPOConfig

    block = {"sampler": "dirichlet", "alpha": 1.0, "template": "Preference: accuracy {accuracy:.2f}"}
    with pytest.raises(
        ValueError, match=r"preference_conditioning cannot be combined with objective_roles .*'clarity'"
    ):
        MOGRPOConfig(
            output_dir="/tmp/unused",
            use_cpu=True,
            weighting="linear",
            num_generations=4,
            per_device_train_batch_size=8,
            objective_roles={"clarity": "monitor"},
            preference_conditioning=block,
        )
