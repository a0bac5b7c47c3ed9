"""Pins the TRL private surface MOGRPOTrainer overrides or reads: a TRL upgrade that changes it fails here first."""

import inspect

import trl
from trl import GRPOConfig, GRPOTrainer


def params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_trl_version_is_pinned():
    assert trl.__version__ == "1.16.0"


def test_overridden_hook_signatures():
    assert params(GRPOTrainer._calculate_rewards) == [
        "self",
        "inputs",
        "prompts",
        "completions",
        "completion_ids_list",
    ]
    assert params(GRPOTrainer._generate_and_score_completions) == ["self", "inputs"]
    assert params(GRPOTrainer.compute_loss) == ["self", "model", "inputs", "return_outputs", "num_items_in_batch"]
    assert params(GRPOTrainer._save_checkpoint) == ["self", "model", "trial"]
    assert params(GRPOTrainer._load_optimizer_and_scheduler) == ["self", "checkpoint"]
    assert params(GRPOTrainer._compute_loss) == ["self", "model", "inputs"]
    assert params(GRPOTrainer.training_step) == ["self", "model", "inputs", "num_items_in_batch"]
    assert params(GRPOTrainer._get_per_token_logps_and_entropies)[:5] == [
        "self",
        "model",
        "input_ids",
        "attention_mask",
        "logits_to_keep",
    ]


def test_attributes_the_trainer_reads():
    src = inspect.getsource(GRPOTrainer)
    # attributes read by MOGRPOTrainer._generate_and_score_completions / _log_mo_metrics
    for name in (
        "self.reward_func_names",
        "self.reward_funcs",
        "self.num_generations_eval",
        "self.scale_rewards",
        "self._metrics[mode]",
        'self._logs["advantages"]',
        '"completion_mask": completion_mask',
        '"advantages": advantages',
        "rewards_per_func = self._calculate_rewards(inputs, prompts, completions, completion_ids_list)",
        # advantages are sliced per process with this layout; ours must match it
        "self.accelerator.process_index * len(prompts)",
    ):
        assert name in src, name


def test_config_fields_we_rely_on():
    fields = GRPOConfig.__dataclass_fields__
    for name in ("reward_weights", "multi_objective_aggregation", "scale_rewards", "num_generations", "beta"):
        assert name in fields, name
    assert fields["multi_objective_aggregation"].default == "sum_then_normalize"
    assert "_VALID_DICT_FIELDS" in vars(GRPOConfig)
