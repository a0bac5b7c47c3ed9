"""Per-objective evaluation: decode an eval split and score every objective (``MOGRPOTrainer.evaluate``).

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
from typing import Any

import torch
from tqdm.auto import tqdm
from trl.models.utils import unwrap_model_for_generation

from mo_align.rewards.checks import check_reward_output
from mo_align.rewards.common import call_frozen


def eval_rows(dataset: Any) -> list[dict]:
    """Every row of an eval split: a map-style dataset by index, an iterable one (``datasets.IterableDataset``,
    streaming) by iterating it once (it must be finite)."""
    if dataset is None:
        raise ValueError("evaluate() needs an eval_dataset")
    iterable = isinstance(dataset, torch.utils.data.IterableDataset) or not hasattr(dataset, "__getitem__")
    if not iterable and hasattr(dataset, "__len__"):
        return [dataset[i] for i in range(len(dataset))]
    return list(dataset)


def prompt_text(trainer: Any, prompt: Any) -> str:
    if isinstance(prompt, list):
        kwargs = getattr(trainer, "chat_template_kwargs", None) or {}
        return trainer.processing_class.apply_chat_template(
            prompt, tokenize=False, add_generation_prompt=True, **kwargs
        )
    return prompt


@torch.no_grad()
def decode_and_score(trainer: Any, rows: list[dict], description: str = "Evaluation") -> tuple[torch.Tensor, ...]:
    """Decode ``rows`` (split over the processes) and score them: ((n, K + F) rewards, (n,) lengths), gathered.

    Columns K.. are the fixed-reference scores of the objectives that have one (``reference_scores``). The model is
    left in eval mode, as transformers' evaluation loop leaves it.
    """
    args = trainer.args
    if not rows:
        raise ValueError("the eval dataset is empty")
    world, rank = trainer.accelerator.num_processes, trainer.accelerator.process_index
    per_rank = math.ceil(len(rows) / world)
    mine = rows[rank * per_rank : (rank + 1) * per_rank]
    n_real = len(mine)
    mine = mine + [rows[0]] * (per_rank - n_real)  # equal work on every rank (collective gathers under ZeRO-3)
    samples = max(1, args.mo_eval_num_samples)
    mine = [row for row in mine for _ in range(samples)]
    tok = trainer.processing_class
    batch = max(1, args.per_device_eval_batch_size)
    completions_ids: list[list[int]] = []
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
    bar = tqdm(
        total=len(mine),
        desc=description,
        unit="completion",
        leave=False,
        disable=bool(args.disable_tqdm) or not trainer.accelerator.is_local_main_process,
    )
    with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as model:
        for start in range(0, len(mine), batch):
            chunk = mine[start : start + batch]
            texts = [prompt_text(trainer, row["prompt"]) for row in chunk]
            enc = tok(text=texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
            enc = {k: v.to(trainer.accelerator.device) for k, v in enc.items()}
            out = model.generate(**enc, **gen_kwargs)[:, enc["input_ids"].shape[1] :]
            for ids in out.tolist():
                cut = [t for t in ids if t != tok.pad_token_id]
                if tok.eos_token_id in cut:
                    cut = cut[: cut.index(tok.eos_token_id) + 1]
                completions_ids.append(cut)
            bar.update(len(chunk))
    bar.close()
    texts = tok.batch_decode(completions_ids, skip_special_tokens=True)
    conversational = isinstance(mine[0]["prompt"], list)
    completions = [[{"role": "assistant", "content": t}] if conversational else t for t in texts]
    local = score_rewards(trainer, mine, completions, completions_ids)  # (n_local, K + F)
    lengths = torch.tensor([len(c) for c in completions_ids], dtype=torch.float32)
    keep = torch.zeros(len(mine), dtype=torch.bool)
    keep[: n_real * samples] = True  # drop the padding rows after gathering
    packed = torch.cat([local, lengths[:, None], keep[:, None].float()], dim=1).to(trainer.accelerator.device)
    gathered = trainer.accelerator.gather(packed).cpu()
    gathered = gathered[gathered[:, -1] > 0]
    return gathered[:, :-2], gathered[:, -2]


def score_rewards(trainer: Any, rows: list[dict], completions: list, completion_ids: list[list[int]]) -> torch.Tensor:
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
    trainer: Any, model: torch.nn.Module, processing_class: Any, prompts: list, completions: list
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


def fixed_reference_columns(reward_funcs: list) -> list[int]:
    """Indices of the objectives whose reward also scores against a fixed reference (in column order)."""
    return [k for k, fn in enumerate(reward_funcs) if callable(getattr(fn, "reference_scores", None))]
