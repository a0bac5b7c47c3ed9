"""Supervised warm start of the lab model on the style mix, cached by its configuration and seed.

Plain PyTorch loop: batches of freshly sampled (problem, style) pairs, loss on the completion and its
EOS only, AdamW with warm-up then cosine decay to 10 %. The prompt string is exactly the one GRPOTrainer builds
(``apply_chat_template(..., add_generation_prompt=True)``). After training, the policy's sampled mean completion
length on the held-out prompts becomes the *fixed* conciseness reference for evaluation.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mo_align.lab.task import (
    DEFAULT_TASK,
    MODEL_CONFIG,
    Regime,
    get_regime,
    prompt_text,
    sample_completion,
    split_problems,
)
from mo_align.testing import make_tiny_model


SFT_VERSION = 3


def sft_key(seed: int, steps: int, batch: int, lr: float, regime: Regime | None = None) -> str:
    """Cache key: the model, the task regime (style shares, G's accuracy, eval split size) and the SFT recipe."""
    regime = regime or get_regime(DEFAULT_TASK)
    payload = {
        "v": SFT_VERSION,
        "model": MODEL_CONFIG,
        "task": regime.key(),
        "seed": seed,
        "steps": steps,
        "batch": batch,
        "lr": lr,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def _chat(tok: Any, text: str) -> str:
    return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)


def _batch(tok: Any, problems: list, rng: random.Random, size: int, regime: Regime) -> dict[str, torch.Tensor]:
    prompts, fulls = [], []
    for p in rng.sample(problems, size):
        _, completion = sample_completion(p, rng, regime)
        prompt = _chat(tok, prompt_text(p))
        prompts.append(prompt)
        fulls.append(prompt + completion + tok.eos_token)
    enc = tok(fulls, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False)
    labels = enc["input_ids"].clone()
    labels[enc["attention_mask"] == 0] = -100
    for i, prompt in enumerate(prompts):
        labels[i, : len(tok(prompt, add_special_tokens=False)["input_ids"])] = -100
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}


@torch.no_grad()
def sample_ids(model: Any, tok: Any, texts: list[str], batch: int = 128) -> list[list[int]]:
    """Completion ids of ``texts`` sampled at T = 1 (top-k/top-p off, ≤ 64 tokens), padding cut, cut after the first
    EOS (kept): the lab's sampled evaluation."""
    out_ids = []
    for start in range(0, len(texts), batch):
        enc = tok(texts[start : start + batch], return_tensors="pt", padding=True, padding_side="left")
        out = model.generate(
            **enc,
            max_new_tokens=64,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        for ids in out[:, enc["input_ids"].shape[1] :].tolist():
            cut = [t for t in ids if t != tok.pad_token_id]
            out_ids.append(cut[: cut.index(tok.eos_token_id) + 1] if tok.eos_token_id in cut else cut)
    return out_ids


def sampled_mean_length(model: Any, tok: Any, problems: list, samples: int = 4, seed: int = 0) -> float:
    """Mean completion length (tokens, EOS included) of T=1 samples on the given prompts."""
    torch.manual_seed(seed)
    lengths = [
        len(ids)
        for ids in sample_ids(model, tok, [_chat(tok, prompt_text(p)) for p in problems for _ in range(samples)])
    ]
    return sum(lengths) / len(lengths)


def lr_factor(step: int, warm: int, steps: int) -> float:
    """The warm start's learning-rate multiplier: (step + 1) / warm for the first ``warm`` steps, then a cosine from 1
    to 0.1 over the rest.

    transformers' ``get_cosine_with_min_lr_schedule_with_warmup`` starts at lr 0 (step / warm: up to 1.1 % of the
    peak apart over the 87 warm-up steps of 700) and its ``..._lr_rate`` variant shifts the cosine by one step (up to
    0.23 % apart); either would change the cached warm start (:func:`sft_key`), so this one stays.
    """
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, steps - warm)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def _fit(
    model: Any, tok: Any, train: list, regime: Regime, rng: random.Random, steps: int, batch: int, lr: float, log: Any
) -> torch.Tensor:
    """The warm start's SFT loop (AdamW, :func:`lr_factor`, gradient clipping at 1); returns the last loss."""
    t0 = time.time()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warm = min(100, steps // 8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, functools.partial(lr_factor, warm=warm, steps=steps))
    loss = torch.tensor(0.0)
    for step in range(steps):
        loss = model(**_batch(tok, train, rng, batch, regime)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if log and (step + 1) % 100 == 0:
            log(f"sft step {step + 1}/{steps} loss {loss.item():.3f} ({time.time() - t0:.0f} s)")
    return loss


def cached_warm_start(
    cache_root: str, regime: Regime, seed: int = 0, steps: int = 700, batch: int = 64, lr: float = 2e-3
) -> tuple[str, dict | None]:
    """(model dir, metadata) of the cached warm start of this configuration; metadata ``None`` when not cached."""
    out = os.path.join(cache_root, f"sft-{sft_key(seed, steps, batch, lr, regime)}")
    meta_path = os.path.join(out, "lab_sft.json")
    if not os.path.exists(meta_path):
        return out, None
    with open(meta_path) as f:
        return out, json.load(f)


def warm_start(
    cache_root: str,
    seed: int = 0,
    steps: int = 700,
    batch: int = 64,
    lr: float = 2e-3,
    log=None,
    regime: Regime | None = None,
    task: str | None = None,
) -> tuple[str, dict]:
    """Return (model dir, metadata), training and caching it under ``cache_root/sft-<key>`` if needed.

    ``regime`` (default: the registered regime ``task``, else :data:`~mo_align.lab.task.DEFAULT_TASK`) sets the
    style mix; it is part of the cache key, so every regime (and every knob value of a sweep) has its own warm start.
    """
    regime = regime or get_regime(task or DEFAULT_TASK)
    out, meta = cached_warm_start(cache_root, regime, seed, steps, batch, lr)
    if meta is not None:
        return out, meta
    t0 = time.time()
    os.makedirs(cache_root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".sft-tmp-", dir=cache_root)
    make_tiny_model(tmp, seed=seed, **MODEL_CONFIG)
    tok = AutoTokenizer.from_pretrained(tmp)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32)
    model.train()
    train, held_out = split_problems()
    loss = _fit(model, tok, train, regime, random.Random(seed), steps, batch, lr, log)
    model.eval()
    meta = {
        "task": task,
        **regime.key(),
        "seed": seed,
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "final_loss": float(loss.detach()),
        "reference_length": sampled_mean_length(model, tok, held_out),
        "seconds": time.time() - t0,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    with open(os.path.join(tmp, "lab_sft.json"), "w") as f:
        json.dump(meta, f, indent=1)
    if os.path.exists(out):
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out, meta
