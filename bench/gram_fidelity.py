"""``make bench-gram``: what a cheaper Gram matrix costs in fidelity and saves in time, per gradient-space strategy.

For mgda, dynamic, upgrad and gradnorm, the coefficients α from the full-parameter Gram matrix vs from the last
decoder layer, the last quarter of the layers, the Dynamic recipe's "layers 10-25 of 28" at the same relative depth,
and the log-prob space; the update each gives, d = Σ_k α_k g_k in full parameter space, vs the full-parameter one
(:mod:`gram_core`, which computes everything with the trainer's own code). Per strategy x space: cos(d_space, d_full)
and max_k |Δα_k|, mean and 95 % t interval over batches; s/step of the trainer's training step (Gram work and
backward passes) vs linear's on the same batch, median over steps; the K x n per-objective gradients the space holds.

Models: the lab's warm start (:mod:`mo_align.lab.sft`, found in ``--cache`` as ``python -m mo_align.lab`` caches it,
built there when absent: ~5 min on 2 idle cores), or any ``--lab-model DIR`` (repeatable, e.g. a policy the lab
trained and kept, ``python -m mo_align.lab --algorithms linear --seeds 0 --save-models`` then
``--lab-model outputs/lab/linear-seed0/model``), on the lab's prompts, sampled completions and three rewards; and the bench model of ``make bench``
(random weights: its rewards may carry no signal, then only its time columns mean anything). Each batch is one
optimizer step of its setting, sampled at T = 1.

``python bench/gram_fidelity.py [--quick] [--batches 8] [--time-steps 5] [--lab-model DIR] [--no-lab] [--no-bench]
[--cache outputs/lab-cache] [--out bench/results_gram_fidelity] [--threads N]`` (``make bench-gram ARGS=...``).
Writes ``<out>.md`` and ``<out>.json`` (after each model, so a run cut short keeps the finished ones); ``--render
JSON`` rewrites them from a run's JSON without measuring (e.g. with another ``--threshold``). On an idle 2-core CPU
(2026-12-06) the bench model took 14 min and each lab model 1–1.5 min (the default run: about 16 min), plus about
5 min once to train the warm start when the cache has none. Benchmarks are not tests: no threshold fails anything.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import sys
import tempfile
import time
from typing import Any


HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import gram_core  # noqa: E402
import gram_report  # noqa: E402


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/gram_fidelity.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="4 batches, 3 timed steps (a check that it runs)")
    p.add_argument("--batches", type=int, default=None, help="sampled batches per model (default 8; --quick 4)")
    p.add_argument("--time-steps", type=int, default=None, help="timed steps per configuration (default 5; quick 3)")
    p.add_argument("--lab-model", action="append", default=None, metavar="DIR", help="lab model(s) to measure")
    p.add_argument("--no-lab", action="store_true", help="skip the lab model")
    p.add_argument("--no-bench", action="store_true", help="skip the bench model")
    p.add_argument("--no-batched-vjp", action="store_true", help="skip the batched-VJP timing")
    p.add_argument("--cache", default=os.path.join("outputs", "lab-cache"), help="the lab's warm-start cache")
    p.add_argument("--strategies", nargs="+", default=list(gram_core.STRATEGIES))
    p.add_argument("--threshold", type=float, default=0.99, help="cos(d) the recommendation asks for")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores, or 1 on a busy machine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(HERE, "results_gram_fidelity"), help="path stem of .md/.json")
    p.add_argument("--render", default=None, metavar="JSON", help="only rewrite <out>.md/.json from a run's JSON")
    a = p.parse_args(argv)
    a.batches = a.batches or (4 if a.quick else 8)
    a.time_steps = a.time_steps or (3 if a.quick else 5)
    if a.batches < 2:
        p.error(f"--batches must be >= 2 (a t interval over batches), got {a.batches}")
    unknown = sorted(set(a.strategies) - set(gram_core.STRATEGIES))
    if unknown:
        p.error(f"--strategies: unknown {unknown}; choose from {list(gram_core.STRATEGIES)}")
    if a.no_lab and a.no_bench:
        p.error("--no-lab and --no-bench leave nothing to measure")
    return a


def lab_warm_start(cache: str) -> tuple[str, dict]:
    """The lab's warm start as ``python -m mo_align.lab`` caches it (``<cache>/sft-<key>``), trained when absent."""
    import torch

    from mo_align.lab.run import warm_start_threads
    from mo_align.lab.sft import cached_warm_start, warm_start
    from mo_align.lab.task import DEFAULT_TASK, get_regime

    regime = get_regime(DEFAULT_TASK)
    path, meta = cached_warm_start(cache, regime, steps=regime.warm_start_steps)
    if meta is not None:
        return path, meta
    threads = torch.get_num_threads()
    torch.set_num_threads(warm_start_threads())
    say(f"no cached warm start in {cache}: training it ({regime.warm_start_steps} steps)")
    path, meta = warm_start(cache, steps=regime.warm_start_steps, log=say, regime=regime, task=DEFAULT_TASK)
    torch.set_num_threads(threads)
    return path, meta


