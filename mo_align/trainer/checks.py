"""Combinations that cannot work, refused when the trainer is built (one line naming the fields)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch


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
    check_rollout_precision(trainer.model, args)
    # what the strategy itself refuses (CTWA: a policy loss its exact statistic does not describe), for this instance
    type(trainer.weighting).check_config(args, trainer.weighting.hyperparameters())


def check_rollout_precision(model: Any, args: Any) -> None:
    """Refuse transformers' continuous-batching rollouts on float32 weights under bf16/fp16 mixed precision.

    TRL 1.16's ``use_transformers_continuous_batching`` path casts the policy to the half dtype *in place* before every
    generation (``unwrapped_model.to(torch.bfloat16)``) and never casts it back: the float32 master weights are
    replaced by half-precision ones and every later update is applied to them, so an update below the half
    type's resolution (lr 1e-6 on a weight of 0.01 is far below bf16's 3 significant digits) is lost. Measured on
    the CPU: float32 parameters before the first step, bfloat16 after it. Training on half-precision weights on
    purpose (``model_init_kwargs: {dtype: bfloat16}``) is unaffected and allowed."""
    half = "bf16" if getattr(args, "bf16", False) else "fp16" if getattr(args, "fp16", False) else None
    if not (getattr(args, "use_transformers_continuous_batching", False) and half):
        return
    full = [n for n, p in model.named_parameters() if p.requires_grad and p.dtype == torch.float32]
    if full:
        raise ValueError(
            f"use_transformers_continuous_batching with {half}: true would cast the float32 policy weights to {half} "
            f"in place at the first generation (TRL's continuous-batching path; {len(full)} tensors, e.g. "
            f"{full[0]!r}), losing updates below {half}'s resolution; use transformers' generate (the default) or "
            "vLLM, or load the weights in that dtype on purpose (model_init_kwargs: {dtype: "
            f"{'bfloat16' if half == 'bf16' else 'float16'}}})"
        )
