"""Verdicts with uncertainty in the trainer (issue "evidence"): eval CIs over prompts, paired Δ CIs, interference
events only on a significant drop, and the covariance law checked against what happened between evaluations."""

import math

import numpy as np
import pytest
import torch

from mo_align.diagnostics import InterferenceMonitor
from mo_align.stats import bootstrap_mean_ci, paired_delta_ci
from mo_align.trainer import MOGRPOTrainer
from tests.helpers import reward_has_digit, reward_short, reward_vowels, tiny_config, tiny_dataset


NAMES = ("reward_has_digit", "reward_short", "reward_vowels")


def test_eval_drop_event_needs_a_significant_drop_when_cis_are_given():
    mon = InterferenceMonitor(("a", "b"), tolerance=0.05)
    start = {"a": 0.5, "b": 0.5}
    means = {"a": 0.9, "b": 0.3}  # b fell by 0.2 > tolerance, but its CI crosses 0: not significant
    assert mon.observe_eval(means, start, 0.6, 0.5, 10, delta_ci={"a": (0.3, 0.5), "b": (-0.4, 0.01)}) == {}
    out = mon.observe_eval(means, start, 0.6, 0.5, 20, delta_ci={"a": (0.3, 0.5), "b": (-0.4, -0.05)})
    assert out == {"mo/events/eval_drop/b": 1.0} and "CI of Δ [-0.400, -0.050]" in mon.events[-1]["message"]


def test_law_check_compares_the_predicted_sign_with_the_significant_change():
    mon = InterferenceMonitor(("a", "b", "c"))
    r = torch.tensor([[1.0, 0.0, 0.2], [0.0, 1.0, 0.4], [1.0, 0.0, 0.1], [0.0, 1.0, 0.3]])
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])  # a covaries +, b -, c -
    mon.observe_batch(r, adv, group_size=2, step=1)
    mon.observe_batch(r, adv, group_size=2, step=2)
    out = mon.check_law(0, 2, {"a": (0.2, 0.1, 0.3), "b": (0.1, 0.05, 0.2), "c": (0.0, -0.1, 0.1)})
    assert out["mo/law/a/agreement"] == 1.0  # predicted up, went up
    assert out["mo/law/b/agreement"] == 0.0  # predicted down, went up: a disagreement
    assert "mo/law/c/agreement" not in out and out["mo/law/c/predicted_cov"] < 0  # not significant: no verdict
    assert [x["realised"] for x in mon.law] == ["up", "up", "not significant"]
    assert mon.interval_batches == 0 and mon.check_law(2, 4, {}) == {}  # the interval restarts


def test_trainer_eval_carries_cis_and_checks_the_law(tiny_model_dir, tmp_path):
    args = tiny_config(
        str(tmp_path),
        max_steps=4,
        eval_strategy="steps",
        eval_steps=2,
        eval_on_start=True,
        mo_eval_temperature=1.0,
        mo_eval_num_samples=2,
        mo_eval_loss=False,
        learning_rate=5e-2,
    )
    trainer = MOGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=[reward_has_digit, reward_short, reward_vowels],
        args=args,
        train_dataset=tiny_dataset(32),
        eval_dataset=tiny_dataset(12),
    )
    trainer.train()
    evals = [h for h in trainer.state.log_history if "eval_reward_short/mean" in h]
    assert [h["step"] for h in evals] == [0, 2, 4] and len(trainer.mo_eval_samples) == 3
    first = np.asarray(trainer.mo_eval_samples[0]["rewards"], dtype=float)
    assert first.shape == (12, 2, 3)  # prompts x samples x objectives
    for h, rec in zip(evals, trainer.mo_eval_samples, strict=True):
        cur = np.asarray(rec["rewards"], dtype=float)
        for k, n in enumerate(NAMES):
            mean, low, high = h[f"eval_{n}/mean"], h[f"eval_{n}/ci_low"], h[f"eval_{n}/ci_high"]
            assert low <= mean + 1e-9 and mean <= high + 1e-9
            assert bootstrap_mean_ci(cur[:, :, k]).estimate == pytest.approx(mean, abs=1e-6)
            d = paired_delta_ci(first[:, :, k], cur[:, :, k])
            assert d.estimate == pytest.approx(h[f"eval_{n}/delta"], abs=1e-6)  # the logged Δ, by another path
            assert (h[f"eval_{n}/delta_ci_low"], h[f"eval_{n}/delta_ci_high"]) == pytest.approx((d.low, d.high))
    law = trainer.summary()["law"]
    assert [(x["from"], x["to"]) for x in law] == [(0, 2)] * 3 + [(2, 4)] * 3
    for x in law:
        assert x["realised"] in ("up", "down", "not significant") and math.isfinite(x["predicted_cov"])
        low, high = x["ci"]
        assert (x["realised"] == "up") == (low > 0) and (x["realised"] == "down") == (high < 0)
        assert (
            x["held"] is None
            if x["realised"] == "not significant"
            else x["held"] == ((x["predicted_cov"] > 0) == (x["realised"] == "up"))
        )
    assert trainer.summary()["eval"][-1]["delta_ci"]["reward_short"] == [
        evals[-1]["eval_reward_short/delta_ci_low"],
        evals[-1]["eval_reward_short/delta_ci_high"],
    ]


def test_console_report_counts_where_the_law_held(tmp_path):
    """``mo-align report``'s console table counts the law checks of each run from its summary."""
    import json

    from mo_align.runs.report import format_console_table, write_report
    from mo_align.runs.summary import load_runs

    run = tmp_path / "linear-seed0"
    run.mkdir()
    law = [{"held": True}, {"held": False}, {"held": None}, {"held": True}]
    summary = {
        "run_name": "linear-seed0",
        "algorithm": "linear",
        "objectives": ["a", "b"],
        "law": law,
        "eval": [{"step": 0, "means": {"a": 0.1, "b": 0.5}}, {"step": 10, "means": {"a": 0.4, "b": 0.3}}],
    }
    (run / "mo_summary.json").write_text(json.dumps(summary))
    result = write_report(load_runs([run]), tmp_path / "report")
    assert result["runs"]["linear-seed0"]["law"] == {"held": 2, "failed": 1, "not_significant": 1}
    assert "covariance law, linear-seed0: held in 2 of 3 significant changes" in format_console_table(result)