def lab_spec(path: str, prompts: int = 8) -> dict[str, Any]:
    """The lab's MGDA run (its paper recipe under the lab's scaling rule) with one optimizer step per generation
    batch: ``prompts`` x 8 completions of <= 64 tokens, the three lab rewards."""
    from mo_align.lab.run import LAB_MODEL_FILE, lab_datasets
    from mo_align.lab.scaling import lab_settings
    from mo_align.rewards import get_reward_funcs

    settings = lab_settings("mgda", 1, output_dir=tempfile.mkdtemp(prefix="bench-gram-"))
    settings.update(steps_per_generation=1, per_device_train_batch_size=prompts * settings["num_generations"])
    settings.update(eval_strategy="no", eval_on_start=False)
    conciseness = {}  # training scores against the running mean; the warm start's fixed reference for evaluation
    for record in ("lab_sft.json", LAB_MODEL_FILE):  # a warm start's, or a lab run's saved policy's (--save-models)
        if os.path.exists(os.path.join(path, record)):
            with open(os.path.join(path, record)) as f:
                conciseness["eval_reference_length"] = float(json.load(f)["reference_length"])
    funcs = get_reward_funcs(
        ["accuracy", "conciseness", "clarity"],
        {"accuracy": {"mode": "reference"}, "conciseness": conciseness, "clarity": {"strict": True}},
    )
    return {"label": f"lab: {path}", "path": path, "settings": settings, "funcs": funcs, "data": lab_datasets()[0]}


def bench_spec() -> dict[str, Any]:
    """``make bench``'s model and batch: 16 prompts x 8 completions x 64 tokens, its three rewards."""
    from steps import bench_setup, build_model

    path = build_model(os.path.join(HERE, "out", "bench-model"))
    data, funcs, common = bench_setup(1)
    return {"label": "bench model (random weights)", "path": path, "settings": {**common, "weighting": "mgda"},
            "funcs": funcs, "data": data}  # fmt: skip


def build_trainer(spec: dict[str, Any]) -> Any:
    from mo_align.configs import MOGRPOConfig
    from mo_align.trainer import MOGRPOTrainer

    args = MOGRPOConfig(**spec["settings"])
    trainer = MOGRPOTrainer(model=spec["path"], reward_funcs=spec["funcs"], args=args, train_dataset=spec["data"])
    trainer.current_gradient_accumulation_steps = args.gradient_accumulation_steps  # set by train()'s loop
    return trainer


def sample_batch(trainer: Any, rows: list[dict], seed: int) -> tuple[dict, float]:
    """One sampled and scored batch (the trainer's generation and scoring, as in training) and its seconds."""
    import torch

    torch.manual_seed(seed)
    trainer.model.train()
    t0 = time.perf_counter()
    inputs = trainer._generate_and_score_completions(rows)
    return inputs, time.perf_counter() - t0


