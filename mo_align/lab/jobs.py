"""The lab's worker processes: ``python -m mo_align.lab worker ...`` per (algorithm, seed) run, ``jobs`` at a time,
each writing to ``<logs>/<run>.log``; the console gets each run's ``step k/n (eta ...)`` while it trains
(:mod:`mo_align.runs.progress`: the worker's trainer writes ``<logs>/<run>.progress``) and a line when it ends.
:func:`warm_start_threads`: the threads of the single warm-start process."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mo_align.process_group import die_with_parent
from mo_align.runs.progress import PROGRESS_ENV, ProgressWatcher, completed_with_progress


# measured run time relative to linear on 2 cores (K + 1 or K backward passes per step), for scheduling only
RELATIVE_COST = {"dynamic": 2.0, "mgda": 1.6, "gradnorm": 1.6}


_WORKER_FLAGS = ("algo", "seed", "sft", "reference_length", "out", "steps", "eval_steps", "threads", "eta")


def _label(job: dict[str, Any]) -> str:
    """How a run is named in the log and its log file: ``job["label"]`` (the sweep's ``share-<s>/<run>``), else the
    run directory's name."""
    return job.get("label") or os.path.basename(job["out"])


def _progress_file(job: dict[str, Any], log_dir: str) -> str:
    return os.path.join(log_dir, _label(job).replace("/", "_") + ".progress")


def worker_command(job: dict[str, Any]) -> list[str]:
    """The worker's command line for one job (``python -m mo_align.lab worker ...``)."""
    cmd = [sys.executable, "-m", "mo_align.lab", "worker"]
    for key in (k for k in _WORKER_FLAGS if k in job):  # no "eta": the worker's default
        cmd += ["--" + key.replace("_", "-"), str(job[key])]
    return cmd + (["--save-model"] if job.get("save_model") else [])


def _launch(job: dict[str, Any], log_dir: str) -> tuple[str, float, int]:
    cmd = worker_command(job)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(job["threads"]),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        PROGRESS_ENV: _progress_file(job, log_dir),
    }
    t0 = time.time()
    with open(os.path.join(log_dir, _label(job).replace("/", "_") + ".log"), "w") as log:
        # the worker dies with the pool thread that waits on it, also when the lab is killed with SIGKILL
        preexec = die_with_parent if sys.platform.startswith("linux") else None
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=preexec).returncode
    return job["out"], time.time() - t0, rc


def run_jobs(
    todo: list[dict[str, Any]], jobs: int, logs: str, say: Any, launch: Any = None, poll: float = 2.0
) -> tuple[list[tuple[str, int]], dict]:
    """Run the worker processes ``jobs`` at a time, longest first: ``(out, returncode)`` in the order of ``todo``,
    and each run's seconds (by ``out``); while they run, each run's ``step k/n (eta ...)`` every tenth of its steps
    or 30 s (:mod:`mo_align.runs.progress`). ``launch``: :func:`_launch` (tests pass a fake worker)."""
    order = {job["out"]: i for i, job in enumerate(todo)}
    labels = {job["out"]: _label(job) for job in todo}
    # longest first (a parameter-space Gram costs K or K + 1 backward passes per step): shortest total time
    todo = sorted(todo, key=lambda job: -RELATIVE_COST.get(job["algo"], 1.0))
    watcher = ProgressWatcher(say)
    for job in todo:
        with contextlib.suppress(FileNotFoundError):  # an earlier lab's record is not this run's progress
            os.remove(_progress_file(job, logs))
        watcher.watch(labels[job["out"]], _progress_file(job, logs))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        done, seconds = [], {}
        futures = [pool.submit(launch or _launch, job, logs) for job in todo]
        for future in completed_with_progress(futures, watcher, poll):
            out, secs, rc = future.result()
            watcher.forget(labels[out])
            say(f"{labels[out]}: {'ok' if rc == 0 else f'FAILED (rc {rc}, see logs/)'} in {secs:.0f} s")
            done.append((out, rc))
            seconds[out] = secs
    done.sort(key=lambda item: order[item[0]])  # report in algorithm order
    return done, seconds


_run_jobs = run_jobs  # its name before the sweep and the lab shared it (kept for existing callers)


def warm_start_threads() -> int:
    """Threads for the single warm-start process: every core on an idle machine, 1 on a busy one.

    Measured on the 2-core lab machine while other jobs ran (load average ≈ 5): one SFT step took 2.9 s on 2 threads
    and 0.64–0.74 s on 1 (oversubscribed OpenMP threads wait on each other); idle, 2 threads take 0.21 s
    per step. "Busy" = a 1-minute load average above half the cores.
    """
    cores = max(1, os.cpu_count() or 1)
    return cores if os.getloadavg()[0] <= cores / 2 else 1
