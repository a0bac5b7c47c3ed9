"""Step-time benchmark of one configuration (run by bench/run.py in its own process).

Median wall time of an optimizer step (generation + scoring + weighting + backward + update) after warm-up, on a CPU
benchmark model (~5 M parameters; 16 prompts x 8 generations x 64 tokens), plus the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time

import torch


def build_model(path: str) -> str:
    from mo_align.testing import make_tiny_model

    if not os.path.exists(os.path.join(path, "config.json")):
        make_tiny_model(path, seed=0, hidden_size=256, intermediate_size=768, num_hidden_layers=6,
                        num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    return path


def bench_setup(max_steps: int) -> tuple:
    """(training dataset, the K = 3 reward functions, the common trainer arguments) of every configuration."""
    from datasets import Dataset

    from mo_align.rewards import get_reward_funcs

    prompts = [[{"role": "user", "content": f"Compute {i % 9 + 1} + {i % 7 + 2} - {i % 5 + 1}."}] for i in range(512)]
    data = Dataset.from_dict({"prompt": prompts, "answer": [str(i % 9 + i % 7 + 2 - i % 5) for i in range(512)]})
    funcs = get_reward_funcs(["accuracy", "conciseness", "clarity"], {"accuracy": {"mode": "reference"}})
    common = {"output_dir": tempfile.mkdtemp(), "use_cpu": True, "bf16": False, "per_device_train_batch_size": 128,
              "num_generations": 8, "max_completion_length": 64, "learning_rate": 1e-5,
              "max_steps": max_steps, "logging_steps": 1, "save_strategy": "no", "report_to": "none",
              "disable_tqdm": True, "seed": 0, "dataloader_num_workers": 0, "activation_checkpointing": False,
              "generation_kwargs": {"min_new_tokens": 64}}  # equal generation work in every configuration  # fmt: skip
    return data, funcs, common


def timed(obj, name: str, sink: list[float]) -> None:
    """Wrap ``obj.name`` (a method) so each call's wall time is appended to ``sink``."""
    inner = getattr(obj, name)

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            sink.append(time.perf_counter() - t0)

    setattr(obj, name, wrapper)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--trainer", choices=["mo", "trl"], default="mo")
    p.add_argument("--weighting", default="linear")
    p.add_argument("--weighting-kwargs", default="{}")
    p.add_argument("--gramian-space", default="parameters")
    p.add_argument("--diagnostics", type=int, default=1)
    p.add_argument("--micro-batches", type=int, default=1, help="split each step's 128 completions into this many")
    p.add_argument("--model", required=True)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from mo_align.configs import MOGRPOConfig
    from mo_align.trainer import MOGRPOTrainer

    data, funcs, common = bench_setup(a.warmup + a.steps)
    if a.micro_batches > 1:  # the same 128 completions per optimizer step, accumulated over micro-batches
        common.update(per_device_train_batch_size=128 // a.micro_batches, gradient_accumulation_steps=a.micro_batches,
                      steps_per_generation=a.micro_batches)  # fmt: skip
    if a.trainer == "trl":
        trainer = GRPOTrainer(model=a.model, reward_funcs=funcs, args=GRPOConfig(**common), train_dataset=data)
    else:
        args = MOGRPOConfig(**common, weighting=a.weighting, weighting_kwargs=json.loads(a.weighting_kwargs),
                            gramian_space=a.gramian_space, mo_diagnostics=bool(a.diagnostics))  # fmt: skip
        trainer = MOGRPOTrainer(model=a.model, reward_funcs=funcs, args=args, train_dataset=data)
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    trainer.add_callback(Clock())
    stages: dict[str, list[float]] = {"generate_s": [], "backward_s": []}
    timed(trainer, "_generate_and_score_completions", stages["generate_s"])
    timed(trainer.accelerator, "backward", stages["backward_s"])
    trainer.train()
    measured = times[a.warmup :]
    result = {
        "name": a.name,
        "median_step_s": statistics.median(measured),
        "steps": len(measured),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "params": sum(p.numel() for p in trainer.model.parameters()),
        "micro_batches": a.micro_batches,
    }
    gram_params = getattr(getattr(trainer, "mo_gradient", None), "params", None)
    if a.trainer == "mo" and gram_params and a.gramian_space == "parameters":
        # the accumulated per-objective gradients of a batch (mo_align.trainer.gram): K x P float32 per process
        accumulates = trainer.weighting.space != "gradient" or trainer.weighting.gradient_cadence == "optimizer_step"
        k, n = len(funcs), sum(p.numel() for p in gram_params)
        result["gram_state_mb"] = k * n * 4 / 2**20 if accumulates else 0.0
    # stage costs of one step (for the analysis of the lower bounds in bench/run.py): generation + scoring, the
    # trainer's backward, and one no-grad forward of the training batch (what the exact CTWA statistic adds)
    for key, values in stages.items():
        result[key] = statistics.median(values[a.warmup :])
    if a.trainer == "mo" and trainer._buffered_inputs:
        batch = trainer._buffered_inputs[0]
        fwd = []
        for _ in range(3):
            t0 = time.perf_counter()
            trainer.mo_post_update.logps(batch)
            fwd.append(time.perf_counter() - t0)
        result["forward_s"] = statistics.median(fwd)
    with open(a.out, "w") as f:
        json.dump(result, f)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