def run_model(spec: dict[str, Any], a: argparse.Namespace, strategies: dict[str, dict]) -> dict[str, Any]:
    """Every batch's record, the timings on the first batch and the batched-VJP check, for one model."""
    trainer = build_trainer(spec)
    model = trainer.model
    spaces = gram_core.gram_spaces(model.config.num_hidden_layers)
    g, per = trainer.num_generations, trainer.args.per_device_train_batch_size // trainer.num_generations
    order = random.Random(a.seed).sample(range(len(spec["data"])), a.batches * per)
    result: dict[str, Any] = {"label": spec["label"], "path": spec["path"], "layers": model.config.num_hidden_layers,
                              "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
                              "batch": f"{per} prompts x {g} completions, <= {trainer.args.max_completion_length} "
                              f"tokens", "lr": trainer.args.learning_rate, "batches": [], "generate_s": []}  # fmt: skip
    result["spaces"] = {n: {"space": s, "gramian_params": p} for n, (s, p) in spaces.items()}
    t = trainer.args
    result["loss"] = (f"TRL's {t.loss_type} policy loss, beta {t.beta:g}, epsilon {t.epsilon:g}, "
                      f"{getattr(t, 'advantage_estimator', 'grpo')} advantages per objective")  # fmt: skip
    for b in range(a.batches):
        rows = [spec["data"][i] for i in order[b * per : (b + 1) * per] for _ in range(g)]
        inputs, seconds = sample_batch(trainer, rows, a.seed + b)
        result["generate_s"].append(seconds)
        record = gram_core.batch_record(trainer, inputs, spaces, strategies, trainer.args.learning_rate)
        result["batches"].append(record)
        say(f"  batch {b + 1}/{a.batches}: generation {seconds:.1f} s, reward std {fmt(record['reward_std'])}")
        if b == 0:
            say(f"  timing {2 + len(strategies) * len(spaces)} configurations x {a.time_steps} steps")
            result["time_s"] = gram_core.timings(trainer, inputs, spaces, strategies, a.time_steps)
            if not a.no_batched_vjp:
                result["batched_vjp"] = gram_core.batched_vjp(trainer, inputs)
    return result


def fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"


def say(msg: str) -> None:
    sys.stdout.write(f"[bench-gram {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stdout.flush()


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return f.read().strip()
    except OSError:
        return "unavailable"


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    if a.render:  # the tables again from a run's records (e.g. with another --threshold), nothing measured
        with open(a.render) as f:
            doc = json.load(f)
        doc["meta"]["threshold"] = a.threshold
        sys.stdout.write(write_results(doc["results"], doc["meta"], doc["strategies"], a.out))
        return
    import torch

    from mo_align.lab.run import warm_start_threads
    from mo_align.lab.scaling import lab_settings

    torch.set_num_threads(a.threads if a.threads > 0 else warm_start_threads())
    meta: dict[str, Any] = {"date": str(datetime.date.today()), "loadavg_before": loadavg(),
                            "threads": torch.get_num_threads(), "command": " ".join(sys.argv),
                            "batches": a.batches, "time_steps": a.time_steps, "threshold": a.threshold,
                            "cores": os.cpu_count() or 1}  # fmt: skip
    strategies = {s: lab_settings(s, 1)["weighting_kwargs"] for s in a.strategies}  # the paper recipes' kwargs
    specs = []
    if not a.no_lab:
        paths = a.lab_model or [lab_warm_start(a.cache)[0]]
        specs += [lab_spec(p) for p in paths]
    if not a.no_bench:
        specs.append(bench_spec())
    meta["machine"] = gram_report.machine()
    results, text = [], ""
    for spec in specs:
        say(f"{spec['label']}")
        results.append(run_model(spec, a, strategies))
        meta["loadavg_after"] = loadavg()  # written after each model: a run cut short keeps the finished ones
        text = write_results(results, meta, strategies, a.out)
    sys.stdout.write("\n" + text)


def write_results(results: list[dict], meta: dict[str, Any], strategies: dict[str, dict], out: str) -> str:
    """``<out>.json`` (the runs' records and their summaries) and ``<out>.md`` (the tables); returns the text."""
    models = [gram_report.summarise(r) for r in results]
    doc = {"meta": meta, "strategies": strategies, "models": models, "results": results}
    with open(out + ".json", "w") as f:
        json.dump(doc, f, indent=1)
    text = gram_report.render(doc)
    with open(out + ".md", "w") as f:
        f.write(text)
    return text


if __name__ == "__main__":
    main()
