"""Which rollout path without vLLM: transformers' ``generate`` vs its continuous-batching ``generate_batch``.

TRL's ``GRPOTrainer`` generates with ``model.generate`` (padded batches) unless ``use_transformers_continuous_batching``
is set (``use_transformers_paged`` is its deprecated name), then with ``model.generate_batch`` (paged KV cache,
continuous batching). :func:`greedy_agreement` runs both on the same prompts with greedy decoding and a fixed length,
and reports for each path the generated tokens per second and the peak memory, and between them whether the token
ids agree and how far apart the completions' log-probabilities are (teacher-forced through the same model, so a
difference comes from the tokens chosen, not from the scoring). The step-level cost of each path inside training is
a row of ``scripts/gpu_paper.py`` ("linear (continuous batching)"). Called by ``gpu_paper.py --rollout``; on the CPU
it is a rehearsal (``--device cpu --shape small``), not a measurement.
"""

from __future__ import annotations

import statistics
import time
from typing import Any


def _prompts(tok: Any, n: int) -> list[list[int]]:
    chats = [[{"role": "user", "content": f"Compute {i % 9 + 1} + {i % 7 + 2}, then explain."}] for i in range(n)]
    texts = [tok.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chats]
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def _completion_logps(model: Any, prompt: list[int], completion: list[int], device: str) -> list[float]:
    """Per-token log-probabilities of ``completion`` after ``prompt`` (one teacher-forced forward, float32)."""
    import torch

    ids = torch.tensor([prompt + completion], device=device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
    picked = torch.tensor(completion, device=device)
    return logits.log_softmax(-1).gather(-1, picked[:, None])[:, 0].tolist()


class _Clock:
    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda

    def __enter__(self) -> _Clock:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.t0
        self.peak_gib = torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None


def _generate(model: Any, prompts: list[list[int]], config: Any, pad: int, device: str) -> list[list[int]]:
    import torch

    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)  # left padding, as TRL
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    return [row[width:].tolist() for row in out]


def _generate_batch(model: Any, prompts: list[list[int]], config: Any) -> list[list[int]]:
    import torch

    with torch.no_grad():
        outputs = model.generate_batch(prompts, generation_config=config, progress_bar=False)
    return [list(o.generated_tokens) for o in outputs.values()]  # in request order, as TRL reads them


def greedy_agreement(model_dir: str, device: str, length: int, n_prompts: int = 16) -> dict[str, Any]:
    """Both paths, greedy, ``length`` new tokens each (``min_new_tokens`` = ``max_new_tokens``), on ``n_prompts``
    prompts: per path seconds, tokens, tokens/s and peak GiB; token agreement and log-prob distance."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    cuda = device == "cuda"
    tok = AutoTokenizer.from_pretrained(model_dir)
    dtype = torch.bfloat16 if cuda else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    config = GenerationConfig(do_sample=False, max_new_tokens=length, min_new_tokens=length, pad_token_id=pad,
                              eos_token_id=tok.eos_token_id)  # fmt: skip
    prompts = _prompts(tok, n_prompts)
    out: dict[str, Any] = {"prompts": n_prompts, "new_tokens": length, "dtype": str(dtype), "paths": {}}
    completions = {}
    for name, run in (("generate", lambda: _generate(model, prompts, config, pad, device)),
                      ("generate_batch", lambda: _generate_batch(model, prompts, config))):  # fmt: skip
        try:
            run()  # warm-up (kernels, CUDA graphs, allocator): not timed
            with _Clock(cuda) as clock:
                completions[name] = run()
        except Exception as exc:  # one path failing is a result, not the end of the check
            out["paths"][name] = {"error": f"{type(exc).__name__}: {exc}"[:400]}
            continue
        tokens = sum(map(len, completions[name]))
        out["paths"][name] = {"seconds": clock.seconds, "tokens": tokens, "tokens_per_s": tokens / clock.seconds,
                              "peak_gib": clock.peak_gib}  # fmt: skip
    if len(completions) == 2:
        out["agreement"] = compare(model, prompts, completions["generate"], completions["generate_batch"], device)
    return out


def compare(model: Any, prompts: list, first: list[list[int]], second: list[list[int]], device: str) -> dict:
    """Token agreement of two completion sets and the distance of their log-probabilities: exact-match share, mean
    first divergence, max |Δ log p| per token on the shared prefix, and the mean completion log-prob of each."""
    same, diverge, max_delta, lp_first, lp_second = 0, [], 0.0, [], []
    for prompt, a, b in zip(prompts, first, second, strict=True):
        shared = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        same += a == b
        diverge.append(shared)
        la, lb = _completion_logps(model, prompt, a, device), _completion_logps(model, prompt, b, device)
        lp_first.append(sum(la))
        lp_second.append(sum(lb))
        max_delta = max([max_delta, *(abs(x - y) for x, y in zip(la[:shared], lb[:shared]))])
    return {"identical_share": same / len(prompts), "mean_first_divergence": statistics.fmean(diverge),
            "max_abs_dlogp_shared_prefix": max_delta, "mean_logp": [statistics.fmean(lp_first),
                                                                     statistics.fmean(lp_second)]}  # fmt: skip


def render(rollout: dict[str, Any]) -> str:
    """Markdown lines for a report's ``rollout`` entry."""
    lines = [f"\nRollout paths, greedy, {rollout['prompts']} prompts x {rollout['new_tokens']} new tokens "
             f"({rollout['dtype']}):", "", "| path | s | tokens | tokens/s | peak GiB |", "|---|---|---|---|---|"]  # fmt: skip
    for name, p in rollout["paths"].items():
        if "error" in p:
            lines.append(f"| {name} | failed: {p['error']} | | | |")
            continue
        peak = "" if p["peak_gib"] is None else f"{p['peak_gib']:.1f}"
        lines.append(f"| {name} | {p['seconds']:.2f} | {p['tokens']} | {p['tokens_per_s']:.0f} | {peak} |")
    if "agreement" in rollout:
        a = rollout["agreement"]
        lines += ["", f"identical completions {a['identical_share']:.0%}, first divergence at token "
                  f"{a['mean_first_divergence']:.1f} on average, max |Δ log p| on the shared prefix "
                  f"{a['max_abs_dlogp_shared_prefix']:.2e}, mean completion log p {a['mean_logp'][0]:.2f} (generate) vs "
                  f"{a['mean_logp'][1]:.2f} (generate_batch)."]  # fmt: skip
    return "\n".join(lines) + "\n"
