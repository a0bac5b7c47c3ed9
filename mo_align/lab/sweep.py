"""The lab's phase diagram (``docs/lab.md``): one knob of the task against interference, per algorithm.

``python -m mo_align.lab --sweep [SHARE ...]`` (``mo-align lab --sweep``, ``make lab-sweep``). The knob is the share
``s`` of the compact style G in the warm start (:func:`~mo_align.lab.task.compact_regime`: the base mix scaled by
``1 − s`` plus G at ``s``, G correct 70 %; ``tradeoff`` is s = 0.05). For each share: one warm start, cached per
share exactly as ``make lab`` caches its regime's (the ``tradeoff`` cache is reused at 0.05); the uncached ones are
trained ``jobs`` at a time in worker processes. Then every (share, algorithm, seed) run — by default
{accuracy_only, linear, ctwa} × seeds 0, 1, 2, with the lab's budget (50 GRPO steps) and the paper recipes'
hyperparameters — goes through the lab's own worker pool (``jobs`` at a time, one thread each). Per share the lab's
report and ``interference.json`` are written as by ``make lab`` (``<out>/share-<s>/``); across shares ``sweep.md``,
``sweep.json`` and ``sweep.png``.

Per (share, algorithm), over its ``n`` seeds (the seed is the unit; :mod:`mo_align.runs.report.seeds`):

* per objective and for the **fixed scalar** ``Σ w_k r_k`` (the linear recipe's weights, the same for every
  algorithm), each seed's Δ = final eval mean − the share's **warm-start baseline** (per held-out prompt, the mean of
  every run's step-0 evaluation; 256 prompts × 4 samples); the seeds' **mean** with a **t interval over seeds**, every
  cell and quantity of the table **Holm-adjusted** together (the count is stated under the table), and the verdict
  it gives (up / down / not significant); the seeds' median and range (min … max) beside it;
* **interferes**: the objectives whose adjusted interval lies below 0 while the scalar's lies above 0.

The table and the plot are built from the written files (:func:`collect`), so they can be rebuilt from a finished
sweep (``python -m mo_align.lab.sweep OUT``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from mo_align.cli import CommandParser, UsageError, run_module
from mo_align.lab.batch import lab_scaling, write_results
from mo_align.lab.evidence import EVAL_SCORES_FILE
from mo_align.lab.jobs import run_jobs, warm_start_threads
from mo_align.lab.protocol import same_settings
from mo_align.lab.scaling import DEFAULT_ETA, lab_settings
from mo_align.lab.sft import cached_warm_start, warm_start
from mo_align.lab.sweep_table import collect, format_markdown, plot_sweep, share_dir
from mo_align.lab.task import compact_regime
from mo_align.process_group import die_with_parent
from mo_align.runs.summary import SUMMARY_FILE


DEFAULT_SHARES = (0.02, 0.05, 0.10, 0.20)  # docs/lab.md's diagram; add 0.35 for the far end (SHARES=...)
SWEEP_ALGORITHMS = ("accuracy_only", "linear", "ctwa")
SWEEP_FILES = ("sweep.md", "sweep.json", "sweep.png")


def check_shares(shares: Sequence[float]) -> list[float]:
    """The knob values, validated: at least two, distinct, each in [0, 1) (the share of G)."""
    values = [float(s) for s in shares]
    bad = [s for s in values if not 0.0 <= s < 1.0]
    if bad:
        raise ValueError(f"every share must be in [0, 1), got {bad}")
    if len(set(values)) != len(values):
        raise ValueError(f"shares must be distinct, got {values}")
    if len(values) < 2:
        raise ValueError(f"a sweep needs at least two shares, got {values}")
    return sorted(values)


def _warm_start_cmd(share: float, cache: str, steps: int | None, threads: int) -> list[str]:
    cmd = [sys.executable, "-m", "mo_align.lab.sweep", "--warm-start", str(share), "--cache", cache]
    return cmd + ["--threads", str(threads)] + ([] if steps is None else ["--sft-steps", str(steps)])


def warm_starts(shares: list[float], cache: str, sft_steps: int | None, jobs: int, say: Any) -> dict[float, tuple]:
    """``share -> (model dir, metadata, seconds or None if cached)``: the uncached warm starts trained ``jobs`` at a
    time (one worker process each, one thread each when more than one runs), then every one read from the cache."""

    def cached(share: float) -> tuple[str, dict] | None:
        regime = compact_regime(share)
        path, meta = cached_warm_start(cache, regime, steps=sft_steps or regime.warm_start_steps)
        return (path, meta) if meta is not None else None

    todo = [s for s in shares if cached(s) is None]
    threads = 1 if jobs > 1 and len(todo) > 1 else warm_start_threads()
    seconds: dict[float, float] = {}

    def one(share: float) -> None:
        say(f"warm start for G share {share:g}: training ({threads} thread(s))")
        t0 = time.time()
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
        preexec = die_with_parent if sys.platform.startswith("linux") else None  # ends with the sweep, even on kill -9
        cmd = _warm_start_cmd(share, cache, sft_steps, threads)
        proc = subprocess.run(cmd, env=env, capture_output=True, preexec_fn=preexec)
        if proc.returncode != 0:
            raise SystemExit(f"mo-align lab --sweep: warm start for share {share:g} failed:\n{proc.stderr.decode()}")
        seconds[share] = time.time() - t0
        say(f"warm start for G share {share:g}: {seconds[share]:.0f} s")

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(one, todo))
    out = {}
    for share in shares:
        path, meta = cached(share) or (None, None)
        if path is None:
            raise SystemExit(f"mo-align lab --sweep: no warm start for share {share:g} in {cache}")
        out[share] = (path, meta, seconds.get(share))
    return out


def finished(job: dict[str, Any]) -> bool:
    """Whether ``job["out"]`` already holds this run's finished results (the sweep resumes): its per-prompt scores
    and a summary whose recorded worker command has the same algorithm, seed, warm start (``sft-<key>``, the cache
    key of the regime and recipe), reference length, steps and eval interval, and whose recorded settings
    (``lab_settings.json``) are those the recipes and the scaling rule give now."""
    scores, summary = os.path.join(job["out"], EVAL_SCORES_FILE), os.path.join(job["out"], SUMMARY_FILE)
    if not (os.path.exists(scores) and os.path.exists(summary)):
        return False
    with open(summary) as f:
        argv = shlex.split(json.load(f).get("launch_command") or "")
    flags = dict(itertools.pairwise(argv))  # each token -> the next: every "--flag" -> its value
    want = {key: str(job[key]) for key in ("algo", "seed", "reference_length", "steps", "eval_steps")}
    same = all(flags.get("--" + key.replace("_", "-")) == value for key, value in want.items())
    same = same and os.path.basename(flags.get("--sft", "")) == os.path.basename(job["sft"])
    eta = job.get("eta", DEFAULT_ETA)
    run = {"output_dir": job["out"], "seed": job["seed"], "eval_steps": job["eval_steps"]}
    settings = lab_settings(job["algo"], job["steps"], eta, **run)
    return same and same_settings(job["out"], settings)  # recipes, scaling rule and --eta as they are now


def run_sweep(
    shares: Sequence[float],
    algorithms: Sequence[str],
    seeds: Sequence[int],
    steps: int,
    eval_steps: int,
    out_root: str,
    jobs: int,
    sft_steps: int | None = None,
    cache: str = os.path.join("outputs", "lab-cache"),
    eta: str = DEFAULT_ETA,
) -> dict[str, Any]:
    """Warm starts, every run through the lab's worker pool, the per-share reports, then the sweep's table and plot."""

    def say(msg: str) -> None:
        sys.stdout.write(f"[lab-sweep {time.strftime('%H:%M:%S')}] {msg}\n")
        sys.stdout.flush()

    shares = check_shares(shares)
    t0 = time.time()
    say(f"G shares {shares}; algorithms {list(algorithms)}; seeds {list(seeds)}; {steps} steps; {jobs} at a time")
    scaling = lab_scaling(list(algorithms), steps, eta, eval_steps, say)  # every recipe read before warm starts
    starts = warm_starts(shares, cache, sft_steps, jobs, say)
    t_warm = time.time() - t0
    logs = os.path.join(out_root, "logs")
    os.makedirs(logs, exist_ok=True)
    todo, threads = [], 1 if jobs > 1 else max(1, os.cpu_count() or 1)  # as run_lab
    for share in shares:
        path, meta, _ = starts[share]
        shared = {"sft": path, "reference_length": meta["reference_length"], "steps": steps, "eval_steps": eval_steps}
        for seed in seeds:
            for algo in algorithms:
                out = os.path.join(share_dir(out_root, share), f"{algo}-seed{seed}")
                label = f"share-{share:g}/{algo}-seed{seed}"  # the run names repeat across shares
                job = {"algo": algo, "seed": seed, **shared, "threads": threads, "eta": eta, "out": out}
                todo.append({**job, "label": label})
    reused = [job for job in todo if finished(job)]
    todo = [job for job in todo if job not in reused]
    say(f"warm starts ready in {t_warm:.0f} s; {len(todo)} runs, {jobs} at a time ({len(reused)} already finished)")
    done, seconds = run_jobs(todo, jobs, logs, say) if todo else ([], {})
    done += [(job["out"], 0) for job in reused]
    t_runs = time.time() - t0 - t_warm
    for share in shares:
        prefix = share_dir(out_root, share) + os.sep
        mine = [(o, rc) for o, rc in done if o.startswith(prefix)]
        setting = {"task": f"compact-{share:g}", "share": share, "steps": steps, "lab_scaling": scaling}
        setting["reference_length"] = starts[share][1]["reference_length"]
        sys.stdout.write(f"\n== G share {share:g} ==")
        write_results(mine, seconds, share_dir(out_root, share), setting, starts[share][1])
    timing = {"seconds": time.time() - t0, "warm_start_seconds": t_warm, "runs_seconds": t_runs}
    timing["warm_starts"] = {f"{s:g}": starts[s][2] for s in shares}  # None = read from the cache
    timing["run_seconds"] = {os.path.relpath(o, out_root): v for o, v in seconds.items()}
    timing["reused_runs"] = [os.path.relpath(job["out"], out_root) for job in reused]
    table = write_sweep(out_root, shares, algorithms, timing)
    sys.stdout.write("\n" + table["markdown"] + "\n")
    say(f"total {timing['seconds']:.0f} s (warm starts {t_warm:.0f} s, runs {t_runs:.0f} s); wrote {out_root}/sweep.*")
    return table


def add_parser(subparsers: Any) -> CommandParser:
    """``python -m mo_align.lab.sweep OUT`` rebuilds a finished sweep's table and plot; ``--warm-start SHARE`` is the
    warm-start worker of :func:`warm_starts`."""
    p = subparsers.add_parser("sweep", description=add_parser.__doc__, exits=True)
    p.add_argument("out", nargs="?", default=None, help="a finished sweep's directory (rebuild its table and plot)")
    p.add_argument("--warm-start", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--cache", default=os.path.join("outputs", "lab-cache"), help=argparse.SUPPRESS)
    p.add_argument("--sft-steps", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> None:
    """``python -m mo_align.lab.sweep`` (:func:`add_parser`)."""
    run_module(add_parser, run, argv, "python -m mo_align.lab.sweep")


def run(a: argparse.Namespace) -> None:
    if a.warm_start is not None:
        torch.set_num_threads(a.threads)
        regime = compact_regime(a.warm_start)
        warm_start(
            a.cache, steps=a.sft_steps or regime.warm_start_steps, regime=regime, task=f"compact-{a.warm_start:g}"
        )
        return
    if a.out is None:
        raise UsageError("give a finished sweep's directory")
    with open(os.path.join(a.out, "sweep.json")) as f:
        setting = json.load(f)
    table = write_sweep(a.out, setting["shares"], setting["algorithms"], setting.get("timing") or {})
    sys.stdout.write(table["markdown"] + "\n")


def write_sweep(out_root: str, shares: Sequence[float], algorithms: Sequence[str], timing: dict) -> dict[str, Any]:
    """``sweep.json``, ``sweep.md`` and ``sweep.png`` from the runs' files under ``out_root``."""
    cells, starts = collect(out_root, shares, algorithms)
    markdown = format_markdown(cells, starts, timing)
    plot_sweep(cells, os.path.join(out_root, "sweep.png"))
    payload = {"shares": list(shares), "algorithms": list(algorithms), "timing": timing, "starts": starts}
    payload["cells"] = cells
    with open(os.path.join(out_root, "sweep.json"), "w") as f:
        json.dump(payload, f, indent=1)
    with open(os.path.join(out_root, "sweep.md"), "w") as f:
        f.write(markdown)
    return {**payload, "markdown": markdown}


if __name__ == "__main__":
    main()
