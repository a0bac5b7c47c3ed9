"""Run the lab: warm start once, train every (algorithm, seed) in parallel worker processes, report.

``python -m mo_align.lab [--task tradeoff|easy] [--quick] [--algorithms linear ctwa ...] [--seeds 0 1 2]
[--steps N] [--jobs 2] [--eta paper|matched] [--compact-share S] [--compact-accuracy A] [--sweep [SHARE ...]]
[--print-protocol] [--known-answer] [--save-models]``

Every run uses the real ``MOGRPOTrainer`` on the warm-started model, built from its paper recipe
(``recipes/qwen2.5-1.5b/<algo>.yaml``: weighting and its kwargs, estimator, KL β, clipping, loss, schedule, 2
optimizer steps per generation batch) with only the fields of the lab's scaling rule changed
(:mod:`mo_align.lab.scaling`: 8 prompts × 8 completions per optimizer step, ≤ 64 completion tokens, lr 1e-4,
``--steps`` steps; printed before training, written into ``lab_result.json`` and ``interference.json``;
``--print-protocol``: the paper-vs-lab table). ``--eta matched`` scales each adaptive weighting's step size by the
paper's weight updates over the lab's. Evaluation is *sampled* (T = 1, 4 completions for each of the 256 held-out
prompts) at step 0 and every ``eval_steps``, conciseness against a fixed reference (the warm start's sampled mean
length), no eval loss. The task (``--task``, :mod:`mo_align.lab.task`), not the algorithms, is tuned for the lab.
``accuracy_only`` is the control (the Linear recipe with weights [1, 0, 0]).
``--compact-share`` / ``--compact-accuracy`` set G's share / accuracy; ``--sweep``: :mod:`mo_align.lab.sweep`.

Evidence (:mod:`mo_align.lab.evidence`, :mod:`mo_align.runs.report.seeds`): each worker keeps the per-prompt scores
of every evaluation (``lab_eval_scores.json``, from the trainer's ``mo.eval_samples``). The lab prints the seed-level
tables — each algorithm's Δ against the warm start's baseline (the mean of every run's step-0 evaluation) and its
paired difference with linear at the same seed, t intervals over seeds, Holm-adjusted per table — where an algorithm
*interferes* when the fixed scalar (the linear recipe's weights, for every algorithm) rose and an objective fell, both
by those intervals; then per run the Δ with its prompt-bootstrap CI (evaluation noise only); ``interference.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import torch
from datasets import Dataset

from mo_align.cli import CommandParser, UsageError, run_module
from mo_align.configs import MOGRPOConfig
from mo_align.lab import demo
from mo_align.lab import sweep as lab_sweep
from mo_align.lab.batch import lab_scaling, write_results
from mo_align.lab.evidence import (  # the lab's evidence API, also importable from here
    EVAL_SCORES_FILE,
    EVIDENCE_FILE,
    EvalScoreRecorder,
    format_evidence,
    lab_evidence,
    run_evidence,
)
from mo_align.lab.fidelity import fidelity_lines, known_answer_main, lab_reward_funcs
from mo_align.lab.jobs import run_jobs, warm_start_threads
from mo_align.lab.protocol import protocol_markdown, write_settings
from mo_align.lab.results import add_results_arguments, results_command
from mo_align.lab.scaling import (
    ALGORITHMS,
    DEFAULT_ETA,
    ETA_MODES,
    VARIANTS,
    known_algorithm,
    lab_settings,
)
from mo_align.lab.sft import warm_start
from mo_align.lab.task import DEFAULT_TASK, REGIMES, compact_regime, get_regime, prompt_text, split_problems
from mo_align.runs.report import REPORT_MD


__all__ = [  # with the lab's evidence API (mo_align.lab.evidence), re-exported
    "EVAL_SCORES_FILE",
    "EVIDENCE_FILE",
    "LAB_ALGORITHMS",
    "QUICK",
    "EvalScoreRecorder",
    "add_parser",
    "add_worker_parser",
    "format_evidence",
    "lab_datasets",
    "lab_evidence",
    "lab_scaling",
    "main",
    "run",
    "run_evidence",
    "run_lab",
    "run_worker",
    "train_one",
    "warm_start_threads",
]


# every algorithm is its paper recipe (recipes/qwen2.5-1.5b/<algo>.yaml) changed only by the lab's scaling rule
LAB_ALGORITHMS = list(ALGORITHMS)
QUICK = ["linear", "ctwa"]
LAB_MODEL_DIR, LAB_MODEL_FILE = "model", "lab_model.json"  # --save-models: <run>/model and its record


def lab_datasets() -> tuple[Any, Any]:
    def rows(problems: list) -> Any:
        prompts = [[{"role": "user", "content": prompt_text(p)}] for p in problems]
        return Dataset.from_dict({"prompt": prompts, "answer": [str(p[5]) for p in problems]})

    train, held_out = split_problems()
    return rows(train), rows(held_out)


def train_one(
    algo: str,
    seed: int,
    sft_dir: str,
    reference_length: float,
    out: str,
    steps: int,
    eval_steps: int,
    eta: str = DEFAULT_ETA,
    save_model: bool = False,
):
    """One lab run in this process (used by the worker subprocess): the algorithm's paper recipe under the lab's
    scaling rule (:func:`mo_align.lab.scaling.lab_settings`). ``save_model``: the trained policy and its tokenizer
    also go to ``<out>/model`` (safetensors) with ``lab_model.json`` (warm start, reference length, algorithm, seed,
    steps, η mode), e.g. for ``make bench-gram ARGS="--lab-model <out>/model"``; the lab keeps no checkpoints."""
    # lazy: TRL's GRPOTrainer loads in the worker processes only; the lab's parent never builds a trainer
    from mo_align.trainer import MOGRPOTrainer

    settings = lab_settings(algo, steps, eta, output_dir=out, seed=seed, eval_steps=eval_steps)
    write_settings(out, settings)
    args = MOGRPOConfig(**settings)
    funcs = lab_reward_funcs(reference_length)
    train, held_out = lab_datasets()
    trainer = MOGRPOTrainer(model=sft_dir, reward_funcs=funcs, args=args, train_dataset=train, eval_dataset=held_out)
    recorder = EvalScoreRecorder(trainer)
    trainer.train()
    trainer.write_summary()
    recorder.write(os.path.join(out, EVAL_SCORES_FILE))
    if save_model:
        model_dir = os.path.join(out, LAB_MODEL_DIR)
        trainer.save_model(model_dir)
        record = {"warm_start": sft_dir, "reference_length": reference_length, "algorithm": algo, "seed": seed}
        record.update(steps=steps, eta=eta)
        with open(os.path.join(model_dir, LAB_MODEL_FILE), "w") as f:
            json.dump(record, f, indent=1)


def add_worker_parser(subparsers: Any) -> CommandParser:
    """``python -m mo_align.lab worker ...``: one run in its own process (:mod:`mo_align.lab.jobs` starts them)."""
    p = subparsers.add_parser("worker", exits=True)
    for flag in ("--algo", "--sft", "--out"):
        p.add_argument(flag, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--reference-length", type=float, required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--eval-steps", type=int, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eta", choices=ETA_MODES, default=DEFAULT_ETA)
    p.add_argument("--save-model", action="store_true")
    return p


def run_worker(a: argparse.Namespace) -> None:
    torch.set_num_threads(a.threads)
    train_one(a.algo, a.seed, a.sft, a.reference_length, a.out, a.steps, a.eval_steps, a.eta, save_model=a.save_model)


def run_lab(
    algorithms: list[str],
    seeds: list[int],
    steps: int,
    eval_steps: int,
    out_root: str,
    jobs: int,
    sft_steps: int | None,
    cache: str = os.path.join("outputs", "lab-cache"),
    task: str | None = None,
    regime: Any = None,
    sft_threads: int = 0,
    eta: str = DEFAULT_ETA,
    save_models: bool = False,
) -> dict[str, Any]:
    def say(msg: str) -> None:
        sys.stdout.write(f"[lab {time.strftime('%H:%M:%S')}] {msg}\n")
        sys.stdout.flush()

    unknown = [a for a in algorithms if not known_algorithm(a)]
    if unknown:
        choices = [*LAB_ALGORITHMS, *VARIANTS]
        raise SystemExit(f"mo-align lab: unknown algorithm(s) {unknown}; choose from {choices}")
    scaling = lab_scaling(algorithms, steps, eta, eval_steps, say)  # every recipe read before the warm start
    t0 = time.time()
    sft_threads = sft_threads if sft_threads > 0 else warm_start_threads()
    torch.set_num_threads(sft_threads)
    task = task or DEFAULT_TASK
    regime = regime or get_regime(task)
    say(f"task {task}: style shares {regime.key()['shares']}, G correct {regime.compact_accuracy:.0%}")
    sft_steps = sft_steps or regime.warm_start_steps
    say(f"warm start: {sft_steps} steps on {sft_threads} thread(s)")
    sft_dir, meta = warm_start(cache, steps=sft_steps, log=say, regime=regime, task=task)
    say(f"warm start: {sft_dir} ({meta['parameters']:,} params, reference length {meta['reference_length']:.1f})")
    os.makedirs(out_root, exist_ok=True)
    logs = os.path.join(out_root, "logs")
    os.makedirs(logs, exist_ok=True)
    threads = 1 if jobs > 1 else max(1, os.cpu_count() or 1)
    shared = {"sft": sft_dir, "reference_length": meta["reference_length"], "steps": steps, "eval_steps": eval_steps}
    shared.update(threads=threads, eta=eta, save_model=save_models)  # worker_command: --save-model when true
    todo = [
        {"algo": a, "seed": s, **shared, "out": os.path.join(out_root, f"{a}-seed{s}")}
        for s in seeds
        for a in algorithms
    ]
    say(f"{len(todo)} runs, {jobs} at a time, {steps} steps each")
    done, seconds = run_jobs(todo, jobs, logs, say)
    setting = {"task": task, "regime": regime.key(), "steps": steps, "lab_scaling": scaling}
    result = write_results(done, seconds, out_root, setting, meta)
    say(f"total {time.time() - t0:.0f} s; report: {os.path.join(out_root, 'report', REPORT_MD)}")
    with open(os.path.join(out_root, "lab_result.json"), "w") as f:
        summary = {"seconds": time.time() - t0, "failed": [o for o, rc in done if rc], "sft": meta, "task": task}
        summary.update(run_seconds={os.path.basename(o): v for o, v in seconds.items()}, lab_scaling=scaling)
        json.dump(summary, f, indent=1)
    return result


def add_parser(subparsers: Any) -> CommandParser:
    """``mo-align lab`` and ``python -m mo_align.lab``."""
    p = subparsers.add_parser("lab", description=__doc__.split("\n\n")[0], exits=True)
    p.add_argument("--quick", action="store_true", help="linear vs ctwa, one seed (make demo / make lab-quick)")
    p.add_argument("--task", default=None, help=f"task regime, one of {sorted(REGIMES)} (default {DEFAULT_TASK})")
    p.add_argument("--compact-share", type=float, default=None, help="base mix + compact style G at this share")
    p.add_argument("--compact-accuracy", type=float, default=None, help="G's accuracy (with --compact-share)")
    p.add_argument(
        "--sweep",
        nargs="*",
        type=float,
        default=None,
        metavar="SHARE",
        help="phase diagram over these G shares (default 0.02 0.05 0.1 0.2; make lab-sweep)",
    )
    p.add_argument(
        "--algorithms", nargs="+", default=None, help=f"subset of {list(LAB_ALGORITHMS)}, or {list(VARIANTS)}"
    )
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="GRPO steps per run")
    p.add_argument("--eval-steps", type=int, default=None, help="evaluate every N steps (default 25)")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (1 thread each when > 1)")
    p.add_argument("--sft-steps", type=int, default=None, help="warm-start steps (default: the task regime's)")
    p.add_argument(
        "--sft-threads",
        type=int,
        default=0,
        help="warm-start threads (default 0 = every core, or 1 on a busy machine)",
    )
    p.add_argument(
        "--eta",
        choices=ETA_MODES,
        default=DEFAULT_ETA,
        help="adaptive step sizes: 'paper' (the recipes', default) or 'matched' (× paper / lab weight updates)",
    )
    p.add_argument("--save-models", action="store_true", help="keep each run's trained policy in <run>/model")
    p.add_argument("--print-protocol", action="store_true", help="print the paper-vs-lab table (docs/lab_protocol.md)")
    p.add_argument("--known-answer", action="store_true", help="Linear on both sides of the predicted boundary")
    add_results_arguments(p)  # --tables, --archive, --label, --horizon
    p.add_argument("--out", default=None)
    p.add_argument("--cache", default=os.path.join("outputs", "lab-cache"), help="warm-start cache directory")
    return p


def _regime(a: argparse.Namespace) -> tuple[str, Any]:
    """(task label, regime or None for the registered task) from --task / --compact-share / --compact-accuracy."""
    if a.task is not None and a.task not in REGIMES:
        raise UsageError(f"--task: unknown task {a.task!r}; choose from {sorted(REGIMES)}")
    if a.compact_accuracy is not None and a.compact_share is None:
        raise UsageError("--compact-accuracy needs --compact-share")
    if a.compact_share is None:
        return a.task or DEFAULT_TASK, None
    try:
        regime = compact_regime(a.compact_share, 0.7 if a.compact_accuracy is None else a.compact_accuracy)
    except ValueError as exc:
        raise UsageError(f"--compact-share/--compact-accuracy: {exc}") from None
    task = f"compact-{a.compact_share:g}" + ("" if a.compact_accuracy is None else f"-acc{a.compact_accuracy:g}")
    return task, regime


def _sweep(a: argparse.Namespace) -> None:
    """``--sweep``: the phase diagram (:mod:`mo_align.lab.sweep`); the task's knob is the sweep's, so the flags that
    pick a task are refused."""
    clash = [f for f, v in (("--task", a.task), ("--compact-share", a.compact_share)) if v is not None]
    clash += ["--compact-accuracy"] if a.compact_accuracy is not None else []
    clash += ["--quick"] if a.quick else []
    if clash:
        raise UsageError(
            f"--sweep: cannot be combined with {', '.join(clash)} (the sweep sets the task: the share of G)"
        )
    try:
        shares = lab_sweep.check_shares(a.sweep or lab_sweep.DEFAULT_SHARES)
    except ValueError as exc:
        raise UsageError(f"--sweep: {exc}") from None
    unknown = [x for x in a.algorithms or [] if x not in LAB_ALGORITHMS]
    if unknown:
        raise UsageError(f"--algorithms: unknown {unknown}; choose from {list(LAB_ALGORITHMS)}")
    algorithms, seeds = a.algorithms or list(lab_sweep.SWEEP_ALGORITHMS), a.seeds or [0, 1, 2]
    out = a.out or os.path.join("outputs", "lab-sweep")
    steps, eval_steps = a.steps or 50, a.eval_steps or 25
    lab_sweep.run_sweep(shares, algorithms, seeds, steps, eval_steps, out, a.jobs, a.sft_steps, a.cache, eta=a.eta)


def main(argv: list[str] | None = None) -> Any:
    """``python -m mo_align.lab``; ``python -m mo_align.lab worker ...`` is a worker process."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "worker":
        return run_module(add_worker_parser, run_worker, argv[1:], "python -m mo_align.lab worker")
    return run_module(add_parser, run, argv, "python -m mo_align.lab")


