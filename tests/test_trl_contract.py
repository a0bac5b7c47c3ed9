"""Pins the TRL private surface MOGRPOTrainer overrides or reads: a TRL upgrade that changes it fails here first.

Every name listed in ``mo_align.trainer.trl_compat`` is checked against the pinned TRL, and no module outside
``mo_align/trainer/`` and ``mo_align/vllm/`` spells one of them.
"""

import inspect
import re
from pathlib import Path

import pytest
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
        "self.reward_processing_classes",  # swapped with reward_funcs for eval-role objectives (mo_align.objectives)
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


def test_every_listed_override_and_call_exists_with_its_parameters():
    from mo_align.trainer import MOGRPOTrainer, trl_compat

    for name, expected in {**trl_compat.OVERRIDES, **trl_compat.CALLS}.items():
        assert hasattr(GRPOTrainer, name), f"TRL no longer has GRPOTrainer.{name}"
        assert params(getattr(GRPOTrainer, name))[1 : 1 + len(expected)] == list(expected), name
    for name in trl_compat.OVERRIDES:  # the trainer really overrides each one, with the same parameters
        assert name in vars(MOGRPOTrainer), name
        assert params(getattr(MOGRPOTrainer, name)) == params(getattr(GRPOTrainer, name)), name


@pytest.mark.parametrize("name", ["_buffered_inputs", "_step", "_metrics", "_logs", "_tag_names"])
def test_every_listed_attribute_is_trls(name):
    from mo_align.trainer import trl_compat

    assert name in trl_compat.ATTRIBUTES
    src = inspect.getsource(GRPOTrainer)
    assert f"self.{name}" in src or f"{name} =" in src, name


def test_no_module_outside_trainer_and_vllm_spells_a_trl_private():
    from mo_align.trainer import trl_compat

    names = {*trl_compat.OVERRIDES, *trl_compat.CALLS, *trl_compat.ATTRIBUTES}
    names |= {name for _, name in trl_compat.VLLM_PRIVATE if name.startswith("_") and name != "__init__"}
    root = Path(__file__).resolve().parents[1] / "mo_align"
    offenders = []
    for path in root.rglob("*.py"):
        if path.relative_to(root).parts[0] in ("trainer", "vllm"):
            continue
        text = path.read_text()
        offenders += [f"{path.relative_to(root)}: {n}" for n in names if re.search(rf"\b{re.escape(n)}\b", text)]
    assert not offenders, offenders
