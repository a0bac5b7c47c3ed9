"""Checkpointed state beyond transformers' (override 4): ``mo_state.pt`` and the completeness of a checkpoint.

``mo_state.pt`` holds the weighting's state, the state of stateful reward functions (running means), the first
evaluation's means (deltas), the interference monitor and the run history, as TRL persists its entropy controller.
A checkpoint is complete once :mod:`mo_align.checkpoints` marks it (written last); resume takes the newest complete
one, and a checkpoint lacking a file an exact resume needs is refused naming the file.

A resumed run keeps the record of an uninterrupted one: ``eval_on_start`` evaluates step 0 only
(:class:`ResumeCallback`; transformers evaluated again at the resume step, adding an eval point and its law
checks), and a checkpoint already at ``max_steps`` is restored without a training step
(:func:`finish_from_checkpoint`; transformers' loop trained one step past ``max_steps``).
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from typing import TYPE_CHECKING, Any

import torch
from transformers import TrainerCallback, TrainerState
from transformers.trainer_utils import TrainOutput, rotate_checkpoints

from mo_align import checkpoints
from mo_align.runs.files import MO_STATE_FILE, TRAINER_STATE_FILE
from mo_align.trainer import trl_compat


if TYPE_CHECKING:
    from mo_align.trainer import MOGRPOTrainer


logger = logging.getLogger("mo_align")


def mo_state_dict(trainer: MOGRPOTrainer) -> dict[str, Any]:
    """The trainer's :class:`~mo_align.trainer.mostate.MOState` part and its stateful reward functions' state."""
    t = trainer
    rewards = {
        name: fn.state_dict()
        for name, fn in zip(t.reward_func_names, t.reward_funcs, strict=True)
        if hasattr(fn, "state_dict") and not isinstance(fn, torch.nn.Module)
    }
    return {**t.mo.state_dict(), "rewards": rewards}


def load_mo_state_dict(trainer: MOGRPOTrainer, state: dict[str, Any]) -> None:
    t = trainer
    t.mo.load_state_dict(state)
    for name, fn in zip(t.reward_func_names, t.reward_funcs, strict=True):
        if name in state["rewards"]:
            fn.load_state_dict(state["rewards"][name])


def save_checkpoint(trainer: MOGRPOTrainer, save: Any, trial: Any) -> None:
    """transformers' checkpoint (``save()``) + ``mo_state.pt``, then the completeness marker; older checkpoints are
    rotated away only once this one is complete."""
    t = trainer
    run_dir = trl_compat.output_dir(t, trial)
    folder = os.path.join(run_dir, f"checkpoint-{t.state.global_step}")
    if t.args.should_save:
        checkpoints.unmark(folder)
    limit, t.args.save_total_limit = t.args.save_total_limit, None
    with checkpoints.disk_full_guard(run_dir, folder):  # one line instead of torch's stream-writer stack
        try:
            save()
        finally:
            t.args.save_total_limit = limit
        if t.args.should_save:
            torch.save(mo_state_dict(t), os.path.join(folder, MO_STATE_FILE))
        t.accelerator.wait_for_everyone()  # every rank's files (RNG states, shards) are written
        if t.args.should_save:
            checkpoints.mark_complete(folder)
    if t.args.should_save:
        rotate_checkpoints(run_dir, limit, t.state.best_model_checkpoint, use_mtime=True)


def resolve_resume(trainer: MOGRPOTrainer, resume_from_checkpoint: Any) -> Any:
    """``True`` -> the newest complete checkpoint (naming the ones skipped); a path -> checked for every file an
    exact resume needs (an error naming the missing one)."""
    t = trainer
    if resume_from_checkpoint is True:
        resume_from_checkpoint, skipped = checkpoints.last_complete_checkpoint(t.args.output_dir)
        for folder, reason in skipped:
            logger.warning(checkpoints.skip_message(folder, reason))
        if resume_from_checkpoint is None:
            raise ValueError(f"No complete checkpoint found in output directory ({t.args.output_dir})")
    if isinstance(resume_from_checkpoint, str):
        sharded = t.is_deepspeed_enabled or t.is_fsdp_enabled
        required = checkpoints.required_files(t.args.world_size, t.args.process_index, sharded, t.args.save_only_model)
        checkpoints.check_resumable(resume_from_checkpoint, required)
    return resume_from_checkpoint


def load_checkpoint_state(trainer: MOGRPOTrainer, checkpoint: str) -> None:
    """Restore ``mo_state.pt`` of ``checkpoint`` (an error naming the file when it is missing or unreadable)."""
    path = os.path.join(checkpoint, MO_STATE_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing: cannot restore the weighting state of this checkpoint")
    load_mo_state_dict(trainer, read_mo_state(path))


def read_mo_state(path: str) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)``: tensors and plain Python values only, as :func:`mo_state_dict`
    writes them. A file that needs more (any other class or function, whose unpickling would run code of the file's
    choosing: checkpoints are downloaded from the Hub) is refused in one line naming it, as is a truncated one."""
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"WeightsUnpickler error:\s*(.+?)(?: was not an allowed global|\n|$)", str(exc))
        what = found.group(1).strip() if found else "not tensors and plain values"
        raise RuntimeError(
            f"{path} is refused: it needs more than tensors and plain Python values to load ({what}), and loading "
            "it could run code from the file; mo_align writes only tensors and plain values there"
        ) from None
    except Exception as exc:  # truncated / empty: name the file, not only "PytorchStreamReader failed"
        raise RuntimeError(f"{path} is unreadable (truncated or corrupt): {type(exc).__name__}") from exc


