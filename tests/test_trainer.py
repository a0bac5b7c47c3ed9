"""End-to-end MOGRPOTrainer runs on the offline tiny model (1 process, CPU)."""

import math
import os

import pytest
import torch
from transformers import TrainerCallback

from mo_align.trainer import MO_STATE_FILE, MOGRPOTrainer
from mo_align.weightings import WEIGHTINGS, LinearWeighting, ObjectiveStats, weighting_class
from tests.helpers import DriftWeighting, reward_has_digit, reward_short, reward_vowels, tiny_config, tiny_dataset


REWARDS = [reward_has_digit, reward_short, reward_vowels]
NAMES = ("reward_has_digit", "reward_short", "reward_vowels")


def build(tiny_model_dir, out, weighting=None, **overrides):
    return MOGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=list(REWARDS),
        args=tiny_config(str(out), **overrides),
        train_dataset=tiny_dataset(32),
        weighting=weighting,
    )


def test_train_linear_changes_params_and_logs_mo_metrics(tiny_model_dir, tmp_path):
    trainer = build(
        tiny_model_dir, tmp_path, advantage_estimator="reinforce_pp", weighting_kwargs={"weights": [0.2, 0.5, 0.3]}
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p)]
    assert len(changed) == len(before), f"unchanged: {set(before) - set(changed)}"
    logs = [h for h in trainer.state.log_history if "mo/weight/reward_short" in h]
    assert len(logs) == 2
    for h in logs:
        assert h["mo/weight/reward_short"] == pytest.approx(0.5)
        for name in NAMES:
            for key in (f"rewards/{name}/mean", f"mo/adv/{name}/mean", f"mo/adv/{name}/std"):
                assert key in h and h[key] == h[key], key  # present and not NaN
        assert not [k for k in h if k.startswith("mo/reward/")]  # TRL's rewards/<name>/mean is the one series
        means = [h[f"rewards/{n}/mean"] for n in NAMES]
        # TRL's reward keeps TRL's meaning: mean of the sum with reward_weights = ones (no NaN rows here)
        assert h["reward"] == pytest.approx(sum(means), abs=1e-5)
        # the optimised signal has its own key: sum_k w_k mean(r_k)
        assert h["mo/scalar/mean"] == pytest.approx(sum(w * m for w, m in zip([0.2, 0.5, 0.3], means)), abs=1e-5)
        assert h["mo/scalar/std"] >= 0 and h["reward_std"] >= 0
    assert any(h["reward"] != pytest.approx(h["mo/scalar/mean"]) for h in logs)  # two different quantities
    assert "train_loss" in trainer.state.log_history[-1]


def test_advantages_replaced_and_per_objective_advantages_reach_the_loss(tiny_model_dir, tmp_path):
    class NeedsObjAdv(LinearWeighting):
        needs_objective_advantages = True

    seen = {}
    trainer = build(tiny_model_dir, tmp_path, weighting=NeedsObjAdv(3, weights=[1.0, 0.0, 0.0]), max_steps=1)
    original_gen = trainer._generate_and_score_completions

    def spy_gen(inputs):
        out = original_gen(inputs)
        seen["out"] = {k: v.clone() for k, v in out.items() if isinstance(v, torch.Tensor)}
        seen["r"] = trainer.mo_rewards.clone()
        return out

    original_loss = MOGRPOTrainer.compute_loss

    def spy_loss(self, model, inputs, *a, **k):
        seen["inputs_keys"] = set(inputs)
        result = original_loss(self, model, inputs, *a, **k)
        seen["objective_advantages"] = self.objective_advantages
        return result

    trainer._generate_and_score_completions = spy_gen
    trainer.compute_loss = spy_loss.__get__(trainer)
    trainer.train()
    r = seen["r"]
    lengths = seen["out"]["completion_mask"].sum(1).float()
    stats = ObjectiveStats(rewards=r, group_size=4, lengths=lengths)
    # weights [1, 0, 0]: the advantages are those of objective 0 alone
    assert torch.equal(seen["out"]["advantages"], stats.normalize(r[:, 0].contiguous()))
    assert seen["out"]["mo_objective_advantages"].shape == (8, 3)
    assert "mo_objective_advantages" in seen["inputs_keys"]
    assert seen["objective_advantages"].shape[1] == 3


