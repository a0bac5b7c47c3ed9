"""The lab's reward-design variant ``linear_conditioned``: the Linear recipe trained with conciseness conditioned on
accuracy (mo_align.objectives.conditions), declared as one lab rule, run by name and trained for real."""

import json

import pytest

from mo_align.lab import scaling
from mo_align.lab.protocol import protocol_markdown
from mo_align.lab.run import run_lab


def test_the_variant_is_the_linear_recipe_plus_one_declared_condition():
    plain, conditioned = scaling.lab_settings("linear", 50), scaling.lab_settings("linear_conditioned", 50)
    assert conditioned.pop("objective_conditions") == {
        "conciseness": {"only_if": {"objective": "accuracy", "at_least": 1.0}, "otherwise": 0.0}
    }
    assert conditioned.pop("mo_run_label") == "linear_conditioned" and plain.pop("mo_run_label") == "linear"
    for key in ("output_dir", "run_name"):
        assert conditioned.pop(key) == "linear_conditioned-seed0" and plain.pop(key) == "linear-seed0"
    assert conditioned == plain  # the same weights, estimator, KL, lr, batch layout: only the condition differs
    assert [r.field for r in scaling.rules_for("linear_conditioned")][-1] == "objective_conditions"
    assert "objective_conditions" not in [r.field for r in scaling.rules_for("linear")]
    # the settings are copies: a run cannot change the rule's value for the next one
    conditioned_again = scaling.lab_settings("linear_conditioned", 50)
    conditioned_again["objective_conditions"]["conciseness"]["otherwise"] = 1.0
    assert scaling.CONDITION_RULE.lab["conciseness"]["otherwise"] == 0.0
    # not in make lab's default list; the protocol table declares it
    assert "linear_conditioned" not in scaling.ALGORITHMS and scaling.known_algorithm("linear_conditioned")
    row = next(line for line in protocol_markdown().splitlines() if line.startswith("| objective_conditions |"))
    assert "| linear_conditioned | reward |" in row and "'at_least': 1.0" in row


def test_an_unknown_label_names_the_variants(tmp_path):
    with pytest.raises(SystemExit, match=r"unknown algorithm\(s\) \['linear_conditional'\].*'linear_conditioned'"):
        run_lab(["linear_conditional"], [0], 2, 2, str(tmp_path), 1, 3, str(tmp_path / "cache"))


def test_a_conditioned_lab_run_trains_with_the_condition(tmp_path):
    """Two real GRPO steps on a 3-step warm start: the run records the condition, and its per-sample evaluation keeps
    the raw conciseness (the condition shapes the training signal, the lab compares raw objectives). With
    ``save_model`` (the lab's ``--save-models``) the trained policy is kept, loadable, and differs from the warm
    start."""
    from mo_align.lab.run import train_one
    from mo_align.lab.sft import warm_start

    sft_dir, meta = warm_start(str(tmp_path / "cache"), steps=3, batch=16)
    out = tmp_path / "linear_conditioned-seed0"
    train_one("linear_conditioned", 0, sft_dir, meta["reference_length"], str(out), 2, 2, save_model=True)
    summary = json.loads((out / "mo_summary.json").read_text())
    assert summary["algorithm"] == "linear_conditioned"
    assert summary["objective_conditions"] == {
        "conciseness": {"only_if": {"objective": "accuracy", "at_least": 1.0}, "otherwise": 0.0}
    }
    scores = json.loads((out / "lab_eval_scores.json").read_text())
    assert scores["objectives"] == ["accuracy", "conciseness", "clarity"]
    last = scores["evals"][-1]["rewards"]  # (prompts, samples, 3)
    wrong_but_scored = [s for prompt in last for s in prompt if s[0] < 1.0 and s[1] > 0.0]
    assert wrong_but_scored, "the recorded conciseness is the raw score (a wrong answer keeps its own)"
    import torch
    from safetensors.torch import load_file

    record = json.loads((out / "model" / "lab_model.json").read_text())
    assert record == {"warm_start": sft_dir, "reference_length": meta["reference_length"], "steps": 2, "seed": 0,
                      "algorithm": "linear_conditioned", "eta": "paper"}  # fmt: skip
    trained, start = load_file(str(out / "model" / "model.safetensors")), load_file(f"{sft_dir}/model.safetensors")
    assert trained.keys() == start.keys() and (out / "model" / "tokenizer.json").exists()
    assert any(not torch.equal(trained[k], start[k]) for k in start), "the saved policy is the trained one"


def test_the_variants_known_answer_prediction_uses_the_conditioned_profiles():
    """Hand-computed: conciseness is kept where accuracy is 1 and 0 elsewhere, then each style's means."""
    import numpy as np

    from mo_align.lab.fidelity import variant_profiles
    from mo_align.lab.known_answer import MIN_STYLE_SAMPLES, lead, predict_style

    one_prompt = [[1.0, 0.2, 1.0], [0.0, 1.0, 1.0], [1.0, 0.9, 1.0], [0.0, 1.0, 0.0]]  # A, G, G, B
    reps = MIN_STYLE_SAMPLES  # every style above the profile's minimum count
    rewards = np.tile(np.asarray([one_prompt]), (reps, 1, 1))
    labels = np.tile(np.asarray([["A", "G", "G", "B"]], dtype=object), (reps, 1))
    shaped = variant_profiles(labels, rewards, ["accuracy", "conciseness", "clarity"], "linear_conditioned")
    assert shaped["A"]["means"] == pytest.approx([1.0, 0.2, 1.0])
    assert shaped["G"]["means"] == pytest.approx([0.5, 0.45, 1.0])  # (0 + 0.9) / 2: the wrong G answer scores 0
    assert shaped["B"]["means"] == pytest.approx([0.0, 0.0, 0.0])  # unconditioned: conciseness 1.0
    assert shaped["G"]["share"] == pytest.approx(0.5) and shaped["A"]["count"] == reps
    w = [1 / 3, 1 / 3, 1 / 3]
    assert predict_style(shaped, w) == "A" and lead(shaped, w) == pytest.approx((2.2 - 1.95) / 3)