class ResumeCallback(TrainerCallback):
    """``eval_on_start`` on a resumed run: its step-0 evaluation is already in the restored history, so the one
    transformers runs after ``on_train_begin`` is switched off for that call only (restored at the first epoch)."""

    def __init__(self) -> None:
        self.switched_off = False

    def on_train_begin(self, args, state, control, **kwargs):
        if args.eval_on_start and state.global_step > 0:
            args.eval_on_start, self.switched_off = False, True

    def restore(self, args: Any) -> None:
        if self.switched_off:
            args.eval_on_start, self.switched_off = True, False

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.restore(args)

    def on_train_end(self, args, state, control, **kwargs):
        self.restore(args)


def checkpoint_step(checkpoint: Any) -> int | None:
    """The ``global_step`` recorded in a checkpoint's ``trainer_state.json`` (``None`` when it has none)."""
    path = os.path.join(checkpoint, TRAINER_STATE_FILE) if isinstance(checkpoint, str) else None
    if path is None or not os.path.isfile(path):
        return None
    return TrainerState.load_from_json(path).global_step


def finish_from_checkpoint(trainer: MOGRPOTrainer, checkpoint: str, step: int) -> TrainOutput:
    """A checkpoint at ``max_steps``: nothing is left to train, so its weights, trainer state and ``mo_state.pt``
    are restored and no step is taken (the caller saves the final model as after training)."""
    t = trainer
    if t.is_deepspeed_enabled or t.is_fsdp_enabled:
        raise ValueError(
            f"{checkpoint} is at step {step} of max_steps {t.args.max_steps}: nothing left to train; its weights are "
            "the final ones (raise max_steps to train on)"
        )
    logger.warning(
        "%s is at step %d of max_steps %d: nothing left to train, its weights and state are restored as the final "
        "ones (raise max_steps to train on)",
        checkpoint,
        step,
        t.args.max_steps,
    )
    trl_compat.load_weights(t, checkpoint)
    t.state = TrainerState.load_from_json(os.path.join(checkpoint, TRAINER_STATE_FILE))
    load_checkpoint_state(t, checkpoint)
    t.write_summary()
    losses = [h["loss"] for h in t.state.log_history if "loss" in h]  # the logged losses of the steps trained
    metrics = {
        "train_runtime": 0.0,
        "train_loss": sum(losses) / len(losses) if losses else 0.0,
        "epoch": t.state.epoch,
    }
    return TrainOutput(t.state.global_step, metrics["train_loss"], metrics)
