"""Entry point: ``python -m mo_align.train --config recipes/<model>/<algo>.yaml`` (or ``mo-align train ...``).

Launch on several processes with ``accelerate launch --config_file configs/accelerate/<hw>.yaml -m mo_align.train
--config ...``. Order follows open-r1's ``grpo.py``: parse and validate everything (weighting, rewards, data) before
the model is loaded, then build the trainer, train (resuming from the last checkpoint), save.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

from trl import ModelConfig, TrlParser, get_peft_config, get_quantization_config

from mo_align.configs import MOGRPOConfig, MOScriptArguments
from mo_align.extras import MissingExtraError, check_report_to, require
from mo_align.rewards.common import call_frozen


logger = logging.getLogger("mo_align")


def make_parser() -> TrlParser:
    return TrlParser((MOScriptArguments, MOGRPOConfig, ModelConfig))


def parse_args(argv: Sequence[str] | None = None) -> tuple[MOScriptArguments, MOGRPOConfig, ModelConfig]:
    """Parse a recipe plus CLI overrides; an unknown recipe key is an error naming it."""
    return make_parser().parse_args_and_config(args=list(argv) if argv is not None else None)


# ---- data -----------------------------------------------------------------------------------------------------
def load_datasets(script_args: MOScriptArguments) -> tuple[Any, Any]:
    """Return (train, eval or None) from ``dataset_path`` (dir or ``synthetic``) or ``dataset_name``."""
    import datasets

    path = script_args.dataset_path
    eval_split = script_args.eval_split
    if path == "synthetic":
        from mo_align.data.synthetic import make_synthetic

        splits = make_synthetic(**script_args.dataset_kwargs)
        return splits["train"], (splits["test"] if eval_split else None)
    if path is not None:
        from mo_align.data.math500 import load_split

        train = load_split(path, script_args.dataset_train_split)
        return train, (load_split(path, eval_split) if eval_split else None)
    if script_args.dataset_name is None:
        raise ValueError("no data: set dataset_path (a directory or 'synthetic') or dataset_name")
    ds = datasets.load_dataset(script_args.dataset_name, script_args.dataset_config)
    return ds[script_args.dataset_train_split], (ds[eval_split] if eval_split else None)


# ---- reward preflight -----------------------------------------------------------------------------------------
def preflight_rewards(funcs: list, names: list[str], dataset: Any) -> None:
    """Call every reward on two dummy completions of the first dataset rows; fail early with a one-line error.

    Stateful rewards are called in evaluation mode (``training = False``) so their state does not move.
    """
    rows = [dataset[i] for i in range(min(2, len(dataset)))]
    if not rows:
        raise ValueError("the training dataset is empty")
    if "prompt" not in rows[0]:
        raise ValueError(f"the training dataset has no 'prompt' column (columns: {sorted(rows[0])})")
    conversational = isinstance(rows[0]["prompt"], list)
    texts = ["\\boxed{1}", "First, 1+1=2.\nThen, 2+1=3.\nSo the answer is \\boxed{3}."][: len(rows)]
    completions = [[{"role": "assistant", "content": t}] if conversational else t for t in texts]
    kwargs = {key: [row[key] for row in rows] for key in rows[0] if key != "prompt"}
    for fn, name in zip(funcs, names, strict=True):
        ids = [[1] * (3 + 5 * i) for i in range(len(rows))]
        out = call_frozen(fn, [row["prompt"] for row in rows], completions, ids, **kwargs)
        if not isinstance(out, list | tuple) or len(out) != len(rows):
            got = len(out) if isinstance(out, list | tuple) else type(out).__name__
            raise ValueError(f"reward {name!r} returned {got} values for {len(rows)} completions (must be 1 each)")
        for v in out:
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(float(v))):
                raise ValueError(f"reward {name!r} returned {v!r}: each value must be a number or None")


# ---- model ----------------------------------------------------------------------------------------------------
def model_init_kwargs(model_args: ModelConfig, training_args: MOGRPOConfig) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments from the model arguments, as TRL's ``trl grpo`` script builds them:
    revision, ``trust_remote_code`` (a GRPOConfig field), attention implementation and dtype; a recipe's own
    ``model_init_kwargs`` take precedence. Quantization (``load_in_4bit`` / ``load_in_8bit``) travels separately as
    the trainer's ``quantization_config`` (TRL's ``get_quantization_config``)."""
    kwargs: dict[str, Any] = {
        "revision": model_args.model_revision,
        "trust_remote_code": training_args.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
    }
    kwargs.update(training_args.model_init_kwargs or {})
    return kwargs


