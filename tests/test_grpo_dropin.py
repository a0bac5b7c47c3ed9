"""MOGRPOTrainer as a drop-in ``trl.GRPOTrainer`` (and the best-model recipe).

Each test is a usage TRL documents for ``GRPOTrainer``, run against ``MOGRPOTrainer``; where a value can be
checked, the oracle is TRL's own code path (``GRPOTrainer`` itself, its reward scoring) or transformers' behaviour.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib
import subprocess
import sys

import pytest
import torch
from transformers import AutoTokenizer, EarlyStoppingCallback, Qwen2Config, Qwen2ForSequenceClassification
from trl import GRPOConfig, GRPOTrainer

import mo_align.trainer.evaluation
from mo_align.trainer import MOGRPOTrainer
from tests.helpers import reward_has_digit, reward_short, reward_vowels, tiny_config, tiny_dataset


@pytest.fixture(scope="module")
def reward_model_dir(tiny_model_dir, tmp_path_factory):
    """A tiny sequence-classification reward model (random head, fixed seed) with its tokenizer, as a Hub repo."""
    out = tmp_path_factory.mktemp("reward-model")
    config = Qwen2Config.from_pretrained(tiny_model_dir, num_labels=1)
    torch.manual_seed(0)
    Qwen2ForSequenceClassification(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return str(out)


def test_reward_model_is_scored_in_evaluation_as_trl_scores_it(
    tiny_model_dir, reward_model_dir, tmp_path, monkeypatch
):
    trainer = MOGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=[reward_has_digit, reward_model_dir],  # a path: TRL loads AutoModelForSequenceClassification
        args=tiny_config(str(tmp_path), per_device_eval_batch_size=4, mo_eval_loss=False),
        train_dataset=tiny_dataset(8),
        eval_dataset=tiny_dataset(6),
    )
    rm_name = trainer.objective_names[1]
    seen = {}
    score = mo_align.trainer.evaluation.score_rewards

    def spy(t, rows, completions, completion_ids):
        seen.update(rows=rows, completions=completions, ids=completion_ids)
        return score(t, rows, completions, completion_ids)

    monkeypatch.setattr(mo_align.trainer.evaluation, "score_rewards", spy)
    metrics = trainer.evaluate()
    # oracle: TRL's own training-time scoring of the very same completions
    prompts = [row["prompt"] for row in seen["rows"]]
    trl_scores = GRPOTrainer._calculate_rewards(trainer, seen["rows"], prompts, seen["completions"], seen["ids"])
    assert trl_scores[:, 1].std() > 0  # a real, varying reward-model score
    assert metrics[f"eval_{rm_name}/mean"] == pytest.approx(float(trl_scores[:, 1].mean()), rel=1e-5)
    assert metrics["eval_reward_has_digit/mean"] == pytest.approx(float(trl_scores[:, 0].mean()))


def test_iterable_eval_split_gives_the_map_style_result(tiny_model_dir, tmp_path):
    data = tiny_dataset(6)
    trainer = MOGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=[reward_has_digit, reward_short, reward_vowels],
        args=tiny_config(str(tmp_path), per_device_eval_batch_size=4),
        train_dataset=tiny_dataset(8),
        eval_dataset=data.to_iterable_dataset(),
    )
    streamed = trainer.evaluate()
    assert math.isfinite(streamed["eval_loss"])  # TRL's loop ran on the iterable split too
    mapped = trainer.evaluate(data)  # greedy decoding: the same prompts give the same completions
    for name in trainer.objective_names:
        assert streamed[f"eval_{name}/mean"] == pytest.approx(mapped[f"eval_{name}/mean"])
    assert streamed["eval_completion_length/mean"] == pytest.approx(mapped["eval_completion_length/mean"])


def test_dict_of_eval_datasets_is_evaluated_one_by_one_with_prefixed_metrics(tiny_model_dir, tmp_path):
    short, other = tiny_dataset(4), tiny_dataset(12).select(range(4, 12))
    trainer = MOGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=[reward_has_digit, reward_short],
        args=tiny_config(
            str(tmp_path),
            max_steps=2,
            eval_strategy="steps",
            eval_steps=2,
            eval_on_start=True,
            per_device_eval_batch_size=4,
        ),
        train_dataset=tiny_dataset(16),
        eval_dataset={"short": short, "other": other},
    )
    trainer.train()
    evals = [h for h in trainer.state.log_history if "eval_short_reward_short/mean" in h]
    assert [h["step"] for h in evals] == [0, 2]
    others = [h for h in trainer.state.log_history if "eval_other_reward_short/mean" in h]
    assert [h["step"] for h in others] == [0, 2]
    for h in evals + others:
        assert not any(k.startswith("eval_reward_short") for k in h)  # nothing under the unprefixed name
    assert math.isfinite(others[-1]["eval_other_loss"]) and math.isfinite(evals[-1]["eval_short_loss"])
    assert evals[0]["eval_short_reward_short/delta"] == 0.0 and others[0]["eval_other_reward_short/delta"] == 0.0
    delta = others[1]["eval_other_reward_short/mean"] - others[0]["eval_other_reward_short/mean"]
    assert others[1]["eval_other_reward_short/delta"] == pytest.approx(delta)  # each dataset vs its own start
    # the values are those of evaluating each dataset alone (greedy, parameters unchanged since step 2)
    alone = trainer.evaluate(other, metric_key_prefix="eval_alone")
    assert alone["eval_alone_reward_short/mean"] == pytest.approx(others[-1]["eval_other_reward_short/mean"])
    # the run summary follows the first dataset
    assert [e["step"] for e in trainer.summary()["eval"]] == [0, 2]
    assert trainer.summary()["eval"][-1]["means"]["reward_short"] == evals[-1]["eval_short_reward_short/mean"]


NO_ARGS = """
import json, sys
import transformers.training_args
from trl import GRPOTrainer
from mo_align.configs import MOGRPOConfig
from mo_align.trainer import MOGRPOTrainer
from tests.helpers import reward_has_digit, reward_short, tiny_dataset

