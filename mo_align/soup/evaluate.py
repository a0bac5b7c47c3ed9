"""Evaluate an interpolated model with the training evaluation of the runs' recipe, and write its run summary.

The recipe (the first run's ``sweep_recipe.yaml``, or ``--config``) gives the objectives, the eval split and every
evaluation setting; an ``MOGRPOTrainer`` is built on the interpolated model and its own ``evaluate()`` decodes and
scores the split (``mo_align.trainer.evaluation``: per-objective means with 95 % bootstrap CIs over prompts), so a
soup point is measured exactly as the runs' final evaluations were. Stateful rewards (conciseness's running mean)
take the state of the first run's newest complete checkpoint (``mo_state.pt``), recorded in the summary; without one
they start fresh (conciseness then scores against no running mean: set ``reward_kwargs.conciseness
.eval_reference_length`` with ``mo_eval_fixed_reference: true`` for a state-free measure). With ``α = e_1`` and the
first run's final checkpoint, the soup reproduces that run's final evaluation (greedy decoding; sampled decoding is
seeded with the recipe's ``seed``, which the run's own final evaluation was not at that point of its RNG stream).

The summary (``mo_summary.json``, the runs' schema) has algorithm ``soup``, one evaluation at step 0 (start = final),
and ``weighting_hyperparameters`` = the runs, the mixing weights, the LoRA mode and the reward state used.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
from transformers import AutoTokenizer, set_seed

from mo_align.checkpoints import last_complete_checkpoint
from mo_align.runs.summary import write_summary
from mo_align.train import parse_args, validate
from mo_align.trainer import MOGRPOTrainer
from mo_align.trainer.state import MO_STATE_FILE, read_mo_state


logger = logging.getLogger("mo_align")


def reward_state(run_dir: str) -> tuple[dict[str, Any], str | None]:
    """The reward states saved in ``run_dir``'s newest complete checkpoint, and that file (or ``({}, None)``)."""
    checkpoint, _ = last_complete_checkpoint(run_dir)
    if checkpoint is None:
        return {}, None
    path = os.path.join(checkpoint, MO_STATE_FILE)
    return dict(read_mo_state(path).get("rewards") or {}), path


def recipe_trainer(model: Any, parsed: tuple, recipe: str, tokenizer_dir: str, measured: str) -> Any:
    """An ``MOGRPOTrainer`` on ``model`` with a parsed recipe's (``parse_args``: script, training and model
    arguments) objectives, weighting, data and eval split, no tracker, the tokenizer of ``tokenizer_dir``; a
    ``ValueError`` naming ``recipe`` when it has no eval split (what ``measured`` is measured on)."""
    script_args, training_args, model_args = parsed
    training_args.report_to, training_args.disable_tqdm = [], True
    reward_funcs, weighting, train_dataset, eval_dataset = validate(script_args, training_args, model_args)
    if eval_dataset is None:
        raise ValueError(f"{recipe}: no eval split (set eval_strategy and eval_split): {measured} is measured on it")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return MOGRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        weighting=weighting,
    )


def build_trainer(model: Any, recipe: str, tokenizer_dir: str, out_dir: str, name: str) -> Any:
    """An ``MOGRPOTrainer`` on ``model`` with the recipe's objectives, data and evaluation settings."""
    parsed = parse_args(["--config", recipe])
    parsed[1].output_dir, parsed[1].run_name, parsed[1].mo_run_label = out_dir, name, "soup"
    return recipe_trainer(model, parsed, recipe, tokenizer_dir, "a soup")


def evaluate_soup(
    model: Any, recipe: str, runs: Sequence[str], alphas: Sequence[float], out_dir: str, name: str, lora_mode: str
) -> dict[str, Any]:
    """Evaluate ``model`` (the soup of ``runs`` with ``alphas``) and write ``<out_dir>/mo_summary.json``."""
    trainer = build_trainer(model, recipe, runs[0], out_dir, name)
    states, state_file = reward_state(runs[0])
    for fname, fn in zip(trainer.reward_func_names, trainer.reward_funcs, strict=True):
        if fname in states and hasattr(fn, "load_state_dict") and not isinstance(fn, torch.nn.Module):
            fn.load_state_dict(states[fname])
    set_seed(trainer.args.seed)
    trainer.evaluate()
    summary = trainer.summary()
    summary["algorithm"] = "soup"
    summary["weighting_hyperparameters"] = {
        "runs": [os.path.abspath(r) for r in runs],
        "alphas": [float(a) for a in alphas],
        "lora": lora_mode,
        "reward_state": state_file or "fresh",
        "recipe": os.path.abspath(recipe),
    }
    summary["weights"], summary["cov_ema"], summary["train_reward"] = [], [], []
    write_summary(summary, out_dir)
    return summary
