"""Interference monitor on hand-built batches, event detection, and the run summary written by the trainer."""

import json
import logging
import math

import pytest
import torch

from mo_align.diagnostics import (
    InterferenceMonitor,
    advantage_collapse_rate,
    pareto_dominated_fraction,
    per_group_covariance,
    reward_correlation,
    zero_variance_fraction,
)


# two groups of 3; objective a rises with the advantage, b falls with it, c is constant in group 2
R = torch.tensor(
    [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.0, 1.0, 1.0]]
)
A = torch.tensor([1.0, -0.5, -0.5, 0.5, 0.5, -1.0])


def test_per_group_covariance_hand_computed():
    cov = per_group_covariance(R, A, 3)
    # group 1: A mean 0; a centred (2/3, -1/3, -1/3) -> (2/3*1 + 1/3*.5 + 1/3*.5)/3 = 1/3; b = -1/3;
    #   c centred (1/3, -2/3, 1/3) -> (1/3 + 1/3 - 1/6)/3 = 1/6
    # group 2: A mean 0; a (1/3, 1/3, -2/3) -> (1/6 + 1/6 + 2/3)/3 = 1/3; b (-2/3, 1/3, 1/3) -> (-1/3 + 1/6 - 1/3)/3
    expected = torch.tensor([[1 / 3, -1 / 3, 1 / 6], [1 / 3, -1 / 6, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(cov, expected)


def test_monitor_batch_metrics_and_events_fire_once(caplog):
    mon = InterferenceMonitor(("a", "b", "c"), ema_tau=0.5, patience=3)
    with caplog.at_level(logging.WARNING, logger="mo_align"):
        history = [mon.observe_batch(R, A, 3, step) for step in range(1, 7)]
    m = history[0]
    assert m["mo/cov/a"] == pytest.approx(1 / 3) and m["mo/cov/b"] == pytest.approx(-0.25)
    assert m["mo/cov_neg_frac/b"] == 1.0 and m["mo/cov_neg_frac/a"] == 0.0
    assert m["mo/cov_ema/b"] == pytest.approx(-0.25)  # the first batch sets the EMA
    assert m["mo/zero_var_frac/c"] == 0.5 and m["mo/zero_var_frac/a"] == 0.0
    assert -1 <= m["mo/reward_corr/a__b"] < 0
    fired = [h for h in history if "mo/events/negative_covariance/b" in h]
    assert len(fired) == 1 and "mo/events/negative_covariance/b" in history[2]  # 3rd negative batch
    assert not any("mo/events/negative_covariance/a" in h for h in history)
    assert [e["objective"] for e in mon.events] == ["b"]
    assert sum("interference" in r.message for r in caplog.records) == 1


def test_clean_trajectory_has_no_event():
    mon = InterferenceMonitor(("a", "b"), patience=2)
    r = torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    for step in range(10):
        assert not any(k.startswith("mo/events") for k in mon.observe_batch(r, adv, 2, step))
    assert mon.events == []


def test_domination_and_collapse_rates():
    r = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    # group 1: best advantage on (1, 0), dominated by (1, 1); group 2: best (1, 0) vs (0, 1): not dominated
    assert pareto_dominated_fraction(r, torch.tensor([2.0, 1.0, 0.0, 1.0]), 2) == 0.5
    # pairs with distinct rewards: both groups; equal advantages only in group 2
    assert advantage_collapse_rate(r, torch.tensor([1.0, -1.0, 0.3, 0.3]), 2) == 0.5
    nan = torch.tensor([[float("nan"), 0.0], [1.0, 1.0]])
    assert pareto_dominated_fraction(nan, torch.tensor([1.0, 0.0]), 2) == 0.0


def test_zero_variance_and_correlation_helpers():
    r = torch.tensor([[1.0, 2.0], [1.0, 4.0], [0.0, 6.0], [1.0, 8.0]])
    torch.testing.assert_close(zero_variance_fraction(r, 2), torch.tensor([0.5, 0.0]))
    c = reward_correlation(r)
    x, y = r[:, 0] - r[:, 0].mean(), r[:, 1] - r[:, 1].mean()
    assert float(c[0, 1]) == pytest.approx(float((x * y).sum() / math.sqrt(float((x * x).sum() * (y * y).sum()))))


def test_eval_drop_event_needs_the_fixed_scalars_interval_above_zero():
    """The one interference rule (mo_align.stats.interfering): b's Δ interval below 0 fires only while the fixed
    scalar's Δ interval lies above 0; each objective fires once."""
    mon = InterferenceMonitor(("a", "b"))
    start, means, cis = {"a": 0.5, "b": 0.5}, {"a": 0.9, "b": 0.3}, {"a": (0.3, 0.5), "b": (-0.3, -0.1)}
    assert mon.observe_eval(means, start, 5, cis, (-0.01, 0.2)) == {}  # the scalar's interval reaches 0
    out = mon.observe_eval(means, start, 10, cis, (0.01, 0.2))
    assert out == {"mo/events/eval_drop/b": 1.0}
    assert "CI of Δ [-0.300, -0.100]" in mon.events[-1]["message"] and "[+0.010, +0.200]" in mon.events[-1]["message"]
    assert mon.observe_eval(means, start, 15, cis, (0.01, 0.2)) == {}  # once


def test_monitor_state_round_trip():
    a = InterferenceMonitor(("a", "b", "c"), patience=2)
    for step in range(3):
        a.observe_batch(R, A, 3, step)
    b = InterferenceMonitor(("a", "b", "c"), patience=2)
    b.load_state_dict(a.state_dict())
    assert a.observe_batch(R, A, 3, 4) == b.observe_batch(R, A, 3, 4)


def test_trainer_logs_diagnostics_and_writes_summary(tiny_model_dir, tmp_path):
    from mo_align.trainer import MOGRPOTrainer
    from tests.helpers import reward_has_digit, reward_short, reward_vowels, tiny_config, tiny_dataset

    trainer = MOGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=[reward_has_digit, reward_short, reward_vowels],
        args=tiny_config(str(tmp_path), max_steps=3, eval_strategy="steps", eval_steps=2, eval_on_start=True),
        train_dataset=tiny_dataset(32),
        eval_dataset=tiny_dataset(4),
    )
    trainer.train()
    logged = [h for h in trainer.state.log_history if "mo/cov/reward_vowels" in h]
    assert len(logged) == 3
    for key in ("mo/corr/reward_vowels", "mo/cov_ema/reward_short", "mo/pareto_dominated_frac",
                "mo/adv_collapse_rate", "mo/reward_corr/reward_has_digit__reward_vowels"):  # fmt: skip
        assert key in logged[0], key
    summary = json.loads((tmp_path / "mo_summary.json").read_text())
    assert summary["algorithm"] == "linear" and summary["objectives"][2] == "reward_vowels"
    assert [e["step"] for e in summary["eval"]] == [0, 2, 3]
    assert len(summary["weights"]) == 3 and len(summary["cov_ema"]) == 3
    assert summary["delta"]["reward_short"] == pytest.approx(
        summary["final"]["reward_short"] - summary["start"]["reward_short"]
    )


def test_summary_is_throttled_while_training_and_complete_at_the_end(tiny_model_dir, tmp_path, monkeypatch):
    from transformers import TrainerCallback

    from mo_align.trainer import MOGRPOTrainer
    from tests.helpers import reward_has_digit, reward_short, reward_vowels, tiny_config, tiny_dataset

    monkeypatch.setattr(MOGRPOTrainer, "SUMMARY_EVERY_S", 3600.0)
    path = tmp_path / "mo_summary.json"
    seen = []

    class Watch(TrainerCallback):  # added after the trainer's own hook: sees the file as each log step left it
        def on_log(self, args, state, control, **kw):
            seen.append(len(json.loads(path.read_text())["weights"]) if path.exists() else 0)

    trainer = MOGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=[reward_has_digit, reward_short, reward_vowels],
        args=tiny_config(str(tmp_path), max_steps=4),
        train_dataset=tiny_dataset(32),
    )
    trainer.add_callback(Watch())
    trainer.train()
    assert seen[:4] == [1, 1, 1, 1]  # written at the first log, then not again within SUMMARY_EVERY_S
    assert len(json.loads(path.read_text())["weights"]) == 4  # on_train_end wrote the whole run
