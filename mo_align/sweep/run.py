"""Running a sweep: each point an ordinary ``python -m mo_align.train --config <point>/sweep_recipe.yaml`` process.

Re-running is safe after any kill. A point is **finished** when its output_dir holds ``sweep_done.json`` (written by
this runner after the process exited 0 with its summary and model saved) or — a point run elsewhere, e.g. by the
Slurm template — ``train_results.json``, ``mo_summary.json`` and the final model; a finished point is never started
again. Any other point is started with the same command, and ``mo_align.train`` resumes it from the newest
*complete* checkpoint of its output_dir (``mo_align.checkpoints``: a checkpoint killed mid-write is skipped), so a
killed sweep loses at most the steps since each running point's last checkpoint (``save_strategy: steps`` in the
recipe or the sweep's ``overrides``; with ``save_strategy: no`` a killed point restarts from step 0: the runner
says so). One sweep at a time per output_dir (an exclusive lock, released by the kernel when the process dies), and
on Linux the training processes die with the sweep (``PR_SET_PDEATHSIG``), so a ``kill -9`` of the sweep leaves no
orphan writing into a point another sweep then resumes.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from mo_align.checkpoints import last_complete_checkpoint
from mo_align.launch import resolve_accelerate_config
from mo_align.process_group import die_with_parent
from mo_align.runs.files import SWEEP_RECIPE_FILE, TRAIN_RESULTS_FILE, WEIGHT_FILES
from mo_align.runs.progress import PROGRESS_ENV, ProgressWatcher, completed_with_progress
from mo_align.runs.summary import SUMMARY_FILE
from mo_align.sweep.spec import Point, Sweep, point_recipe


RECIPE_FILE = SWEEP_RECIPE_FILE
RECIPES_DIR = "recipes"  # --print-commands: <output_dir>/recipes/<point>.yaml (a point's name ends in -seed<s>)
DONE_FILE = "sweep_done.json"
LOCK_FILE = ".sweep.lock"


def point_status(run_dir: str) -> str:
    """``done``, ``resume`` (a complete checkpoint to continue from), ``restart`` (output but no complete
    checkpoint) or ``new``."""
    if os.path.exists(os.path.join(run_dir, DONE_FILE)):
        return "done"
    files = (TRAIN_RESULTS_FILE, SUMMARY_FILE)
    if all(os.path.exists(os.path.join(run_dir, f)) for f in files) and any(
        os.path.exists(os.path.join(run_dir, f)) for f in WEIGHT_FILES
    ):
        return "done"
    if last_complete_checkpoint(run_dir, verify=False)[0] is not None:  # the resumed run verifies checksums
        return "resume"
    return "restart" if os.path.isdir(run_dir) and os.listdir(run_dir) else "new"


def write_recipe(sweep: Sweep, point: Point, path: str | None = None) -> str:
    """Write the point's resolved recipe (the command that runs it names only this file) to ``path``, by default
    into its output_dir."""
    path = path or os.path.join(sweep.point_dir(point), RECIPE_FILE)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    base = sweep.base_recipe(point)[0]
    header = f"# point {point.name} of the sweep {sweep.path} (base recipe {base}); written by mo-align sweep\n"
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(header)
        yaml.safe_dump(point_recipe(sweep, point), f, sort_keys=False)
    os.replace(path + ".tmp", path)
    return path


def train_command(recipe: str) -> list[str]:
    return [sys.executable, "-m", "mo_align.train", "--config", recipe]


def printed_recipe_path(sweep: Sweep, point: Point) -> str:
    """Where ``--print-commands`` writes a point's recipe: all of them in one folder, no point directory made."""
    return os.path.join(sweep.output_dir, RECIPES_DIR, point.name + ".yaml")


def point_accelerate_config(sweep: Sweep, point: Point) -> str:
    """The sweep's ``accelerate_config`` when it names one (or ``--accelerate-config``), else ``cpu`` for a point
    whose recipe has ``use_cpu: true`` (one process, where ``ddp`` would start its several ranks), else ``ddp``."""
    if sweep.accelerate_config:
        return sweep.accelerate_config
    return "cpu" if point_recipe(sweep, point).get("use_cpu") is True else "ddp"


