"""Entry point: ``python -m mo_align.train --config recipes/<model>/<algo>.yaml`` (or ``mo-align train ...``).

Launch on several processes with ``accelerate launch --config_file configs/accelerate/<hw>.yaml -m mo_align.train
--config ...``. Order follows open-r1's ``grpo.py``: parse and validate everything (weighting, rewards, data) before
the model is loaded, then build the trainer, train (resuming from the last checkpoint), save.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import datasets
import transformers
import yaml
from huggingface_hub import constants, try_to_load_from_cache
from transformers import AutoTokenizer, set_seed
from trl import ModelConfig, TrlParser, get_peft_config, get_quantization_config

from mo_align.checkpoints import DiskFullError, disk_full_guard, last_complete_checkpoint, skip_message
from mo_align.configs import MOGRPOConfig, MOScriptArguments
from mo_align.data.math500 import load_split
from mo_align.data.synthetic import make_synthetic
from mo_align.deepspeed_setup import ExtensionLockError
from mo_align.extras import MissingExtraError, check_report_to, require
from mo_align.launch import hub_token_flag, refuse_hub_token
from mo_align.objectives import plan_run
from mo_align.preferences import check_run as check_conditioning
from mo_align.recipe import check_recipe, config_path, save_recipe
from mo_align.redaction import TOKEN_ENV_VARS
from mo_align.rewards import get_reward_funcs
from mo_align.rewards.checks import RewardError, check_reward_output
from mo_align.rewards.common import call_frozen
from mo_align.runs.files import CONFIG_FILE
from mo_align.runs.finished import finished_message, mark_finished, unmark_finished


if TYPE_CHECKING:
    from transformers import Trainer


logger = logging.getLogger("mo_align")


def make_parser() -> TrlParser:
    # no abbreviations: `--hub_tok X` was read as --hub_token (a recipe's flags are spelled out in full anyway)
    return TrlParser((MOScriptArguments, MOGRPOConfig, ModelConfig), allow_abbrev=False)


def parse_args(argv: Sequence[str] | None = None) -> tuple[MOScriptArguments, MOGRPOConfig, ModelConfig]:
    """Parse a recipe plus CLI overrides; an unknown recipe key is an error naming it.

    The recipe file is checked first (size, alias expansion, tags, syntax: :mod:`mo_align.recipe`), and a hub token
    is refused on the command line or in a recipe: trackers record the command line (wandb's run metadata, which
    ``wandb sync`` uploads) and recipes get committed; ``HF_TOKEN`` in the environment is read by huggingface_hub.
    """
    args = list(argv) if argv is not None else sys.argv[1:]
    refuse_hub_token(args)  # every spelling, before the parser could echo it in an error
    path = config_path(args)
    if path is not None:
        check_recipe(path)  # size, alias bombs, tags, syntax: safe to load
        with open(path, encoding="utf-8") as f:
            recipe = yaml.safe_load(f)
        _refuse_recipe_token(recipe)  # a secret first, in any spelling, so no message leads to renaming it
        check_recipe(path, make_parser().dataclass_types)  # then unknown keys, then every value's type
    parsed = make_parser().parse_args_and_config(args=args)
    if parsed[1].hub_token is not None:  # the parsed value, whatever spelling set it
        raise ValueError("hub_token was set on the command line, which trackers record; export HF_TOKEN instead")
    return parsed


def _refuse_recipe_token(recipe: dict[str, Any]) -> None:
    """A Hub token in a recipe (``hub_token`` in any spelling, or ``env: {HF_TOKEN: ...}``, which TRL's parser
    exports) is a secret in a file that gets shared and copied into run directories."""
    env = recipe.get("env") if isinstance(recipe.get("env"), dict) else {}
    keys = [k for k, v in recipe.items() if v is not None and hub_token_flag([f"--{k}"])]
    keys += [f"env.{k}" for k in TOKEN_ENV_VARS if env.get(k)]
    if keys:
        raise ValueError(f"{keys[0]} in a recipe is a secret in a file that gets shared; export HF_TOKEN instead")


# ---- data -----------------------------------------------------------------------------------------------------
def load_datasets(script_args: MOScriptArguments, evaluate: bool = False) -> tuple[Any, Any]:
    """Return (train, eval or None) from ``dataset_path`` (dir or ``synthetic``) or ``dataset_name``.

    The eval split is TRL's ``dataset_test_split`` (``eval_split``, when set, names it instead), loaded when the run
    evaluates (``evaluate``) or when ``eval_split`` is given; ``validation`` and ``val`` name the same local split.
    """
    path = script_args.dataset_path
    eval_split = script_args.eval_split or (script_args.dataset_test_split if evaluate else None)
    if path == "synthetic":
        splits = make_synthetic(**script_args.dataset_kwargs)
        return splits["train"], (splits["test"] if eval_split else None)
    if path is not None:
        train = load_split(path, script_args.dataset_train_split)
        return train, (load_split(path, eval_split) if eval_split else None)
    if script_args.dataset_name is None:
        raise ValueError("no data: set dataset_path (a directory or 'synthetic') or dataset_name")
    try:
        ds = datasets.load_dataset(script_args.dataset_name, script_args.dataset_config)
    except OSError as exc:  # no network, offline mode without a cached copy, a gated or missing repository
        reason = " ".join(str(exc).split())[:200]
        raise ValueError(
            f"dataset_name {script_args.dataset_name!r} could not be loaded ({type(exc).__name__}: {reason}); "
            "for local data set dataset_path (mo-align data math500 --out data/math500 prepares MATH-500)"
        ) from exc
    if eval_split in ("val", "validation") and eval_split not in ds:
        eval_split = "validation" if eval_split == "val" else "val"
    for split in (script_args.dataset_train_split, eval_split):
        if split and split not in ds:
            raise ValueError(f"dataset {script_args.dataset_name!r} has no split {split!r} (splits: {sorted(ds)})")
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
        check_reward_output(name, out, len(rows))  # a list of finite numbers or None, one per completion


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


TINY_MODEL_HINT = "the tiny offline model of recipes/tiny/ is written by `make tiny-model` (outputs/tiny-model)"


def check_model_source(name: str | None) -> None:
    """``model_name_or_path`` is a local model directory, or a Hub id that is cached (offline) or left for loading
    (online, where :func:`load_tokenizer` names it if it cannot be fetched): one line naming it otherwise, before the
    slow imports and downloads."""
    if name is None:
        raise ValueError("model_name_or_path is required")
    if os.path.isdir(name):
        if not os.path.isfile(os.path.join(name, CONFIG_FILE)):
            raise ValueError(f"model_name_or_path {name!r}: a directory without config.json (not a saved model)")
        return
    looks_local = name.startswith((".", "/", "~")) or name.count("/") != 1 or os.path.exists(name)
    if looks_local:
        raise ValueError(f"model_name_or_path {name!r}: no such directory; {TINY_MODEL_HINT}")
    if constants.HF_HUB_OFFLINE and not isinstance(try_to_load_from_cache(name, CONFIG_FILE), str):
        raise ValueError(
            f"model_name_or_path {name!r}: not a local directory and not in the Hugging Face cache while "
            f"HF_HUB_OFFLINE=1 (download it online first); {TINY_MODEL_HINT}"
        )


def load_tokenizer(model_args: ModelConfig, training_args: MOGRPOConfig) -> Any:
    """The tokenizer of ``model_name_or_path``; a model that cannot be found or fetched is one line naming it."""
    try:
        return AutoTokenizer.from_pretrained(
            model_args.model_name_or_path,
            revision=model_args.model_revision,
            trust_remote_code=training_args.trust_remote_code,
        )
    except OSError as exc:  # not found on the Hub, no network, gated repository ...
        reason = " ".join(str(exc).split())[:200]
        raise ConfigError(
            f"model_name_or_path {model_args.model_name_or_path!r} could not be loaded ({type(exc).__name__}: "
            f"{reason}); {TINY_MODEL_HINT}"
        ) from exc


# ---- main -----------------------------------------------------------------------------------------------------
def main(
    script_args: MOScriptArguments, training_args: MOGRPOConfig, model_args: ModelConfig, recipe: str | None = None
) -> Any:
    """Validate, load, train and save; ``None`` (nothing done, one line said) when ``output_dir`` holds a finished
    run and ``continue_finished_run`` is not set. ``recipe`` (the ``--config`` file) is copied into ``output_dir``
    first as ``mo_recipe.yaml``, secrets redacted (:func:`mo_align.recipe.save_recipe`), so the model card can name
    it."""
    setup_logging(training_args)
    if already_finished(script_args, training_args):
        return None
    set_seed(training_args.seed)
    reward_funcs, weighting, train_dataset, eval_dataset = validate(script_args, training_args, model_args)
    if recipe is not None and training_args.should_save:
        save_recipe(recipe, training_args.output_dir)

    # ---- tokenizer and model ------------------------------------------------------------------------------------
    tokenizer = load_tokenizer(model_args, training_args)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    training_args.model_init_kwargs = model_init_kwargs(model_args, training_args)
    training_args.mo_dataset_name = (
        training_args.mo_dataset_name or script_args.dataset_name or script_args.dataset_path
    )
    # lazy: TRL's GRPOTrainer (seconds to import) loads once the recipe, the flags, the data and the model source
    # were checked (validate), so a mistake in them is one line without that wait
    from mo_align.trainer import MOGRPOTrainer

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

    # ---- train (resume from the newest complete checkpoint if there is one), save, finish ------------------------
    result = trainer.train(resume_from_checkpoint=resume_checkpoint(training_args))
    metrics = {**result.metrics, "train_samples": _count(train_dataset)}
    trainer.log_metrics("train", metrics)
    save_final(trainer, training_args.output_dir, metrics)
    logger.info("model saved to %s", training_args.output_dir)
    if trainer.accelerator.is_main_process:
        sys.stdout.write(objective_table(trainer.state.log_history, trainer.mo.objective_names) + "\n")
    trainer.end()
    return trainer


def already_finished(script_args: MOScriptArguments, training_args: MOGRPOConfig) -> bool:
    """Whether ``output_dir`` holds a finished run that this call leaves alone (said in one line): auto-resume
    would train past ``max_steps`` and replace the final model. ``continue_finished_run`` trains on."""
    if script_args.continue_finished_run:
        return False
    message = finished_message(training_args.output_dir, training_args.max_steps)
    if message is not None and training_args.process_index == 0:
        sys.stderr.write(f"mo-align: {message}\n")
    return message is not None


def save_final(trainer: Trainer, output_dir: str, metrics: dict[str, Any]) -> None:
    """Metrics, state and the final model, as TRL's scripts save them, then the finished-run marker; a full disk
    is one line naming ``output_dir``."""
    main_process = trainer.accelerator.is_main_process
    with disk_full_guard(output_dir, "the final model"):
        if main_process:
            unmark_finished(output_dir)  # until the final model is complete again
        trainer.save_metrics("train", metrics)  # train_results.json and all_results.json
        trainer.save_state()  # trainer_state.json (log history) in output_dir
        trainer.save_model(output_dir)
        if main_process:
            mark_finished(output_dir, trainer.state.global_step, trainer.state.max_steps)


def validate(script_args: MOScriptArguments, training_args: MOGRPOConfig, model_args: ModelConfig) -> tuple:
    """Objectives, weighting, data and optional packages, checked before any model is loaded (one-line errors):
    returns (reward functions, weighting, train split, eval split or None)."""
    try:
        check_model_source(model_args.model_name_or_path)
        names = list(script_args.reward_funcs)
        reward_funcs = get_reward_funcs(names, script_args.reward_kwargs)
        plan = plan_run(names, reward_funcs, script_args.reward_kwargs, training_args)  # roles, conditions
        weighting = plan.build_weighting(training_args)  # K = the train objectives
        train_dataset, eval_dataset = load_datasets(script_args, evaluate=training_args.eval_strategy != "no")
        preflight_rewards(reward_funcs, names, train_dataset)
        check_conditioning(training_args.preference_conditioning, reward_funcs, train_dataset)
        if eval_dataset is None and training_args.eval_strategy != "no":
            raise ValueError("eval_strategy is set but no eval split was loaded (set dataset_test_split)")
        if model_args.load_in_4bit or model_args.load_in_8bit:
            require("bitsandbytes", "load_in_4bit" if model_args.load_in_4bit else "load_in_8bit")
        check_report_to(training_args.report_to)
        if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
            require("deepspeed", "an accelerate config with distributed_type: DEEPSPEED")
    except (MissingExtraError, ValueError, TypeError, FileNotFoundError) as exc:
        raise ConfigError(str(exc)) from exc
    return reward_funcs, weighting, train_dataset, eval_dataset


def resume_checkpoint(training_args: MOGRPOConfig) -> str | None:
    """``resume_from_checkpoint`` as given, else the newest complete checkpoint of ``output_dir`` (logged)."""
    checkpoint = training_args.resume_from_checkpoint
    if checkpoint is None:
        checkpoint, skipped = last_complete_checkpoint(training_args.output_dir)  # complete ones only
        for folder, reason in skipped:
            logger.warning(skip_message(folder, reason))
        if checkpoint is not None:
            logger.info("resuming from %s (the newest complete checkpoint)", checkpoint)
    return checkpoint


def setup_logging(training_args: MOGRPOConfig) -> None:
    """Per-process log level, as TRL's and open-r1's scripts: ``log_level`` on the main process, ``log_level_replica``
    (default: warning) on the others; mo_align, transformers and datasets follow it. With the default ``passive``
    main-process level mo_align's own messages stay at info (transformers' and datasets' levels are left alone)."""
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
    """Per-objective training reward (TRL's ``rewards/<objective>/mean``, else ``mo/reward/<objective>/mean`` as
    older versions logged): first logged step, last logged step, delta; plus final weights."""
    rows = [h for h in log_history if any(k.startswith(("rewards/", "mo/reward/")) for k in h)]
    if not rows:
        return "(no multi-objective metrics were logged)"
    first, last = rows[0], rows[-1]
    header = (
        f"{'objective':<16}{'weight':>8}{'step ' + str(first.get('step')):>12}{'step ' + str(last.get('step')):>12}"
    )
    lines = ["per-objective training reward (mean over the generation batch)", header + f"{'delta':>9}"]
    for name in objectives:
        a, b = (h.get(f"rewards/{name}/mean", h.get(f"mo/reward/{name}/mean")) for h in (first, last))
        w = last.get(f"mo/weight/{name}", float("nan"))
        if a is None or b is None:
            lines.append(f"{name:<16}{w:>8.3f}{'n/a':>12}{'n/a':>12}")
            continue
        lines.append(f"{name:<16}{w:>8.3f}{a:>12.3f}{b:>12.3f}{b - a:>+9.3f}")
    return "\n".join(lines)


