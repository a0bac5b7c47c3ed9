"""CTWA inside the trainer: the exact post-update statistic, its on-policy shortcut, and exact resume."""

import pytest
import torch

from mo_align.trainer import MOGRPOTrainer
from mo_align.weightings.ctwa import CTWAWeighting
from tests.helpers import reward_has_digit, reward_short, reward_vowels, tiny_config, tiny_dataset
from tests.test_trainer import StopAt


def run(tiny_model_dir, out, statistic, resume=None, callbacks=(), w_agg="mean", **overrides):
    trainer = MOGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=[reward_has_digit, reward_short, reward_vowels],
        args=tiny_config(str(out), **overrides),
        train_dataset=tiny_dataset(32),
        weighting=CTWAWeighting(3, statistic=statistic, cov_targets=0.5, lambda_lr=0.5, w_agg=w_agg),
    )
    for cb in callbacks:
        trainer.add_callback(cb)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def ctwa_logs(trainer, key):
    return [h[key] for h in trainer.state.log_history if key in h]


@pytest.mark.parametrize("w_agg", ["mean", "mean_unclipped", "sum"])
def test_exact_and_on_policy_agree_when_the_ratio_is_one(tiny_model_dir, tmp_path, w_agg):
    # learning rate 0: the post-update policy equals the sampling policy, so the ratio is exactly 1; the on-policy
    # shortcut must aggregate Â over tokens as w_agg says (sum: Â_i L_i), as the exact statistic's real forward does
    common = {"max_steps": 3, "learning_rate": 0.0, "w_agg": w_agg}
    exact = run(tiny_model_dir, tmp_path / "e", "exact", **common)
    fast = run(tiny_model_dir, tmp_path / "o", "on_policy", **common)
    torch.testing.assert_close(exact.weighting.log_weights, fast.weighting.log_weights)
    assert ctwa_logs(exact, "mo/ctwa/cov/reward_vowels") == pytest.approx(ctwa_logs(fast, "mo/ctwa/cov/reward_vowels"))
    assert ctwa_logs(exact, "mo/ctwa/unclip_frac") == [1.0, 1.0, 1.0]


def test_exact_statistic_sees_the_policy_move(tiny_model_dir, tmp_path):
    common = {"max_steps": 2, "learning_rate": 5e-2}
    exact = run(tiny_model_dir, tmp_path / "e", "exact", **common)
    fast = run(tiny_model_dir, tmp_path / "o", "on_policy", **common)
    assert ctwa_logs(exact, "mo/ctwa/signal_mean") != pytest.approx(ctwa_logs(fast, "mo/ctwa/signal_mean"))
    assert len(ctwa_logs(exact, "mo/ctwa/cov/reward_has_digit")) == 2  # one update per generation batch


@pytest.mark.parametrize("statistic", ["exact", "on_policy"])
def test_exact_resume(tiny_model_dir, tmp_path, statistic):
    common = {"max_steps": 4, "save_strategy": "steps", "save_steps": 2, "learning_rate": 5e-2}
    straight = run(tiny_model_dir, tmp_path / "a", statistic, **common)
    run(tiny_model_dir, tmp_path / "b", statistic, callbacks=[StopAt(2)], **common)
    resumed = run(tiny_model_dir, tmp_path / "b", statistic, resume=str(tmp_path / "b" / "checkpoint-2"), **common)
    assert torch.equal(resumed.weighting.log_weights, straight.weighting.log_weights)
    assert torch.equal(resumed.weighting.ema, straight.weighting.ema)
    for (n, a), b in zip(straight.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(a, b), n


def test_pre_update_logps_come_from_the_training_forward(tiny_model_dir, tmp_path):
    """TRL computes no old log-probs when generation is aligned with the optimizer step; the exact statistic then
    keeps the training forward's log-probs (no extra pass), equal to a separate pre-update pass."""
    trainer = MOGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=[reward_has_digit, reward_short, reward_vowels],
        args=tiny_config(str(tmp_path)),
        train_dataset=tiny_dataset(16),
        weighting=CTWAWeighting(3, statistic="exact"),
    )
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    torch.manual_seed(0)
    batch = trainer._generate_and_score_completions([tiny_dataset(16)[i // 4] for i in range(8)])
    assert batch.get("old_per_token_logps") is None and "mo_old_logps" not in batch
    before = trainer.mo_post_update.logps(batch)
    trainer.compute_loss(trainer.model, batch).backward()
    torch.testing.assert_close(batch["mo_old_logps"], before, atol=1e-6, rtol=1e-6)
    assert not batch["mo_old_logps"].requires_grad


def test_exact_statistic_refuses_several_generation_batches_per_step(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match=r"\(1 x 1 = 1\) must be a multiple of gradient_accumulation_steps \(2\)"):
        run(tiny_model_dir, tmp_path, "exact", gradient_accumulation_steps=2, steps_per_generation=1)
    trainer = run(tiny_model_dir, tmp_path / "o", "on_policy", gradient_accumulation_steps=2, steps_per_generation=1)
    assert len(ctwa_logs(trainer, "mo/ctwa/cov/reward_vowels")) == 2