def accelerate_line(sweep: Sweep, point: Point, recipe: str, workdir: str) -> str:
    """``accelerate launch --config_file CFG -m mo_align.train --config RECIPE`` with absolute paths."""
    config = resolve_accelerate_config(point_accelerate_config(sweep, point), Path(workdir))
    parts = ["accelerate", "launch", "--config_file", os.path.abspath(config), "-m", "mo_align.train"]
    return shlex.join([*parts, "--config", os.path.abspath(recipe)])


def run_point(sweep: Sweep, point: Point, threads: int) -> tuple[Point, int, float]:
    """Run (or resume) one point in its own process; mark it done when it exits 0 with its outputs."""
    run_dir = sweep.point_dir(point)
    recipe = write_recipe(sweep, point)
    logs = os.path.join(sweep.output_dir, "logs")
    os.makedirs(logs, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    env[PROGRESS_ENV] = os.path.join(logs, point.name + ".progress")
    start = time.time()
    with open(os.path.join(logs, point.name + ".log"), "a") as log:  # a resumed point keeps its earlier log
        log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(train_command(recipe))}\n")
        log.flush()
        preexec = die_with_parent if sys.platform.startswith("linux") else None
        proc = subprocess.run(train_command(recipe), stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=preexec)
    seconds = time.time() - start
    if proc.returncode == 0 and point_status(run_dir) == "done":
        with open(os.path.join(run_dir, DONE_FILE), "w") as f:
            json.dump({"point": point.name, "seconds": seconds, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}, f)
    return point, proc.returncode, seconds


def _watcher(sweep: Sweep, todo: list[Point], say: Any) -> ProgressWatcher:
    """Watches ``<output_dir>/logs/<point>.progress`` of every point to run (an earlier sweep's record removed)."""
    watcher = ProgressWatcher(say)
    for point in todo:
        path = os.path.join(sweep.output_dir, "logs", point.name + ".progress")
        if os.path.exists(path):
            os.remove(path)
        watcher.watch(point.name, path)
    return watcher


class SweepLocked(RuntimeError):
    pass


def lock(output_dir: str) -> Any:
    """An exclusive lock on the sweep's output_dir, held while the returned file stays open."""
    os.makedirs(output_dir, exist_ok=True)
    handle = open(os.path.join(output_dir, LOCK_FILE), "w")  # noqa: SIM115 (held for the sweep's lifetime)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise SweepLocked(f"{output_dir}: another mo-align sweep is running on it") from None
    return handle


def run_sweep(sweep: Sweep, jobs: int, say: Any = print, run: Any = None, poll: float = 2.0) -> dict[str, Any]:
    """Run every unfinished point, ``jobs`` at a time; returns {point name: {"status", "rc", "seconds"}}. While they
    run, each point's ``step k/n (eta ...)`` every tenth of its steps or 30 s (:mod:`mo_align.runs.progress`).
    ``run``: :func:`run_point` (tests pass a fake)."""
    handle = lock(sweep.output_dir)
    try:
        status = {p.name: point_status(sweep.point_dir(p)) for p in sweep.points}
        todo = [p for p in sweep.points if status[p.name] != "done"]
        say(
            f"{len(sweep.points)} points: {len(sweep.points) - len(todo)} finished, {len(todo)} to run, {jobs} at a time"
        )
        for note in sweep.notes:
            say(f"note: {note}")
        if todo and str(point_recipe(sweep, todo[0]).get("save_strategy", "steps")) == "no":
            say("note: save_strategy is 'no': a killed point restarts from step 0 (set save_strategy: steps)")
        result = {p.name: {"status": "skipped (finished)", "rc": 0, "seconds": 0.0} for p in sweep.points}
        threads = 1 if jobs > 1 else max(1, os.cpu_count() or 1)
        watcher = _watcher(sweep, todo, say)
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = []
            for p in todo:
                say(f"{p.name}: {status[p.name]}")
                futures.append(pool.submit(run or run_point, sweep, p, threads))
            for future in completed_with_progress(futures, watcher, poll):
                point, rc, seconds = future.result()
                watcher.forget(point.name)
                ok = rc == 0
                result[point.name] = {"status": "ok" if ok else f"FAILED (rc {rc})", "rc": rc, "seconds": seconds}
                log = os.path.join(sweep.output_dir, "logs", point.name + ".log")
                say(f"{point.name}: {'ok' if ok else f'FAILED (rc {rc}, see {log})'} in {seconds:.0f} s")
    finally:
        handle.close()
    return result