def test_none_rewards_never_give_nan_advantages(tiny_model_dir, tmp_path):
    def always_none(prompts, completions, completion_ids=None, **kw):
        return [None] * len(completions)

    trainer = MOGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=[reward_short, always_none],
        args=tiny_config(str(tmp_path), max_steps=1),
        train_dataset=tiny_dataset(16),
    )
    captured = {}
    gen = trainer._generate_and_score_completions

    def spy(inputs):
        out = gen(inputs)
        captured["adv"] = out["advantages"].clone()
        return out

    trainer._generate_and_score_completions = spy
    trainer.train()
    assert torch.isfinite(captured["adv"]).all()
    assert torch.isnan(trainer.mo_rewards[:, 1]).all()


def test_reward_weights_with_owning_weighting_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="reward_weights is set but weighting 'linear' owns"):
        tiny_config(str(tmp_path), reward_weights=[1.0, 1.0, 1.0])


def test_weighting_size_mismatch(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="2 objectives but 3 reward_funcs"):
        build(tiny_model_dir, tmp_path, weighting=LinearWeighting(2))


class StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_exact_resume(tiny_model_dir, tmp_path):
    """4 steps straight == 2 steps + checkpoint + resume for 2 (weighting state and parameters, bitwise)."""
    common = {"max_steps": 4, "save_strategy": "steps", "save_steps": 2, "learning_rate": 5e-2}
    straight = build(tiny_model_dir, tmp_path / "a", weighting=DriftWeighting(3), **common)
    straight.train()

    first = build(tiny_model_dir, tmp_path / "b", weighting=DriftWeighting(3), **common)
    first.add_callback(StopAt(2))  # an interruption right after the first checkpoint, same 4-step schedule
    first.train()
    ckpt = tmp_path / "b" / "checkpoint-2"
    assert (ckpt / MO_STATE_FILE).exists()
    assert first.weighting.updates == 2

    resumed = build(tiny_model_dir, tmp_path / "b", weighting=DriftWeighting(3), **common)
    assert resumed.weighting.updates == 0
    resumed.train(resume_from_checkpoint=str(ckpt))

    assert resumed.weighting.updates == straight.weighting.updates == 4
    assert torch.equal(resumed.weighting.logits, straight.weighting.logits)
    a, b = _params(straight.model), _params(resumed.model)
    assert all(torch.equal(a[n], b[n]) for n in a), "parameters differ after resume"
    # and resuming really mattered: the state after 2 updates differs from after 4
    assert not torch.equal(first.weighting.logits, straight.weighting.logits)


def test_resume_without_mo_state_fails_loudly(tiny_model_dir, tmp_path):
    trainer = build(tiny_model_dir, tmp_path, max_steps=2, save_strategy="steps", save_steps=2)
    trainer.train()
    ckpt = tmp_path / "checkpoint-2"
    os.remove(ckpt / MO_STATE_FILE)
    again = build(tiny_model_dir, tmp_path, max_steps=4, save_strategy="no")
    with pytest.raises(FileNotFoundError, match=MO_STATE_FILE):
        again.train(resume_from_checkpoint=str(ckpt))


