"""Per-objective evaluation: decode an eval split and score every objective (override 5 of ``MOGRPOTrainer``).

The paper evaluates each objective on held-out prompts with greedy decoding, one completion per prompt
(``mo_eval_temperature`` / ``mo_eval_num_samples`` switch to sampled evaluation). Every reward is scored on
those completions the way TRL scores it in training: a function gets the prompts, completions, completion ids and
the dataset's other columns; an ``nn.Module`` reward model (``AutoModelForSequenceClassification``, TRL's usual
case) gets prompt + completion through its processing class and its first logit is the reward. Stateful rewards
are scored frozen (``training = False``): evaluation never moves a running mean.

Deviation from TRL: TRL's own evaluation samples ``num_generations_eval`` completions per prompt and reports the
GRPO loss on them; that loop still runs beside this one (``mo_eval_loss``), so ``eval_loss`` is kept.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from accelerate.utils import gather_object
from tqdm.auto import tqdm
from trl.models.utils import unwrap_model_for_generation

from mo_align.rewards.checks import check_reward_output
from mo_align.rewards.common import call_frozen
from mo_align.stats import bootstrap_mean_ci, paired_delta_ci, run_preference


if TYPE_CHECKING:
    from mo_align.trainer import MOGRPOTrainer


class RewardScorer(Protocol):
    """What :func:`score_rewards` reads: the trainer, or any holder of reward functions (the lab scores an SFT
    model's completions offline with a namespace of its rewards). An ``nn.Module`` reward needs the trainer."""

    reward_funcs: list[Any]
    state: Any


def eval_rows(dataset: Any) -> list[dict]:
    """Every row of an eval split: a map-style dataset by index, an iterable one (``datasets.IterableDataset``,
    streaming) by iterating it once (it must be finite)."""
    if dataset is None:
        raise ValueError("evaluate() needs an eval_dataset")
    iterable = isinstance(dataset, torch.utils.data.IterableDataset) or not hasattr(dataset, "__getitem__")
    if not iterable and hasattr(dataset, "__len__"):
        return [dataset[i] for i in range(len(dataset))]
    return list(dataset)


def prompt_text(trainer: MOGRPOTrainer, prompt: Any) -> str:
    if isinstance(prompt, list):
        kwargs = getattr(trainer, "chat_template_kwargs", None) or {}
        return trainer.processing_class.apply_chat_template(
            prompt, tokenize=False, add_generation_prompt=True, **kwargs
        )
    return prompt


@torch.no_grad()
def decode_and_score(
    trainer: MOGRPOTrainer, rows: list[dict], description: str = "Evaluation"
) -> tuple[torch.Tensor, ...]:
    """Decode ``rows`` (split over the processes) and score them: ((n, K + F) rewards, (n,) lengths), gathered.

    Columns K.. are the fixed-reference scores of the objectives that have one (``reference_scores``). The model is
    left in eval mode, as transformers' evaluation loop leaves it.
    """
    if not rows:
        raise ValueError("the eval dataset is empty")
    acc = trainer.accelerator
    with acc.split_between_processes(rows) as real:
        n_real = len(real)
    with acc.split_between_processes(rows, apply_padding=True) as padded:  # equal work (collectives under ZeRO-3)
        mine = list(padded)
    samples = max(1, trainer.args.mo_eval_num_samples)
    mine = [row for row in mine for _ in range(samples)]
    completions_ids = _decode(trainer, mine, description)
    texts = trainer.processing_class.batch_decode(completions_ids, skip_special_tokens=True)
    conversational = isinstance(mine[0]["prompt"], list)
    completions = [[{"role": "assistant", "content": t}] if conversational else t for t in texts]
    local = score_rewards(trainer, mine, completions, completions_ids)  # (n_local, K + F)
    lengths = torch.tensor([len(c) for c in completions_ids], dtype=torch.float32)
    keep = torch.zeros(len(mine), dtype=torch.bool)
    keep[: n_real * samples] = True  # drop the padding rows after gathering
    packed = torch.cat([local, lengths[:, None], keep[:, None].float()], dim=1).to(acc.device)
    gathered = acc.gather(packed).cpu()
    trainer.mo.eval_labels = _labels(trainer, texts, keep)
    gathered = gathered[gathered[:, -1] > 0]
    return gathered[:, :-2], gathered[:, -2]


def _labels(trainer: MOGRPOTrainer, texts: list[str], keep: torch.Tensor) -> list[str] | None:
    """``mo.eval_labeler(text)`` of every completion, gathered over the processes in the rows' order (padding rows
    dropped), or ``None`` without a labeler."""
    labeler = trainer.mo.eval_labeler
    if labeler is None:
        return None
    local = [(str(labeler(t)), bool(k)) for t, k in zip(texts, keep.tolist(), strict=True)]
    pairs = gather_object(local) if trainer.accelerator.num_processes > 1 else local
    return [label for label, kept in pairs if kept]


def _decode(trainer: MOGRPOTrainer, rows: list[dict], description: str) -> list[list[int]]:
    """Completion token ids of every row (greedy or sampled per ``mo_eval_temperature``), EOS kept, padding cut."""
    args, tok = trainer.args, trainer.processing_class
    gen_kwargs = {
        "max_new_tokens": args.max_completion_length,
        "do_sample": args.mo_eval_temperature > 0,
        "pad_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    if args.mo_eval_temperature > 0:
        gen_kwargs.update(temperature=args.mo_eval_temperature, top_p=1.0, top_k=0)
    else:
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)
    trainer.model.eval()
    hide = bool(args.disable_tqdm) or not trainer.accelerator.is_local_main_process
    bar = tqdm(total=len(rows), desc=description, unit="completion", leave=False, disable=hide)
    batch, out_ids = max(1, args.per_device_eval_batch_size), []
    with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as model:
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            texts = [prompt_text(trainer, row["prompt"]) for row in chunk]
            enc = tok(text=texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
            enc = {k: v.to(trainer.accelerator.device) for k, v in enc.items()}
            out = model.generate(**enc, **gen_kwargs)[:, enc["input_ids"].shape[1] :]
            for ids in out.tolist():
                cut = [t for t in ids if t != tok.pad_token_id]
                out_ids.append(cut[: cut.index(tok.eos_token_id) + 1] if tok.eos_token_id in cut else cut)
            bar.update(len(chunk))
    bar.close()
    return out_ids


def score_rewards(
    trainer: RewardScorer, rows: list[dict], completions: list, completion_ids: list[list[int]]
) -> torch.Tensor:
    """(n, K + F): every objective's reward (None -> NaN), then the fixed-reference scores (see module doc)."""
    keys = [k for k in rows[0] if k not in ("prompt", "completion", "completion_ids")]
    kwargs = {k: [row[k] for row in rows] for k in keys}
    prompts = [row["prompt"] for row in rows]
    cols = []
    classes = getattr(trainer, "reward_processing_classes", None) or [None] * len(trainer.reward_funcs)
    for fn, processing_class in zip(trainer.reward_funcs, classes, strict=True):
        if isinstance(fn, torch.nn.Module):
            cols.append(reward_model_scores(trainer, fn, processing_class, prompts, completions))
            continue
        out = call_frozen(fn, prompts, completions, completion_ids, trainer.state, **kwargs)
        if inspect.isawaitable(out):  # an async reward function (TRL runs those concurrently in training)
            out = asyncio.run(_await(out))
        check_reward_output(getattr(fn, "__name__", type(fn).__name__), out, len(rows))
        cols.append([math.nan if v is None else float(v) for v in out])
    for fn in trainer.reward_funcs:  # objectives with a second, fixed reference (conciseness): score both ways
        if callable(getattr(fn, "reference_scores", None)):
            alt = fn.reference_scores(
                prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs
            )
            cols.append([math.nan if v is None else float(v) for v in alt])
    return torch.tensor(cols, dtype=torch.float32).T.reshape(len(rows), len(cols))


async def _await(awaitable: Any) -> Any:
    return await awaitable


@torch.inference_mode()
def reward_model_scores(
    trainer: MOGRPOTrainer, model: torch.nn.Module, processing_class: Any, prompts: list, completions: list
) -> list[float]:
    """First logit of a sequence-classification reward model on prompt + completion (chat template applied to a
    conversation, plain concatenation otherwise, right padding, no added special tokens: TRL's training path)."""
    if processing_class is None:
        raise ValueError(f"reward model {type(model).__name__} has no processing class to tokenize completions")
    if isinstance(prompts[0], list):
        kwargs = getattr(trainer, "chat_template_kwargs", None) or {}
        texts = [
            processing_class.apply_chat_template(p + c, tokenize=False, **kwargs)
            for p, c in zip(prompts, completions, strict=True)
        ]
    else:
        texts = [p + c for p, c in zip(prompts, completions, strict=True)]
    batch = max(1, trainer.args.per_device_eval_batch_size)
    scores: list[float] = []
    for start in range(0, len(texts), batch):
        enc = processing_class(
            text=texts[start : start + batch],
            return_tensors="pt",
            padding=True,
            padding_side="right",
            add_special_tokens=False,
        )
        enc = {k: v.to(trainer.accelerator.device) for k, v in enc.items()}
        scores += model(**enc).logits[:, 0].float().cpu().tolist()
    return scores


def missing_references(trainer: MOGRPOTrainer) -> dict[str, str]:
    """Objectives whose reward has no reference to score against yet (conciseness against a running mean before
    the first training batch), with the reward's reason: their evaluation is not available (NaN), so no Δ, CI or
    interference verdict starts from it."""
    out = {}
    for fn, name in zip(trainer.reward_funcs, trainer.objective_names):
        check = getattr(fn, "missing_reference", None)
        fixed = trainer.args.mo_eval_fixed_reference and callable(getattr(fn, "reference_scores", None))
        reason = check(fixed=fixed) if callable(check) else None
        if reason:
            out[name] = reason
    return out


def _weighted(trainer: MOGRPOTrainer, rewards: torch.Tensor) -> torch.Tensor:
    """The columns of the weighting (``train`` objectives) of (..., K) eval rewards, their conditions applied
    (:class:`mo_align.objectives.ObjectivePlan`); every column without a plan."""
    plan = trainer.mo.plan
    return rewards if plan is None else plan.weighted(rewards)


def fixed_scalar(rewards: np.ndarray, weights: Any, start: np.ndarray) -> np.ndarray:
    """(prompts, samples) fixed scalar Σ_k w_k r_k of (prompts, samples, K) rewards, over the objectives the first
    evaluation (``start``) scored: an objective without a step-0 value is left out at every evaluation, so the
    scalar's Δ compares like with like. NaN scores are skipped; a row without any score is NaN."""
    keep = np.isfinite(start).any(axis=(0, 1))
    r = rewards[..., keep]
    s = np.nansum(r * np.asarray(weights, dtype=np.float64)[keep], axis=-1)
    s[np.isnan(r).all(axis=-1)] = np.nan
    return s


def fixed_reference_columns(reward_funcs: list) -> list[int]:
    """Indices of the objectives whose reward also scores against a fixed reference (in column order)."""
    return [k for k, fn in enumerate(reward_funcs) if callable(getattr(fn, "reference_scores", None))]


def resolve_target(trainer: MOGRPOTrainer, eval_dataset: Any) -> tuple[Any, bool]:
    """(the dataset ``evaluate`` will decode, whether it is the trainer's own split: deltas and history)."""
    own = eval_dataset is None or isinstance(eval_dataset, str)
    if isinstance(eval_dataset, str):
        target = trainer.eval_dataset[eval_dataset]
    else:
        target = eval_dataset if eval_dataset is not None else trainer.eval_dataset
    if target is None:
        raise ValueError("evaluate() needs an eval_dataset")
    return target, own


def eval_metrics(
    trainer: MOGRPOTrainer, scores: torch.Tensor, lengths: torch.Tensor, p: str, own: bool
) -> dict[str, float]:
    """Metrics ``<p>_<objective>/mean`` (+ ``/delta`` vs the first evaluation of the trainer's own split); the
    primary split (``eval``, or the first of a dict) also feeds the run history and the interference monitor."""
    t = trainer
    metrics: dict[str, float] = {}
    k_obj = len(t.mo.objective_names)
    rewards = scores[:, :k_obj].clone()
    for j, k in enumerate(fixed_reference_columns(t.reward_funcs)):
        # the paper's conciseness compares with the training running mean, which ratchets toward the policy and
        # hides a collapse: log both; `mo_eval_fixed_reference` picks the one used as the mean
        fixed, running = scores[:, k_obj + j], scores[:, k]
        name = t.mo.objective_names[k]
        metrics[f"{p}_{name}/fixed_ref"] = float(torch.nanmean(fixed)) if (~torch.isnan(fixed)).any() else math.nan
        no_mean = getattr(t.reward_funcs[k], "missing_reference", lambda fixed: None)(fixed=False)
        metrics[f"{p}_{name}/running_mean"] = math.nan if no_mean else float(torch.nanmean(running))
        if t.args.mo_eval_fixed_reference:
            rewards[:, k] = fixed
    unavailable = missing_references(t)
    for k, name in enumerate(t.mo.objective_names):
        if name in unavailable:  # e.g. the step-0 evaluation of conciseness against a running mean: no reference
            rewards[:, k] = math.nan
    for k, name in enumerate(t.mo.objective_names):
        finite = rewards[:, k][~torch.isnan(rewards[:, k])]
        metrics[f"{p}_{name}/mean"] = float(finite.mean()) if finite.numel() else float("nan")
    metrics[f"{p}_completion_length/mean"] = float(lengths.float().mean())
    if own:
        metrics.update(_deltas(t, metrics, rewards, lengths, p, unavailable))
    return metrics


def _deltas(
    trainer: MOGRPOTrainer, metrics: dict[str, float], rewards: torch.Tensor, lengths: torch.Tensor, p: str, missing
):
    """``<p>_<objective>/delta`` against the split's first evaluation; history and monitor for the primary split."""
    t = trainer
    means = {name: metrics[f"{p}_{name}/mean"] for name in t.mo.objective_names}
    scalar = t.mo.weighting.scalarize(_weighted(t, rewards))  # the train objectives, conditioned
    scalar_mean = float(torch.nanmean(scalar)) if (~torch.isnan(scalar)).any() else math.nan
    primary = p == ("eval" if not isinstance(t.eval_dataset, dict) else f"eval_{next(iter(t.eval_dataset))}")
    start = t.mo.eval_start if primary else t.mo.eval_starts.get(p)
    if start is None:
        start = {**means, "__scalar__": scalar_mean}
        if primary:
            t.mo.eval_start = start
        else:
            t.mo.eval_starts[p] = start
    out = {f"{p}_{name}/delta": means[name] - start.get(name, math.nan) for name in t.mo.objective_names}
    if primary:
        out.update(_primary(t, metrics, means, scalar, rewards, lengths, p, missing))
    return out


def _primary(t: MOGRPOTrainer, metrics, means, scalar, rewards, lengths, p: str, missing) -> dict[str, float]:
    """The trainer's own split: per-sample scores kept (``mo.eval_samples``), 95 % CIs over prompts of each mean and
    of each Δ vs the start (paired: the same prompts) and of the fixed scalar's Δ (:func:`fixed_scalar` with the
    run's preference, :func:`mo_align.stats.run_preference`), the run history (with the objectives ``missing`` a
    reference and why), interference events (:func:`mo_align.stats.interfering`), and the covariance-law check of
    the interval since the previous evaluation (:mod:`mo_align.stats`)."""
    step, samples = t.state.global_step, max(1, t.args.mo_eval_num_samples)  # rows are prompt-major
    shaped = {"rewards": rewards.reshape(-1, samples, rewards.shape[1]), "scalar": scalar.reshape(-1, samples)}
    shaped["lengths"] = lengths.reshape(-1, samples)
    record = {"step": step, **{k: v.tolist() for k, v in shaped.items()}}
    labels = t.mo.eval_labels
    if labels is not None and len(labels) == lengths.numel():  # one label per sample (``mo.eval_labeler``)
        record["labels"] = [labels[i : i + samples] for i in range(0, len(labels), samples)]
    t.mo.eval_samples.append(record)
    previous = t.mo.eval_samples[-2] if len(t.mo.eval_samples) > 1 else None
    first = np.asarray(t.mo.eval_samples[0]["rewards"], dtype=np.float64)  # converted once, not per objective
    before = None if previous is None else np.asarray(previous["rewards"], dtype=np.float64)
    cur, level = shaped["rewards"].double().numpy(), t.args.mo_eval_ci_level
    out, ci, delta_ci, realised = {}, {}, {}, {}
    for k, name in enumerate(t.mo.objective_names):
        c = bootstrap_mean_ci(cur[:, :, k], level)
        d = paired_delta_ci(first[:, :, k], cur[:, :, k], level)
        ci[name], delta_ci[name] = [c.low, c.high], [d.low, d.high]
        out.update({f"{p}_{name}/ci_low": c.low, f"{p}_{name}/ci_high": c.high})
        out.update({f"{p}_{name}/delta_ci_low": d.low, f"{p}_{name}/delta_ci_high": d.high})
        if before is not None:
            r = paired_delta_ci(before[:, :, k], cur[:, :, k], level)
            realised[name] = (r.estimate, r.low, r.high)
    weights = run_preference(t.weighting.hyperparameters(), len(t.mo.weighted_names))[0]
    first_w, cur_w = (_weighted(t, torch.from_numpy(x)).numpy() for x in (first, cur))
    s = paired_delta_ci(fixed_scalar(first_w, weights, first_w), fixed_scalar(cur_w, weights, first_w), level)
    entry = {"step": step, "means": means, "completion_length": metrics[f"{p}_completion_length/mean"]}
    entry.update(ci=ci, delta_ci=delta_ci, scalar_delta_ci=[s.low, s.high])
    t.mo.history["eval"].append({**entry, **({"unavailable": dict(missing)} if missing else {})})
    if t.mo.monitor is not None:
        out.update(t.mo.monitor.observe_eval(means, t.mo.eval_start, step, delta_ci, (s.low, s.high)))
        if previous is not None:
            out.update(t.mo.monitor.check_law(previous["step"], step, realised, level))
    return out
