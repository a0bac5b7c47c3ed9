"""GPU check: every weighting trains on CUDA (bf16), step times vs linear, and the exact gradient combination.

``--scale paper`` runs scripts/gpu_paper.py instead: a Qwen2.5-1.5B-shaped model, 512-token completions, stage split.

``python scripts/gpu_check.py --out DIR [--steps 20]`` builds a ~5 M-parameter random Qwen2 offline, then, in one
process, trains each configuration for ``warmup + steps`` optimizer steps (16 prompts x 8 generations x 64 tokens)
and records the median step time, the peak CUDA memory, whether every loss was finite and whether parameters moved.
It also checks, on CUDA, that MGDA's applied gradient equals Σ_k α_k ∇L_k. Writes ``gpu_check.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time


def configs() -> list[tuple[str, str, dict, str]]:
    """(name, weighting, weighting_kwargs, gramian_space): linear, then every strategy configuration of
    mo_align.lab.catalog but TorchJD's adapters (not part of the GPU check; bench/run.py times them)."""
    from mo_align.lab.catalog import timed_configs  # lazy: after main put this checkout on sys.path

    timed = [(t.name, t.weighting, t.kwargs, t.space) for t in timed_configs("linear") if not t.torchjd]
    return [("linear", "linear", {}, "parameters"), *timed]


def main() -> None:
    scale = argparse.ArgumentParser(add_help=False)
    scale.add_argument("--scale", choices=["tiny", "paper"], default="tiny")
    known, rest = scale.parse_known_args()
    if known.scale == "paper":  # Qwen2.5-1.5B's shapes, 512-token completions: scripts/gpu_paper.py
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import gpu_paper

        return gpu_paper.main(rest)
    p = argparse.ArgumentParser()
    p.add_argument("--scale", choices=["tiny", "paper"], default="tiny", help="paper: see scripts/gpu_paper.py")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--only-exact", action="store_true")
    a = p.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback

    from mo_align.configs import MOGRPOConfig
    from mo_align.rewards import get_reward_funcs
    from mo_align.testing import make_tiny_model
    from mo_align.trainer import MOGRPOTrainer

    assert torch.cuda.is_available(), "no CUDA device"
    model_dir = make_tiny_model(tempfile.mkdtemp(), seed=0, hidden_size=256, intermediate_size=768,
                                num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    prompts = [[{"role": "user", "content": f"Compute {i % 9 + 1} + {i % 7 + 2} - {i % 5 + 1}."}] for i in range(512)]
    data = Dataset.from_dict({"prompt": prompts, "answer": [str(i % 9 + i % 7 + 2 - i % 5) for i in range(512)]})
    report: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "runs": []}
    for name, weighting, kwargs, space in [] if a.only_exact else configs():
        funcs = get_reward_funcs(["accuracy", "conciseness", "clarity"], {"accuracy": {"mode": "reference"}})
        args = MOGRPOConfig(
            output_dir=tempfile.mkdtemp(), bf16=True, per_device_train_batch_size=128, num_generations=8,
            max_completion_length=64, learning_rate=1e-4, max_steps=a.warmup + a.steps, logging_steps=1,
            save_strategy="no", report_to="none", disable_tqdm=True, seed=0, activation_checkpointing=False,
            weighting=weighting, weighting_kwargs=kwargs, gramian_space=space,
            generation_kwargs={"min_new_tokens": 64},  # equal generation work in every configuration
        )  # fmt: skip
        times: list[float] = []

        class Clock(TrainerCallback):
            def __init__(self, times: list[float]) -> None:
                self.times = times

            def on_step_begin(self, args, state, control, **kw):
                torch.cuda.synchronize()
                self.t = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                torch.cuda.synchronize()
                self.times.append(time.perf_counter() - self.t)

        torch.cuda.reset_peak_memory_stats()
        trainer = MOGRPOTrainer(model=model_dir, reward_funcs=funcs, args=args, train_dataset=data)
        trainer.add_callback(Clock(times))
        before = [q.detach().float().clone() for q in trainer.model.parameters()]
        t0 = time.time()
        error = None
        try:
            trainer.train()
        except Exception as exc:  # record and go on with the next configuration
            error = f"{type(exc).__name__}: {exc}"
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        moved = sum(not torch.equal(b, q.detach().float()) for b, q in zip(before, trainer.model.parameters()))
        run = {
            "name": name,
            "error": error,
            "median_step_s": statistics.median(times[a.warmup :]) if len(times) > a.warmup else None,
            "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30,
            "finite_losses": all(v == v and abs(v) != float("inf") for v in losses),
            "params_moved": f"{moved}/{len(before)}",
            "wall_s": time.time() - t0,
            "last_weights": trainer.weighting.weights().tolist(),
            "device": str(next(trainer.model.parameters()).device),
        }
        report["runs"].append(run)
        sys.stdout.write(json.dumps(run) + "\n")
        sys.stdout.flush()
        del trainer
        torch.cuda.empty_cache()
    base = next((r["median_step_s"] for r in report["runs"] if r["name"] == "linear"), None)
    for r in report["runs"]:
        r["ratio_vs_linear"] = None if not (r["median_step_s"] and base) else r["median_step_s"] / base
    report["exact_combination"] = exact_combination_check(model_dir, data)
    with open(os.path.join(a.out, "gpu_check.json"), "w") as f:
        json.dump(report, f, indent=1)
    for r in report["runs"]:
        ratio = r["ratio_vs_linear"]
        sys.stdout.write(f"{r['name']:<24} {r['median_step_s'] or float('nan'):.4f} s/step  ratio "
                         f"{ratio if ratio is None else round(ratio, 3)}  peak {r['peak_mem_gb']:.2f} GB  "
                         f"finite {r['finite_losses']}  moved {r['params_moved']}  err {r['error']}\n")  # fmt: skip
    sys.stdout.write(f"exact combination: {report['exact_combination']}\n")