def test_per_objective_evaluation_at_start_and_every_eval_steps(tiny_model_dir, tmp_path):
    trainer = MOGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=list(REWARDS),
        args=tiny_config(str(tmp_path), max_steps=4, eval_strategy="steps", eval_steps=2, eval_on_start=True),
        train_dataset=tiny_dataset(32),
        eval_dataset=tiny_dataset(6),
    )
    trainer.train()
    evals = [h for h in trainer.state.log_history if "eval_reward_short/mean" in h]
    assert [h["step"] for h in evals] == [0, 2, 4]
    for h in evals:  # TRL's eval loss beside ours, and no training metric folded into an eval entry
        assert math.isfinite(h["eval_loss"]) and "eval_rewards/reward_short/mean" in h
        assert not {"loss", "grad_norm", "reward", "mo/weight/reward_short"} & set(h)
    for h in evals:
        for name in NAMES:
            assert 0.0 <= h[f"eval_{name}/mean"] <= 1.0
        assert h["eval_completion_length/mean"] > 0
    start = evals[0]
    assert all(start[f"eval_{n}/delta"] == 0.0 for n in NAMES)
    for h in evals[1:]:
        for n in NAMES:
            assert h[f"eval_{n}/delta"] == pytest.approx(h[f"eval_{n}/mean"] - start[f"eval_{n}/mean"])
    # greedy decoding is deterministic: evaluating twice without training gives the same means
    again = trainer.evaluate()
    assert again["eval_reward_short/mean"] == pytest.approx(evals[-1]["eval_reward_short/mean"])
    # reward_short = 1 - L/16: the eval mean is consistent with the logged mean length (max 8 new tokens)
    assert evals[0]["eval_reward_short/mean"] == pytest.approx(1 - evals[0]["eval_completion_length/mean"] / 16)


@pytest.mark.parametrize("name", [*sorted(WEIGHTINGS), "jd:GradVac"])
def test_exact_resume_every_weighting(tiny_model_dir, tmp_path, name):
    """For every registered strategy (and TorchJD's stateful, random GradVac): the state and parameters after resume
    equal the uninterrupted run."""
    kwargs = {"ctwa": {"cov_targets": 0.5}, "dynamic": {"regularization": 1.0}}.get(name, {})
    common = {"max_steps": 4, "save_strategy": "steps", "save_steps": 2, "learning_rate": 5e-2}
    if weighting_class(name).space == "gradient" or "gramian" in weighting_class(name).requires:
        common["gramian_space"] = "logprobs"

    def make(out):
        return MOGRPOTrainer(
            model=tiny_model_dir,
            reward_funcs=list(REWARDS),
            args=tiny_config(str(out), weighting=name, weighting_kwargs=kwargs, **common),
            train_dataset=tiny_dataset(32),
        )

    straight = make(tmp_path / "a")
    straight.train()
    first = make(tmp_path / "b")
    first.add_callback(StopAt(2))
    first.train()
    resumed = make(tmp_path / "b")
    resumed.train(resume_from_checkpoint=str(tmp_path / "b" / "checkpoint-2"))
    assert _same(resumed.weighting.state_dict(), straight.weighting.state_dict())
    a, b = _params(straight.model), _params(resumed.model)
    assert all(torch.equal(a[n], b[n]) for n in a), "parameters differ after resume"


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def test_continuous_batching_on_float32_weights_under_bf16_is_refused(tiny_model_dir, tmp_path, monkeypatch):
    """TRL's continuous-batching rollout casts the policy to bf16 in place: refused when the weights are float32.
    The oracle is TRL's own path with the check switched off: after one step the weights are bfloat16."""
    from mo_align.trainer import checks

    cb = {"use_transformers_continuous_batching": True, "bf16": True, "max_steps": 1}
    with pytest.raises(
        ValueError, match=r"use_transformers_continuous_batching with bf16: true would cast the float32"
    ):
        build(tiny_model_dir, tmp_path / "refused", **cb)
    with monkeypatch.context() as m:
        m.setattr(checks, "check_rollout_precision", lambda model, args: None)
        unguarded = build(tiny_model_dir, tmp_path / "unguarded", **cb)
        assert {p.dtype for p in unguarded.model.parameters()} == {torch.float32}
        unguarded.train()
        assert {p.dtype for p in unguarded.model.parameters()} == {torch.bfloat16}  # what the check prevents
    on_purpose = build(tiny_model_dir, tmp_path / "bf16", model_init_kwargs={"dtype": "bfloat16"}, **cb)
    assert {p.dtype for p in on_purpose.model.parameters()} == {torch.bfloat16}  # loaded so: nothing to lose
    plain = build(tiny_model_dir, tmp_path / "fp32", use_transformers_continuous_batching=True, max_steps=1)
    assert {p.dtype for p in plain.model.parameters()} == {torch.float32}  # no mixed precision: no cast
