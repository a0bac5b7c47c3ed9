"""Conditioned objectives (``reward_kwargs: {x: {only_if: {...}, otherwise: ...}}``, mo_align.objectives.conditions):
hand-computed advantages in both ``otherwise`` modes, the strategies that cannot honour ``not_applicable``, config
errors in one line before any model is loaded, and a tiny end-to-end run."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from mo_align import train as train_mod
from mo_align.objectives import ObjectivePlan, not_applicable_refusal, parse_conditions
from mo_align.objectives.conditions import apply_conditions
from mo_align.rewards import get_reward_funcs, reward_factory
from mo_align.weightings import WEIGHTINGS, LinearWeighting, ObjectiveStats, get_weighting
from tests.test_cli import no_model, tiny_recipe  # noqa: F401 (fixture)


NAMES = ("accuracy", "conciseness", "clarity")
# N = 8 completions, G = 4 (two prompts), K = 3 objectives; conciseness counts only where accuracy >= 1
ACC = [1, 1, 0, 0, 1, 0, 0, 0]
CON = [1, 0, 1, 1, 0, 1, 1, 0]
CLA = [1, 0, 0, 1, 0, 1, 1, 0]
R = torch.tensor([ACC, CON, CLA], dtype=torch.float32).T
NAN = math.nan

# group z-scores (x - mean) / (std + 1e-4), std Bessel-corrected, of the patterns that occur:
H2 = 0.5 / (math.sqrt(1 / 3) + 1e-4)  # [1, 1, 0, 0] -> ±H2 (mean 1/2, std sqrt(1/3))
Q1 = 0.75 / (0.5 + 1e-4)  # [1, 0, 0, 0] -> [Q1, -Q3, -Q3, -Q3] (mean 1/4, std 1/2)
Q3 = 0.25 / (0.5 + 1e-4)
H1 = 0.5 / (math.sqrt(0.5) + 1e-4)  # [1, 0] (two applicable rows) -> ±H1 (mean 1/2, std sqrt(1/2))


def _plan(otherwise):
    return ObjectivePlan.build(
        NAMES, None, {"conciseness": {"only_if": {"objective": "accuracy", "at_least": 1.0}, "otherwise": otherwise}}
    )


def _whiten(s):
    """(s - mean) / (Bessel std + 1e-4) over the batch (GDPO's last step), by hand."""
    mean = sum(s) / len(s)
    std = math.sqrt(sum((x - mean) ** 2 for x in s) / (len(s) - 1))
    return [(x - mean) / (std + 1e-4) for x in s]


# (otherwise, conciseness as the weighting sees it, its per-objective advantages, GDPO's s = z_acc + z_con + z_cla)
CASES = [
    (
        0,
        [1, 0, 0, 0, 0, 0, 0, 0],  # accuracy 0 on rows 2, 3 (group 1) and 5, 6, 7 (group 2): replaced by 0
        [Q1, -Q3, -Q3, -Q3, 0, 0, 0, 0],  # group 2 is constant (all 0): advantage 0
        [2 * H2 + Q1, -Q3, -2 * H2 - Q3, -Q3, Q1 - H2, -Q3 + H2, -Q3 + H2, -Q3 - H2],
    ),
    (
        "not_applicable",
        [1, 0, NAN, NAN, 0, NAN, NAN, NAN],
        [H1, -H1, 0, 0, 0, 0, 0, 0],  # group 1: mean and std over its two applicable rows; group 2: one row, 0
        [2 * H2 + H1, -H1, -2 * H2, 0.0, Q1 - H2, -Q3 + H2, -Q3 + H2, -Q3 - H2],
    ),
]


@pytest.mark.parametrize(("otherwise", "conditioned", "advantages", "gdpo_sum"), CASES, ids=["zero", "not_applicable"])
def test_hand_computed_advantages(otherwise, conditioned, advantages, gdpo_sum):
    plan = _plan(otherwise)
    r = plan.weighted(R)  # every objective trained: (8, 3)
    expected = torch.tensor([ACC, conditioned, CLA], dtype=torch.float32).T
    torch.testing.assert_close(r, expected, equal_nan=True)
    assert torch.equal(R[:, 1], torch.tensor(CON, dtype=torch.float32))  # the raw matrix is left alone
    lengths = torch.full((8,), 10.0)
    for estimator in ("grpo", "gdpo"):  # per-objective advantages: group statistics over applicable rows only
        adv = ObjectiveStats(r, 4, lengths, estimator=estimator).objective_advantages()
        torch.testing.assert_close(adv[:, 1], torch.tensor(advantages), atol=1e-5, rtol=0)
        torch.testing.assert_close(adv[:, 0], torch.tensor([H2, H2, -H2, -H2, Q1, -Q3, -Q3, -Q3]), atol=1e-5, rtol=0)
    combined = LinearWeighting(3, weights=[1.0, 1.0, 1.0]).combine(ObjectiveStats(r, 4, lengths, estimator="gdpo"))
    torch.testing.assert_close(combined, torch.tensor(_whiten(gdpo_sum)), atol=1e-5, rtol=0)


def test_linear_grpo_would_read_not_applicable_as_zero_so_it_is_refused():
    """A reward-space weighted sum skips NaN entries, i.e. counts them as 0: not_applicable would silently be
    otherwise: 0 there, so the combination is refused (one line naming the field and the way out)."""
    lengths = torch.full((8,), 10.0)
    na, zero = _plan("not_applicable"), _plan(0)
    w = LinearWeighting(3, weights=[1.0, 1.0, 1.0])
    same = [w.combine(ObjectiveStats(p.weighted(R), 4, lengths)) for p in (na, zero)]
    torch.testing.assert_close(same[0], same[1])
    why = not_applicable_refusal(na.conditions, na.train_names, "linear", {}, "grpo")
    assert why.startswith("reward_kwargs[conciseness].otherwise: not_applicable needs each objective normalised")
    assert "'linear'" in why and "'grpo'" in why and len(why) <= 300 and "\n" not in why
    assert not_applicable_refusal(na.conditions, na.train_names, "linear", {}, "gdpo") is None
    assert not_applicable_refusal(zero.conditions, zero.train_names, "linear", {}, "grpo") is None


REFUSED = {  # reward-space strategies that scalarize before normalising (Tchebycheff's max even under GDPO)
    ("linear", "grpo"),
    ("dynamic", "grpo"),
    ("smooth_tchebycheff", "grpo"),
    ("ctwa", "grpo"),
    ("tchebycheff", "grpo"),
    ("tchebycheff", "gdpo"),
}


@pytest.mark.parametrize("estimator", ["grpo", "gdpo"])
@pytest.mark.parametrize("key", sorted(WEIGHTINGS))
def test_every_strategy_handles_not_applicable_or_is_refused(key, estimator):
    """Each built-in strategy either leaves a not-applicable row out of that objective (its advantage for it is 0,
    whatever value the NaN stood for) or is refused in one line."""
    plan = _plan("not_applicable")
    why = not_applicable_refusal(plan.conditions, plan.train_names, key, {}, estimator)
    assert (why is not None) == ((key, estimator) in REFUSED), why
    if why is not None:
        assert f"weighting {key!r}" in why and len(why) <= 300
        return
    r = plan.weighted(R)
    stats = ObjectiveStats(r, 4, torch.full((8,), 10.0), estimator=estimator, objective_names=NAMES)
    adv = stats.objective_advantages()
    assert torch.isfinite(adv).all() and (adv[torch.isnan(r)] == 0).all()
    combined = get_weighting(key, 3).combine(stats)
    assert combined.shape == (8,) and torch.isfinite(combined).all()


def test_conditions_chain_in_order_and_at_most():
    """``a`` only if ``b`` <= 0.5, ``b`` only if ``c`` >= 1: ``a`` reads ``b``'s conditioned value."""
    names = ["a", "b", "c"]
    cond = parse_conditions(
        {
            "a": {"only_if": {"objective": "b", "at_most": 0.5}, "otherwise": -1},
            "b": {"only_if": {"objective": "c", "at_least": 1}, "otherwise": 0.9},
        },
        names,
        "reward_kwargs",
    )
    r = torch.tensor([[5.0, 0.2, 1.0], [5.0, 0.2, 0.0], [5.0, NAN, 1.0]])
    out, met = apply_conditions(r, names, cond)
    # row 0: b kept (c = 1), 0.2 <= 0.5 -> a kept; row 1: b -> 0.9 (c = 0) -> a -> -1; row 2: b NaN -> a -> -1
    torch.testing.assert_close(
        out, torch.tensor([[5.0, 0.2, 1.0], [-1.0, 0.9, 0.0], [-1.0, NAN, 1.0]]), equal_nan=True
    )
    assert met["a"].tolist() == [True, False, False] and met["b"].tolist() == [True, False, True]


@reward_factory
class KwargsRecorder:
    """A declared factory that records the keyword arguments it is built with."""

    seen: list[dict] = []  # noqa: RUF012

    def __init__(self, **kwargs):
        KwargsRecorder.seen.append(dict(kwargs))
        self.__name__ = "recorder"

    def __call__(self, prompts, completions, **kw):
        return [0.0] * len(completions)


def test_only_if_and_otherwise_never_reach_the_reward_function():
    KwargsRecorder.seen.clear()
    path = f"{__name__}.KwargsRecorder"
    kwargs = {path: {"scale": 2, "only_if": {"objective": "accuracy", "at_least": 1}, "otherwise": 0}}
    kwargs["accuracy"] = {"mode": "reference", "only_if": {"objective": path, "at_most": 0}}  # a built-in class too
    get_reward_funcs(["accuracy", path], kwargs)
    assert KwargsRecorder.seen == [{"scale": 2}]


BAD = [
    ({"only_if": {"objective": "acc", "at_least": 1}}, "reward_kwargs[conciseness].only_if.objective: 'acc' is not"),
    ({"only_if": {"objective": "conciseness", "at_least": 1}}, "cannot be conditioned on itself"),
    ({"only_if": {"objective": "accuracy"}}, "reward_kwargs[conciseness].only_if needs at_least and/or at_most"),
    ({"only_if": {"objective": "accuracy", "above": 1}}, "reward_kwargs[conciseness].only_if: unknown key 'above'"),
    ({"only_if": {"objective": "accuracy", "at_least": 1}, "otherwise": "skip"}, "otherwise must be a number or"),
    ({"only_if": {"objective": "accuracy", "at_least": 1, "at_most": 0}}, "at_least 1 > at_most 0, never met"),
    ({"only_if": {"objective": "accuracy", "at_least": "high"}}, "only_if.at_least must be a finite number"),
    ({"otherwise": 0}, "reward_kwargs[conciseness].only_if must be a mapping"),
]


@pytest.mark.parametrize(("condition", "message"), BAD, ids=[m[:30] for _, m in BAD])
@pytest.mark.usefixtures("no_model")
def test_bad_condition_is_one_line_before_the_model(tmp_path, tiny_model_dir, capsys, condition, message):
    recipe = tiny_recipe(tmp_path, tiny_model_dir, reward_kwargs={"conciseness": condition})
    with pytest.raises(SystemExit) as exc:
        train_mod.cli(["--config", recipe])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"mo-align: error: {recipe}: "), err
    assert message in err[0]