# TRL's default config asks for bf16, which transformers refuses on a machine without a bf16 GPU (for GRPOTrainer
# too); pretend there is one: only construction is under test.
transformers.training_args.is_torch_bf16_gpu_available = lambda: True
funcs = [reward_has_digit, reward_short]
ours = MOGRPOTrainer(sys.argv[1], funcs, train_dataset=tiny_dataset(8))
theirs = GRPOTrainer(sys.argv[1], funcs, train_dataset=tiny_dataset(8))
mine, trl = ours.args.to_dict(), theirs.args.to_dict()
print(json.dumps({
    "is_mo_config": isinstance(ours.args, MOGRPOConfig),
    "output_dirs": [ours.args.output_dir, theirs.args.output_dir],
    "different": sorted(k for k in trl if mine[k] != trl[k]),
    "weighting": ours.weighting.name,
    "weights": ours.weighting.weights().tolist(),
    "trl_reward_weights": theirs.reward_weights.tolist(),
}))
"""


def test_no_args_builds_trls_default_config(tiny_model_dir, tmp_path):
    """``MOGRPOTrainer(model, reward_funcs)``: TRL's default ``GRPOConfig`` field for field, with linear weights of
    ones (TRL's default ``reward_weights``). A subprocess, so the pretended bf16 support stays there."""
    root = pathlib.Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-c", NO_ARGS, tiny_model_dir],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    name = tiny_model_dir.rstrip("/").split("/")[-1]
    assert out["is_mo_config"] and out["output_dirs"] == [f"{name}-GRPO", f"{name}-GRPO"]
    assert out["different"] == []  # every GRPOConfig field as TRL sets it
    assert out["weighting"] == "linear" and out["weights"] == out["trl_reward_weights"] == [1.0, 1.0]


R = torch.tensor([[1.0, 0.5], [0.0, 0.25], [1.0, 0.0], [0.0, 0.75], [1.0, 0.5], [0.5, 0.5], [1.0, 0.1], [0.0, 1.0]])


@pytest.mark.parametrize("aggregation", ["sum_then_normalize", "normalize_then_sum"])
def test_plain_grpo_config_is_mapped_and_gives_trls_advantages(tiny_model_dir, tmp_path, caplog, aggregation):
    config = GRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=4,
        report_to="none",
        reward_weights=[2.0, 0.5],
        multi_objective_aggregation=aggregation,
    )
    funcs = [reward_has_digit, reward_short]
    theirs = GRPOTrainer(model=tiny_model_dir, reward_funcs=funcs, args=config, train_dataset=tiny_dataset(8))
    with caplog.at_level(logging.INFO, logger="mo_align"):
        ours = MOGRPOTrainer(model=tiny_model_dir, reward_funcs=funcs, args=config, train_dataset=tiny_dataset(8))
    estimator = {"sum_then_normalize": "grpo", "normalize_then_sum": "gdpo"}[aggregation]
    assert (ours.args.weighting, ours.args.weighting_kwargs) == ("linear", {"weights": [2.0, 0.5]})
    assert ours.args.advantage_estimator == estimator
    assert config.reward_weights == [2.0, 0.5]  # the user's config is left as it was
    assert any(f"advantage_estimator: {estimator}" in r.getMessage() for r in caplog.records)
    assert ours.args.steps_per_generation == theirs.args.steps_per_generation
    # oracle: TRL's own advantages for the same reward matrix
    theirs._calculate_rewards = lambda *a, **k: R.clone()

    def fixed(*a, **k):
        ours.mo_rewards = R.clone()
        return R.clone()

    ours._calculate_rewards = fixed
    inputs = [tiny_dataset(8)[i // 4] for i in range(8)]
    torch.manual_seed(0)
    expected = theirs._generate_and_score_completions(inputs)["advantages"]
    torch.manual_seed(0)
    got = ours._generate_and_score_completions(inputs)["advantages"]
    assert torch.equal(got, expected), (got, expected)


def test_best_model_and_early_stopping_on_a_per_objective_metric(tiny_model_dir, tmp_path):
    """``metric_for_best_model: reward_short/mean`` with ``load_best_model_at_end`` and ``EarlyStoppingCallback``:
    transformers finds the metric, tracks the best checkpoint and stops (patience 1 with an impossible threshold)."""
    args = tiny_config(
        str(tmp_path),
        max_steps=8,
        learning_rate=5e-2,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="steps",
        save_steps=2,
        per_device_eval_batch_size=4,
        load_best_model_at_end=True,
        metric_for_best_model="reward_short/mean",
        greater_is_better=True,
        mo_eval_loss=False,
    )
    trainer = MOGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=[reward_has_digit, reward_short],
        args=args,
        train_dataset=tiny_dataset(32),
        eval_dataset=tiny_dataset(4),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=1, early_stopping_threshold=10.0)],
    )
    trainer.train()
    evals = [h for h in trainer.state.log_history if "eval_reward_short/mean" in h]
    # the first evaluation sets the best metric; the next cannot improve by 10, so training stops after it
    assert [h["step"] for h in evals] == [2, 4] and trainer.state.global_step == 4
    assert trainer.state.best_metric == evals[0]["eval_reward_short/mean"]
    assert trainer.state.best_model_checkpoint.endswith("checkpoint-2")


def test_load_best_model_on_eval_loss_needs_mo_eval_loss(tmp_path):
    with pytest.raises(ValueError, match="load_best_model_at_end selects on eval_loss"):
        tiny_config(
            str(tmp_path),
            eval_strategy="steps",
            save_strategy="steps",
            load_best_model_at_end=True,
            mo_eval_loss=False,
        )