def run(a: argparse.Namespace) -> Any:
    if results_command(a):  # --tables, --archive, --horizon: read finished runs, train nothing
        return
    if a.print_protocol:
        sys.stdout.write(protocol_markdown())
        return
    if a.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {a.jobs}")
    if a.known_answer and (a.sweep is not None or a.algorithms or a.quick):
        raise UsageError(
            "--known-answer: cannot be combined with --sweep, --algorithms or --quick (it picks its own runs)"
        )
    if a.save_models and (a.sweep is not None or a.known_answer):
        raise UsageError("--save-models: only for the lab's own runs (not with --sweep or --known-answer)")
    if a.sweep is not None:
        _sweep(a)
        return
    task, regime = _regime(a)
    if a.known_answer:  # Linear preferences placed from the warm start's style profiles (mo_align.lab.fidelity)
        return known_answer_main(run_lab, a, task, regime)
    algorithms = a.algorithms or (QUICK if a.quick else list(LAB_ALGORITHMS))
    seeds = a.seeds or ([0] if a.quick else [0, 1, 2, 3, 4])
    steps = a.steps or 50  # make demo = seed 0 of make lab's linear and ctwa runs
    out = a.out or os.path.join("outputs", "lab-quick" if a.quick else "lab")
    eval_steps = a.eval_steps or 25
    # one warm start per regime, shared by make lab, make demo and the sweep (the regime sets its length)
    cache, threads = a.cache, a.sft_threads
    result = run_lab(algorithms, seeds, steps, eval_steps, out, a.jobs, a.sft_steps, cache, task, regime, threads,
                     eta=a.eta, save_models=a.save_models)  # fmt: skip
    run_dirs = [r["output_dir"] for r in result["runs"].values()]
    lines = [*demo.demo_extras(run_dirs, out, figure=a.quick), "", *fidelity_lines(run_dirs, out)]
    sys.stdout.write("".join(f"\n{line}" for line in lines) + "\n")
    sys.stdout.write(f"report: {os.path.join(out, 'report', REPORT_MD)} (and report.html)\n")