@pytest.mark.usefixtures("no_model")
def test_cycle_and_weighting_refusal_are_one_line(tmp_path, tiny_model_dir, capsys):
    cycle = {
        "conciseness": {"only_if": {"objective": "clarity", "at_least": 1}},
        "clarity": {"only_if": {"objective": "conciseness", "at_least": 1}},
    }
    na = {"conciseness": {"only_if": {"objective": "accuracy", "at_least": 1}, "otherwise": "not_applicable"}}
    for kwargs, message in (
        (cycle, "reward_kwargs[clarity].only_if: the conditions form a cycle (clarity -> conciseness -> clarity)"),
        (na, "reward_kwargs[conciseness].otherwise: not_applicable needs each objective normalised on its own"),
    ):
        recipe = tiny_recipe(tmp_path, tiny_model_dir, reward_kwargs=kwargs)
        with pytest.raises(SystemExit):
            train_mod.cli(["--config", recipe])
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_tiny_run_with_a_condition(tmp_path, tiny_model_dir):
    """Two steps from a recipe: clarity counts only where conciseness >= 1 (not applicable elsewhere, GDPO). The
    parameters move, ``mo/conditioned/clarity/applicable_frac`` is logged and equals the fraction of completions
    with conciseness 1 (TRL's raw ``rewards/conciseness/mean``: conciseness is 0/1 and never NaN), and the run
    summary records the condition."""
    import json

    from safetensors.torch import load_file

    condition = {"only_if": {"objective": "conciseness", "at_least": 1.0}, "otherwise": "not_applicable"}
    recipe = tiny_recipe(
        tmp_path,
        tiny_model_dir,
        reward_kwargs={"clarity": condition},
        advantage_estimator="gdpo",
        eval_strategy="no",
        eval_on_start=False,
    )
    parsed = train_mod.parse_args(["--config", recipe, "--log_level", "warning"])
    trainer = train_mod.main(*parsed, recipe=recipe)
    before = load_file(f"{tiny_model_dir}/model.safetensors")
    after = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)
    logged = [h for h in trainer.state.log_history if "mo/conditioned/clarity/applicable_frac" in h]
    assert len(logged) == 2
    for h in logged:
        assert h["mo/conditioned/clarity/applicable_frac"] == pytest.approx(h["rewards/conciseness/mean"], abs=1e-6)
    summary = json.loads((tmp_path / "out" / "mo_summary.json").read_text())
    assert summary["objective_conditions"] == {"clarity": {**condition, "otherwise": "not_applicable"}}
    recorded = yaml.safe_load((tmp_path / "out" / "mo_recipe.yaml").read_text())
    assert recorded["reward_kwargs"]["clarity"] == condition


def test_rewards_package_stays_free_of_trl():
    """The math-verify server (``python -m mo_align.rewards.verify``) imports ``mo_align.rewards``, which reads the
    condition keys: importing TRL there made transformers print a banner on the server's stdout (its message pipe)
    when ``WANDB_MODE`` is set, and the trainer's warmup waited forever for a greeting."""
    import subprocess
    import sys

    code = "import sys, mo_align.rewards; print(sorted(m for m in ('trl', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