class ConfigError(Exception):
    """A recipe or CLI mistake found before any model is loaded (reported on one line)."""


MAX_MESSAGE_CHARS = 600  # an error line quotes at most this much (values are excerpted where they are named)


def _fail(exc: BaseException, recipe: str | None = None) -> None:
    message = " ".join(str(exc).split()) or type(exc).__name__
    if recipe is not None and not message.startswith(recipe):
        message = f"{recipe}: {message}"
    if len(message) > MAX_MESSAGE_CHARS:
        message = f"{message[: MAX_MESSAGE_CHARS - 30]}... ({len(message):,} chars in all)"
    sys.stderr.write(f"mo-align: error: {message}\n")
    raise SystemExit(2) from exc


def cli(argv: Sequence[str] | None = None) -> None:
    """Parse, validate and train; configuration mistakes exit with status 2 and a one-line message naming the
    recipe file and the field."""
    args = list(argv) if argv is not None else sys.argv[1:]
    recipe = config_path(args)
    try:
        script_args, training_args, model_args = parse_args(args)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        _fail(exc, recipe)
    except ExtensionLockError as exc:  # the machine's, not the recipe's: no file named
        _fail(exc)
    try:
        main(script_args, training_args, model_args, recipe=recipe)
    except ConfigError as exc:  # a missing optional package is the machine's, not the recipe's: no file named
        _fail(exc, None if isinstance(exc.__cause__, MissingExtraError) else recipe)
    except RewardError as exc:  # found while training (a bad value, objectives that never score): one line
        _fail(exc)
    except DiskFullError as exc:  # the machine's too; not a configuration mistake: exit status 1
        sys.stderr.write(f"mo-align: error: {exc}\n")
        raise SystemExit(1) from exc


if __name__ == "__main__":
    cli()
