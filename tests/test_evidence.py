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


def test_eval_drop_event_needs_a_significant_drop():
    mon = InterferenceMonitor(("a", "b"), tolerance=0.05)
    start = {"a": 0.5, "b": 0.5}
    means = {"a": 0.9, "b": 0.3}  # b fell by 0.2 > tolerance, but its CI crosses 0: not significant
    assert mon.observe_eval(means, start, 10, {"a": (0.3, 0.5), "b": (-0.4, 0.01)}, (0.05, 0.2)) == {}
    out = mon.observe_eval(means, start, 20, {"a": (0.3, 0.5), "b": (-0.4, -0.05)}, (0.05, 0.2))
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
        # the prediction: the sign of the covariance where its t interval over the interval's 2 batches excludes 0
        c_low, c_high = x["cov_ci"]
        assert x["batches"] == 2 and c_low <= x["predicted_cov"] <= c_high
        assert x["predicted"] == ("up" if c_low > 0 else "down" if c_high < 0 else "undetermined")
        decided = x["realised"] != "not significant" and x["predicted"] != "undetermined"
        assert x["held"] == (x["predicted"] == x["realised"] if decided else None)
        assert np.asarray(x["reward_cov"]).shape == (3, 3)
    assert trainer.summary()["eval"][-1]["delta_ci"]["reward_short"] == [
        evals[-1]["eval_reward_short/delta_ci_low"],
        evals[-1]["eval_reward_short/delta_ci_high"],
    ]


def test_law_prediction_carries_its_interval_over_the_batches():
    """Three batches of one group of 2 rows, advantages (+1, −1): objective a's rewards (2c, 0) give Cov = c with
    c = 0.1, 0.2, 0.3 (mean 0.2, s = 0.1: t interval 0.2 ± 4.302653 · 0.1/√3 straddles 0: undetermined, no verdict
    although a went up); b's rewards (1, 0) give Cov = 0.5 every batch (no spread: up), b went down: a failure. The
    interval's within-group reward covariance, by hand: rows ±(c, 1/2) -> [[c², c/2], [c/2, 1/4]], averaged over c."""
    mon = InterferenceMonitor(("a", "b"))
    adv = torch.tensor([1.0, -1.0])
    for step, c in enumerate((0.1, 0.2, 0.3), start=1):
        mon.observe_batch(torch.tensor([[2 * c, 1.0], [0.0, 0.0]]), adv, group_size=2, step=step)
    out = mon.check_law(0, 3, {"a": (0.2, 0.1, 0.3), "b": (-0.2, -0.3, -0.1)})
    a, b = mon.law
    half = 4.302652729911275 * 0.1 / math.sqrt(3)
    assert a["predicted_cov"] == pytest.approx(0.2) and a["cov_ci"] == pytest.approx([0.2 - half, 0.2 + half])
    assert (a["predicted"], a["realised"], a["held"], a["batches"]) == ("undetermined", "up", None, 3)
    assert (b["predicted"], b["realised"], b["held"]) == ("up", "down", False)
    assert b["cov_ci"] == pytest.approx([0.5, 0.5], abs=1e-9)
    assert np.asarray(a["reward_cov"]) == pytest.approx(np.array([[(0.01 + 0.04 + 0.09) / 3, 0.1], [0.1, 0.25]]))
    assert "mo/law/a/agreement" not in out and out["mo/law/b/agreement"] == 0.0
    mon.observe_batch(torch.tensor([[0.2, 1.0], [0.0, 0.0]]), adv, group_size=2, step=4)
    mon.check_law(3, 4, {"a": (0.2, 0.1, 0.3), "b": (0.2, 0.1, 0.3)})
    assert [x["predicted"] for x in mon.law[2:]] == ["undetermined"] * 2  # one batch: no interval


def test_within_group_reward_covariance_by_hand():
    """Group 1 rows (1, 0), (0, 1): centred ±(1/2, −1/2); group 2 rows equal: nothing. Pooled over 4 rows."""
    from mo_align.diagnostics import within_group_reward_cov

    r = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    assert within_group_reward_cov(r, 2).numpy() == pytest.approx(np.array([[0.125, -0.125], [-0.125, 0.125]]))
    with_nan = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, float("nan")], [1.0, 1.0]])  # group 2 has one usable row
    assert within_group_reward_cov(with_nan, 2).numpy() == pytest.approx(np.array([[0.25, -0.25], [-0.25, 0.25]]))


def test_console_report_scores_the_law_against_the_baselines(tmp_path):
    """``mo-align report``'s console: the law's hit rate beside the two baselines', from the summary's records."""
    import json

    from mo_align.runs.report import format_console_table, write_report
    from mo_align.runs.summary import load_runs

    run = tmp_path / "linear-seed0"
    run.mkdir()

    def rec(obj, predicted, realised, delta):
        return {"from": 0, "to": 10, "objective": obj, "predicted": predicted, "predicted_cov": 0.1,
                "realised": realised, "delta": delta, "ci": [delta - 0.01, delta + 0.01],
                "held": None if "undetermined" in (predicted,) or realised == "not significant" else predicted == realised,
                "reward_cov": [[0.25, 0.05], [0.05, 0.25]]}  # fmt: skip

    law = [rec("a", "up", "up", 0.2), rec("b", "up", "down", -0.2)]
    summary = {
        "run_name": "linear-seed0",
        "algorithm": "linear",
        "objectives": ["a", "b"],
        "law": law,
        "weights": [{"step": s, "weights": {"a": 0.5, "b": 0.5}} for s in range(1, 11)],
        "eval": [{"step": 0, "means": {"a": 0.1, "b": 0.5}}, {"step": 10, "means": {"a": 0.3, "b": 0.3}}],
    }
    (run / "mo_summary.json").write_text(json.dumps(summary))
    result = write_report(load_runs([run]), tmp_path / "report")
    assert result["runs"]["linear-seed0"]["law"] == {"held": 1, "failed": 1, "not_significant": 0}
    console = format_console_table(result)
    # equal weights: both are "the largest", both predicted up; C w = (0.15, 0.15) > 0: fixed by construction
    assert (
        "covariance law, linear-seed0: hit rate 1/2 (50%) vs baselines largest weight rises 1/2 (50%), previous "
        "change's sign 0/0 (of 2 checks: 0 changes not significant, 0 covariance signs undetermined)" in console
    )
    assert "  fixed by construction in 1 of 1 intervals" in console
    assert "covariance law, all runs: hit rate law 1/2 (50%), largest weight rises 1/2 (50%)" in console