def exact_combination_check(model_dir: str, data) -> dict:
    """MGDA on CUDA: the gradient back-propagated equals Σ_k α_k ∇L_k (fp32 for a tight comparison)."""
    import torch
    from trl import GRPOTrainer

    from mo_align.configs import MOGRPOConfig
    from mo_align.trainer import MOGRPOTrainer

    def fraction(chars: str):
        def reward(prompts, completions, completion_ids=None, **kw):
            texts = [c if isinstance(c, str) else c[0]["content"] for c in completions]
            return [sum(ch in chars for ch in t) / max(1, len(t)) for t in texts]

        reward.__name__ = f"frac_{len(chars)}"
        return reward

    # three continuous rewards with variance on random text, so that α is interior and every g_k is non-zero
    funcs = [fraction("aeiou"), fraction("0123456789"), fraction(" \n.,")]
    args = MOGRPOConfig(output_dir=tempfile.mkdtemp(), bf16=False, per_device_train_batch_size=32, num_generations=8,
                        max_completion_length=16, report_to="none", weighting="mgda", seed=0)  # fmt: skip
    trainer = MOGRPOTrainer(model=model_dir, reward_funcs=funcs, args=args, train_dataset=data)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    batch = trainer._generate_and_score_completions([data[i // 8] for i in range(32)])
    clean = {k: v for k, v in batch.items() if not k.startswith("mo_")}
    grads = []
    for k in range(3):
        trainer.model.zero_grad()
        adv = batch["mo_objective_advantages"][:, k]
        GRPOTrainer._compute_loss(trainer, trainer.model, {**clean, "advantages": adv}).backward()
        grads.append(torch.cat([q.grad.reshape(-1).clone() for q in trainer.model.parameters()]))
    g = torch.stack(grads)
    trainer.model.zero_grad()
    trainer.compute_loss(trainer.model, batch).backward()
    applied = torch.cat([q.grad.reshape(-1) for q in trainer.model.parameters()])
    alpha = trainer.weighting.weights().to(g)
    err = float((applied - alpha @ g).abs().max())
    return {"alpha": alpha.tolist(), "max_abs_err": err, "grad_scale": float(g.abs().max()), "ok": err < 1e-5}


if __name__ == "__main__":
    main()
