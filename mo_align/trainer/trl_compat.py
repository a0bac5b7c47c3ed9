"""Every private name of TRL 1.16 / transformers 5.24 that mo_align overrides, calls or reads — in one place.

``tests/test_trl_contract.py`` checks each name listed here against the pinned libraries (existence and signature),
so a TRL upgrade that moves one fails there first, not in a training run. Nothing outside ``mo_align.trainer`` and
``mo_align.vllm`` touches a TRL private: the trainer's modules go through the accessors below, and the vLLM client's
touch points are listed in :mod:`mo_align.vllm.trl_compat` (re-exported here as :data:`VLLM_PRIVATE`).

* Overridden on ``MOGRPOTrainer`` (:data:`OVERRIDES`): the hook and its parameters.
* Called (:data:`CALLS`): TRL/transformers private methods the trainer calls.
* Read or written (:data:`ATTRIBUTES`): private instance state (and the class attribute ``_tag_names``, the tags
  TRL's ``Trainer`` gives the model; ``MOGRPOTrainer`` adds ``mo_align``).
"""

from __future__ import annotations

from typing import Any

from trl import GRPOTrainer

from mo_align.vllm.trl_compat import PRIVATE_NAMES


# name -> the parameters (after self) the override relies on
OVERRIDES: dict[str, tuple[str, ...]] = {
    "_calculate_rewards": ("inputs", "prompts", "completions", "completion_ids_list"),
    "_generate_and_score_completions": ("inputs",),
    "_save_checkpoint": ("model", "trial"),
    "_load_optimizer_and_scheduler": ("checkpoint",),
}
CALLS: dict[str, tuple[str, ...]] = {
    "_compute_loss": ("model", "inputs"),
    "_get_per_token_logps_and_entropies": ("model", "input_ids", "attention_mask", "logits_to_keep"),
    "_get_learning_rate": (),
    "_get_output_dir": ("trial",),
    "_load_from_checkpoint": ("resume_from_checkpoint", "model"),
}
ATTRIBUTES: tuple[str, ...] = ("_buffered_inputs", "_step", "_metrics", "_logs", "_tag_names")


VLLM_PRIVATE: tuple[tuple[str, str], ...] = tuple(
    PRIVATE_NAMES
)  # the vLLM client's, listed in mo_align.vllm.trl_compat


# ---- accessors (the only code that spells these names) -----------------------------------------------------------
def policy_loss(trainer: GRPOTrainer, model: Any, inputs: dict[str, Any]) -> Any:
    """TRL's own policy loss of one micro-batch (``GRPOTrainer._compute_loss``): clipping, KL, loss type, scaling."""
    return GRPOTrainer._compute_loss(trainer, model, inputs)


def per_token_logps(
    trainer: GRPOTrainer, model: Any, input_ids: Any, attention_mask: Any, logits_to_keep: int, **kw: Any
):
    """``GRPOTrainer._get_per_token_logps_and_entropies``: (log-probs, entropies, aux loss)."""
    return trainer._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep, **kw)


class MemoisedLogps:
    """Within the block, ``_get_per_token_logps_and_entropies`` computes once and returns the first call's output to
    every later call (one forward serves several losses); the output is in ``self.out`` (None until computed)."""

    def __init__(self, trainer: GRPOTrainer) -> None:
        self.trainer, self.out = trainer, None

    def __enter__(self) -> MemoisedLogps:
        compute = self.trainer._get_per_token_logps_and_entropies

        def memoised(*a: Any, **k: Any) -> Any:
            if self.out is None:
                self.out = compute(*a, **k)
            return self.out

        self.trainer._get_per_token_logps_and_entropies = memoised
        return self

    def __exit__(self, *exc: Any) -> None:
        del self.trainer._get_per_token_logps_and_entropies


def metrics(trainer: GRPOTrainer, mode: str) -> Any:
    """TRL's per-mode metric lists (``_metrics[mode]``: name -> values averaged at the next log)."""
    return trainer._metrics[mode]


def completion_log(trainer: GRPOTrainer, key: str) -> Any:
    """TRL's completion table buffers (``_logs[key]``, deques)."""
    return trainer._logs[key]


def buffered_micro_batches(trainer: GRPOTrainer) -> list[dict[str, Any]] | None:
    """The current generation batch, split into micro-batches (``_buffered_inputs``); None before the first."""
    return trainer._buffered_inputs


def micro_step(trainer: GRPOTrainer) -> int:
    """Micro-batches trained so far (``_step``, incremented after each ``training_step``)."""
    return trainer._step


def learning_rate(trainer: GRPOTrainer) -> float:
    """The scheduler's current learning rate (``Trainer._get_learning_rate``)."""
    return trainer._get_learning_rate()


def load_weights(trainer: GRPOTrainer, checkpoint: str) -> None:
    """The model weights (or adapters) of a checkpoint into the trainer's model (``Trainer._load_from_checkpoint``)."""
    trainer._load_from_checkpoint(checkpoint)


def output_dir(trainer: GRPOTrainer, trial: Any) -> str:
    """The run directory checkpoints go to (``Trainer._get_output_dir``)."""
    return trainer._get_output_dir(trial=trial)