# ---- main -----------------------------------------------------------------------------------------------------
def main(script_args: MOScriptArguments, training_args: MOGRPOConfig, model_args: ModelConfig) -> Any:
    from transformers import AutoTokenizer, set_seed
    from transformers.trainer_utils import get_last_checkpoint

    from mo_align.rewards import get_reward_funcs
    from mo_align.trainer import MOGRPOTrainer
    from mo_align.weightings import get_weighting

    setup_logging(training_args)
    set_seed(training_args.seed)

    # ---- validate objectives, weighting and data before any model is loaded -------------------------------------
    try:
        names = list(script_args.reward_funcs)
        reward_funcs = get_reward_funcs(names, script_args.reward_kwargs)
        weighting = get_weighting(training_args.weighting, len(names), **training_args.weighting_kwargs)
        train_dataset, eval_dataset = load_datasets(script_args)
        preflight_rewards(reward_funcs, names, train_dataset)
        if eval_dataset is None and training_args.eval_strategy != "no":
            raise ValueError("eval_strategy is set but no eval_split was given")
        if model_args.load_in_4bit or model_args.load_in_8bit:
            require("bitsandbytes", "load_in_4bit" if model_args.load_in_4bit else "load_in_8bit")
        check_report_to(training_args.report_to)
        if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
            require("deepspeed", "an accelerate config with distributed_type: DEEPSPEED")
    except MissingExtraError as exc:
        raise ConfigError(str(exc)) from exc
    except (ValueError, TypeError, FileNotFoundError) as exc:
        raise ConfigError(str(exc)) from exc

    # ---- tokenizer and model ------------------------------------------------------------------------------------
    if model_args.model_name_or_path is None:
        raise ValueError("model_name_or_path is required")
    tokenizer = AutoTokenizer.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    training_args.model_init_kwargs = model_init_kwargs(model_args, training_args)

    trainer = MOGRPOTrainer(
        model=model_args.model_name_or_path,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),
        weighting=weighting,
    )

    trainer.mo_dataset_name = script_args.dataset_name or script_args.dataset_path  # named in the model card

    # ---- train (resume from the last checkpoint if there is one) ------------------------------------------------
    checkpoint = training_args.resume_from_checkpoint
    if checkpoint is None and os.path.isdir(training_args.output_dir):
        checkpoint = get_last_checkpoint(training_args.output_dir)
        if checkpoint is not None:
            logger.info("resuming from %s", checkpoint)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = {**result.metrics, "train_samples": _count(train_dataset)}
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)  # train_results.json and all_results.json, as TRL / open-r1 scripts
    trainer.save_state()  # trainer_state.json (log history) in output_dir

    # ---- save, then finish the trackers and the process group (transformers' Trainer.end, as `trl grpo`) ----------
    trainer.save_model(training_args.output_dir)
    logger.info("model saved to %s", training_args.output_dir)
    if trainer.accelerator.is_main_process:
        sys.stdout.write(objective_table(trainer.state.log_history, trainer.objective_names) + "\n")
    trainer.end()
    return trainer


def setup_logging(training_args: MOGRPOConfig) -> None:
    """Per-process log level, as TRL's and open-r1's scripts: ``log_level`` on the main process, ``log_level_replica``
    (default: warning) on the others; mo_align, transformers and datasets follow it. With the default ``passive``
    main-process level mo_align's own messages stay at info (transformers' and datasets' levels are left alone)."""
    import datasets
    import transformers

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=[logging.StreamHandler()])
    level = training_args.get_process_log_level()
    passive_main = training_args.log_level == "passive" and training_args.should_log
    logger.setLevel(logging.INFO if passive_main else level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()


def _count(dataset: Any) -> int | None:
    try:
        return len(dataset)
    except TypeError:  # an iterable (streaming) split
        return None


def objective_table(log_history: list[dict], objectives: Sequence[str]) -> str:
    """Per-objective training reward: first logged step, last logged step, delta; plus final weights."""
    rows = [h for h in log_history if any(k.startswith("mo/reward/") for k in h)]
    if not rows:
        return "(no multi-objective metrics were logged)"
    first, last = rows[0], rows[-1]
    header = (
        f"{'objective':<16}{'weight':>8}{'step ' + str(first.get('step')):>12}{'step ' + str(last.get('step')):>12}"
    )
    lines = ["per-objective training reward (mean over the generation batch)", header + f"{'delta':>9}"]
    for name in objectives:
        a, b = first.get(f"mo/reward/{name}/mean"), last.get(f"mo/reward/{name}/mean")
        w = last.get(f"mo/weight/{name}", float("nan"))
        if a is None or b is None:
            lines.append(f"{name:<16}{w:>8.3f}{'n/a':>12}{'n/a':>12}")
            continue
        lines.append(f"{name:<16}{w:>8.3f}{a:>12.3f}{b:>12.3f}{b - a:>+9.3f}")
    return "\n".join(lines)


class ConfigError(Exception):
    """A recipe or CLI mistake found before any model is loaded (reported on one line)."""


def _fail(exc: BaseException) -> None:
    sys.stderr.write(f"mo-align: error: {exc}\n")
    raise SystemExit(2) from exc


def cli(argv: Sequence[str] | None = None) -> None:
    """Parse, validate and train; configuration mistakes exit with status 2 and a one-line message."""
    try:
        script_args, training_args, model_args = parse_args(argv)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        _fail(exc)
    try:
        main(script_args, training_args, model_args)
    except ConfigError as exc:
        _fail(exc)


if __name__ == "__main__":
    cli()
