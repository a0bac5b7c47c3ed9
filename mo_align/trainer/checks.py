"""Combinations that cannot work, refused when the trainer is built (one line naming the fields)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any


if TYPE_CHECKING:
    from mo_align.trainer import MOGRPOTrainer
    from mo_align.weightings import Weighting


def check_layout(weighting: Weighting, args: Any) -> None:
    """Before the model is built: a weighting that updates after each generation batch needs every generation batch
    to end on an optimizer step (:meth:`~mo_align.weightings.TrainerNeeds.layout_conflict`). The config checked its
    own ``weighting``; this covers an instance passed to the trainer."""
    layout = weighting.trainer_needs().layout_conflict(
        weighting.name, args.steps_per_generation, args.num_iterations, args.gradient_accumulation_steps
    )
    if layout:
        raise ValueError(layout)


def check_setup(trainer: MOGRPOTrainer, args: Any) -> None:
    """Combinations that cannot work, refused before any step (one line naming the fields)."""
    launched, name = int(os.environ.get("WORLD_SIZE", "1")), trainer.weighting.name
    if launched != trainer.accelerator.num_processes:
        # e.g. `accelerate launch` with a multi-GPU config on a machine without GPUs: every process would
        # silently train alone (no gradient sync, no data split).
        raise RuntimeError(
            f"launched {launched} processes but the trainer sees {trainer.accelerator.num_processes}; on a machine "
            "without GPUs set use_cpu: true (or ddp_backend: gloo) in the recipe"
        )
    zero3 = trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3
    sharded = "ZeRO-3" if zero3 else "FSDP" if trainer.is_fsdp_enabled else None
    if trainer.mo_needs.gram and args.gramian_space == "parameters" and sharded:
        # autograd.grad on ZeRO-3-partitioned parameters returns empty shards and breaks the engine's backward;
        # FSDP shards parameters the same way (not supported): the output-space Gram matrix is exact on what it
        # measures and works.
        raise ValueError(
            f"weighting {name!r} with gramian_space 'parameters' is not supported under {sharded}; "
            "set gramian_space: logprobs"
        )
    # what the strategy itself refuses (CTWA: a policy loss its exact statistic does not describe), for this instance
    type(trainer.weighting).check_config(args, trainer.weighting.hyperparameters())
