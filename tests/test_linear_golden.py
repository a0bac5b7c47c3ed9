"""Golden test: Linear advantages equal TRL 1.16's built-in aggregation bit for bit, on TRL's own code path.

A plain ``trl.GRPOTrainer`` runs its ``_generate_and_score_completions`` with a fixed reward matrix (including
NaN entries and an unscorable row); the advantages it computes must equal ``LinearWeighting.combine``.
"""

import pytest
import torch
from trl import GRPOConfig, GRPOTrainer

from mo_align.weightings import LinearWeighting, ObjectiveStats
from tests.helpers import reward_has_digit, reward_short, reward_vowels, tiny_dataset


NAN = float("nan")
R = torch.tensor(
    [
        [1.0, 0.5, 0.2],
        [0.0, 0.25, NAN],
        [1.0, 0.0, 0.7],
        [0.0, 0.75, 0.1],
        [NAN, NAN, NAN],  # unscorable
        [1.0, 0.5, 0.3],
        [1.0, 0.5, 0.3],
        [0.0, 1.0, NAN],
    ]
)
W = [0.5, 1.5, 2.0]


@pytest.mark.parametrize(
    ("aggregation", "estimator", "scale"),
    [
        ("sum_then_normalize", "grpo", "group"),
        ("sum_then_normalize", "grpo", "batch"),
        ("sum_then_normalize", "grpo", "none"),
        ("normalize_then_sum", "gdpo", "group"),
    ],
)
def test_linear_equals_trl(tiny_model_dir, tmp_path, aggregation, estimator, scale):
    args = GRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=4,
        report_to="none",
        reward_weights=W,
        multi_objective_aggregation=aggregation,
        scale_rewards=scale,
    )
    trainer = GRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=[reward_has_digit, reward_short, reward_vowels],
        args=args,
        train_dataset=tiny_dataset(8),
    )
    trainer._calculate_rewards = lambda *a, **k: R.clone()
    inputs = [tiny_dataset(8)[i // 4] for i in range(8)]  # 2 prompts x 4 generations
    trl_adv = trainer._generate_and_score_completions(inputs)["advantages"]

    stats = ObjectiveStats(
        rewards=R.clone(), group_size=4, lengths=torch.ones(8), estimator=estimator, scale_rewards=scale
    )
    ours = LinearWeighting(3, weights=W).combine(stats)
    assert torch.equal(ours, trl_adv), (ours, trl_adv)
    assert ours[4] == 0.0  # the unscorable row carries no signal
