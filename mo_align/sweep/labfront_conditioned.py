"""The conditioned policy in ``make lab-front``: one Linear lab run trained with ``preference_conditioning``, then
measured by ``mo-align evaluate-preferences`` at the Linear sweep's preference points.

Two rows, each a sweep point per seed on its own recipe (:func:`conditioned_recipe`): the Linear lab recipe of
lab-front (:func:`mo_align.sweep.labfront.lab_recipe`, i.e. :func:`mo_align.lab.scaling.lab_settings`) plus

* the block :func:`block`: a preference drawn per prompt from Dirichlet(α = 1), uniform on the simplex, stated as a
  **system message** ``Preference: accuracy 0.50, conciseness 0.25, clarity 0.25``. The lab's warm start writes its
  tokenizer with :func:`mo_align.testing.make_tiny_model`, whose ChatML template renders every message's role and
  content, a system message included (``<|im_start|>system ... <|im_end|>``), so ``placement: system`` is accepted
  by the trainer's chat-template check; the warm start never saw a system message (nor a prefix: either placement
  is new input to it);
* for ``conditioned-same-compute`` only, ``max_steps`` = steps × the Linear sweep's points (the optimizer steps of
  the whole Linear sweep of one seed); ``conditioned-same-steps`` trains the steps of one Linear run.

Each finished run is evaluated by ``python -m mo_align.cli evaluate-preferences RUN --preferences <the sweep's
points> --reference 0,0,0 --out OUT/preferences/<run>`` (``jobs`` processes at a time, logs in
``OUT/preferences/logs``); a point already evaluated is read back by the command, not evaluated again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mo_align.preferences.evaluate import FRONT_FILE  # what evaluate-preferences writes
from mo_align.preferences.spec import NAME
from mo_align.process_group import die_with_parent


ROWS = ("conditioned-same-compute", "conditioned-same-steps")  # longest first: the sweep starts it first


def template(objectives: Sequence[str]) -> str:
    """``Preference: accuracy {accuracy:.2f}, conciseness {conciseness:.2f}, clarity {clarity:.2f}``."""
    return "Preference: " + ", ".join(f"{name} {{{name}:.2f}}" for name in objectives)


def block(objectives: Sequence[str]) -> dict[str, Any]:
    """The ``preference_conditioning`` block of both rows (module docstring)."""
    return {"sampler": "dirichlet", "alpha": 1.0, "template": template(objectives), "placement": "system"}


def row_steps(steps: int, linear_points: int) -> dict[str, int]:
    """Optimizer steps of each row: one Linear run's, and the whole Linear sweep's (per seed)."""
    return {"conditioned-same-compute": steps * linear_points, "conditioned-same-steps": steps}


def conditioned_recipe(linear_recipe: Callable[[int], dict[str, Any]], max_steps: int) -> dict[str, Any]:
    """The Linear lab recipe of ``max_steps`` steps (``linear_recipe(max_steps)``) with the conditioning block."""
    body = linear_recipe(max_steps)
    return {**body, NAME: block(body["reward_funcs"])}


def declared(steps: int, linear_points: int, objectives: Sequence[str]) -> dict[str, Any]:
    """What the rows change in the Linear lab recipe (printed first, in ``front.json``)."""
    return {
        "recipe": "the Linear lab recipe of lab-front (lab_settings('linear', steps)), sweep harness as every point",
        NAME: block(objectives),
        "max_steps": row_steps(steps, linear_points),
        "changes": {"conditioned-same-steps": [NAME], "conditioned-same-compute": [NAME, "max_steps"]},
    }


def preference_text(points: Sequence[Sequence[float]]) -> str:
    """``--preferences`` of evaluate-preferences: ``1,0,0;0.5,0.25,0.25``."""
    return ";".join(",".join(format(x, "g") for x in w) for w in points)


def eval_command(run_dir: str, points: Sequence[Sequence[float]], out_dir: str, reference: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mo_align.cli",
        "evaluate-preferences",
        run_dir,
        "--preferences",
        preference_text(points),
        "--reference",
        reference,
        "--out",
        out_dir,
    ]


def _evaluate(run_dir: str, points: Sequence[Sequence[float]], out_root: str, reference: str, threads: int) -> dict:
    name = os.path.basename(os.path.normpath(run_dir))
    out_dir = os.path.join(out_root, name)
    logs = os.path.join(out_root, "logs")
    os.makedirs(logs, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    preexec = die_with_parent if sys.platform.startswith("linux") else None
    t0 = time.time()
    with open(os.path.join(logs, name + ".log"), "a") as log:
        cmd = eval_command(run_dir, points, out_dir, reference)
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=preexec).returncode
    return {"run": run_dir, "out": out_dir, "rc": rc, "seconds": time.time() - t0}


def evaluate_runs(
    runs: Sequence[str], points: Sequence[Sequence[float]], out_root: str, jobs: int, reference: str, say: Any = print
) -> list[dict[str, Any]]:
    """evaluate-preferences on every run, ``jobs`` processes at a time: per run (in order) its out dir, return code,
    seconds and, when it succeeded, ``point_dirs`` (each preference's summary directory, from its front file)."""
    threads = 1 if jobs > 1 else max(1, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(lambda run: _evaluate(run, points, out_root, reference, threads), runs))
    for r in results:
        ok = r["rc"] == 0 and os.path.isfile(os.path.join(r["out"], FRONT_FILE))
        if ok:
            with open(os.path.join(r["out"], FRONT_FILE)) as f:
                r["point_dirs"] = [p["dir"] for p in json.load(f)["points"]]
        log = os.path.join(out_root, "logs", os.path.basename(r["out"]) + ".log")
        status = "ok" if ok else f"FAILED (rc {r['rc']}, see {log})"
        say(f"evaluate-preferences {r['run']}: {status} in {r['seconds']:.0f} s")
    return results
