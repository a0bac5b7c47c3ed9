"""``make lab-front``: the lab's fronts — a Linear preference sweep, a CTWA sweep, UPGrad, and the soup of the
single-objective runs — on the lab's task, with hypervolumes and run times.

``python -m mo_align.sweep.labfront [--task tradeoff] [--steps 50] [--seeds 0] [--jobs 2] [--algorithms ...]``

Everything goes through the user-facing commands: the warm start of the lab (cached, :mod:`mo_align.lab.sft`), the
lab's data written as a local dataset (``train.jsonl``, ``test.jsonl``), one recipe per algorithm with exactly the
settings of a lab run (:func:`mo_align.lab.scaling.lab_settings`: the paper recipe under the lab's scaling rule, with
``--eta``; sampled evaluation at T = 1 with 4 samples per held-out prompt, conciseness against the warm-started
policy's length) plus checkpoints for the sweep's resume, a sweep file run by ``mo-align sweep``
(:mod:`mo_align.sweep`; each algorithm on its own recipe), ``mo-align soup`` over the three
single-objective Linear runs (the simplex corners) and ``mo-align report`` with its fronts section. Writes
``OUT/front.md`` (the table in docs/fronts.md) and ``OUT/report/fronts.png``.

The lab's scaling rule is printed first and written to ``OUT/lab_scaling.json``.

Preference points (kept few to fit 30 minutes on 2 cores): Linear at the three corners and at two interior points,
CTWA and UPGrad (``pref_vector``) at the two interior points; the soup at every point of the simplex grid with 2
steps over the corner runs (its corners are the Linear corner models re-evaluated).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch
import yaml

from mo_align.lab.batch import lab_scaling
from mo_align.lab.jobs import warm_start_threads
from mo_align.lab.run import lab_datasets
from mo_align.lab.scaling import DEFAULT_ETA, ETA_MODES, lab_settings, paper_recipe
from mo_align.lab.sft import warm_start
from mo_align.lab.task import get_regime
from mo_align.runs.files import SWEEP_RECIPE_FILE
from mo_align.runs.report import write_report
from mo_align.runs.summary import load_runs
from mo_align.soup import parse_alphas, run_soup
from mo_align.sweep import load_sweep
from mo_align.sweep.run import DONE_FILE, run_sweep
from mo_align.sweep.spec import point_name
from mo_align.weightings import get_weighting


CORNERS = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
INTERIOR = [[0.5, 0.25, 0.25], [0.334, 0.333, 0.333]]
ALGORITHMS = ("linear", "ctwa", "upgrad", "soup")
# the sweep's own settings (resume and evaluation schedule), beside the lab's: no hyperparameter among them
SWEEP_HARNESS = ("output_dir", "eval_steps", "save_strategy", "save_steps", "save_total_limit")


def _say(message: str) -> None:
    sys.stdout.write(f"[lab-front {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stdout.flush()


def write_data(out: str, eval_prompts: int | None) -> str:
    """The lab's train and held-out splits as ``train.jsonl`` / ``test.jsonl`` (``dataset_path`` of the recipe)."""
    train, held_out = lab_datasets()
    if eval_prompts:
        held_out = held_out.select(range(min(eval_prompts, len(held_out))))
    data = os.path.join(out, "data")
    os.makedirs(data, exist_ok=True)
    train.to_json(os.path.join(data, "train.jsonl"), lines=True)
    held_out.to_json(os.path.join(data, "test.jsonl"), lines=True)
    return data


def lab_recipe(algorithm: str, sft_dir: str, data: str, reference_length: float, steps: int, eta: str) -> dict:
    """A lab run's settings (:func:`mo_align.lab.scaling.lab_settings`) as a recipe on the lab's model and data,
    evaluated at the start and the end, checkpointed at half-way (a killed sweep resumes)."""
    paper = paper_recipe(algorithm)
    settings = lab_settings(algorithm, steps, eta, output_dir=os.path.join(data, "unused"), eval_steps=steps)
    for key in ("seed", "run_name", "mo_run_label"):  # the sweep sets them per point
        settings.pop(key)
    task = {
        "model_name_or_path": sft_dir,
        "dtype": "float32",
        "dataset_path": data,
        "dataset_train_split": paper["dataset_train_split"],
        "eval_split": "test",
        "reward_funcs": paper["reward_funcs"],
        "reward_kwargs": {
            "accuracy": {"mode": "reference"},
            "conciseness": {"eval_reference_length": reference_length},
            "clarity": {"strict": True},
        },
    }
    harness = {"save_strategy": "steps", "save_steps": max(1, steps // 2), "save_total_limit": 1}
    return {**task, **settings, **harness}


def check_algorithms(algorithms: Sequence[str]) -> None:
    """Refuse, in one line, an algorithm this checkout lacks (UPGrad comes with the TorchJD family)."""
    unknown = [a for a in algorithms if a not in ALGORITHMS]
    if unknown:
        raise SystemExit(f"mo-align: error: lab-front: unknown algorithm(s) {unknown}; choose from {list(ALGORITHMS)}")
    for name in algorithms:
        if name == "soup":
            continue
        try:
            get_weighting(name, 3)
        except (ValueError, TypeError) as exc:
            rest = [a for a in algorithms if a != name]
            raise SystemExit(
                f"mo-align: error: lab-front: weighting {name!r} is not available in this checkout ({exc}); "
                f"run without it: python -m mo_align.sweep.labfront --algorithms {' '.join(rest)}"
            ) from None


def _points(algorithms: Sequence[str], recipes: dict[str, str]) -> dict[str, Any]:
    """Per algorithm of the sweep: its own lab recipe and preference axis (CTWA, UPGrad: interior points only)."""
    algos: dict[str, Any] = {}
    if "linear" in algorithms or "soup" in algorithms:
        algos["linear"] = {"preferences": CORNERS + INTERIOR if "linear" in algorithms else CORNERS}
    for name in ("ctwa", "upgrad"):
        if name in algorithms:
            algos[name] = {"recipe": recipes[name], "preferences": INTERIOR}
    return algos


def write_recipes(out: str, algorithms: Sequence[str], sft_dir: str, data: str, meta: dict, args: Any) -> dict:
    """``OUT/recipes/<algorithm>.yaml`` for Linear (the sweep's base recipe) and each other algorithm swept."""
    folder = os.path.join(out, "recipes")
    os.makedirs(folder, exist_ok=True)
    recipes = {}
    for name in ["linear", *(a for a in algorithms if a not in ("linear", "soup"))]:
        recipes[name] = os.path.join(folder, f"{name}.yaml")
        body = lab_recipe(name, sft_dir, data, meta["reference_length"], args.steps, args.eta)
        with open(recipes[name], "w") as f:
            yaml.safe_dump(body, f, sort_keys=False)
    return recipes


def write_sweep_file(args: Any, sft_dir: str, data: str, meta: dict) -> str:
    """``OUT/recipes/*.yaml`` (:func:`write_recipes`) and ``OUT/sweep.yaml`` on them; returns the sweep file."""
    recipes = write_recipes(args.out, args.algorithms, sft_dir, data, meta, args)
    body = {"recipe": recipes["linear"], "output_dir": os.path.join(args.out, "runs")}
    body["algorithms"] = _points(args.algorithms, recipes)
    body.update(seeds=list(args.seeds), accelerate_config="cpu")
    path = os.path.join(args.out, "sweep.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(body, f, sort_keys=False)
    return path


def front_table(result: dict[str, Any], seconds: dict[str, float]) -> str:
    """Markdown: per algorithm, points, non-dominated, HV and the summed run time; the front's points."""
    objectives = result["objectives"]
    lines = [
        f"| algorithm | points | non-dominated | HV | run time (s, summed) | front: {', '.join(objectives)} |",
        "|---|---|---|---|---|---|",
    ]
    for algorithm, f in result["fronts"].items():
        front = "; ".join(
            "(" + ", ".join(f"{f['points'][n]['mean'][o]:.3f}" for o in objectives) + ")" for n in f["front"]
        )
        hv = "n/a" if f["hypervolume"] is None else f"{f['hypervolume']:.4f}"
        secs = seconds.get(algorithm, 0.0)
        lines.append(f"| {algorithm} | {len(f['points'])} | {len(f['front'])} | {hv} | {secs:.0f} | {front} |")
    return "\n".join(lines)


def _run_seconds(sweep: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for point in sweep.points:
        done = os.path.join(sweep.point_dir(point), DONE_FILE)
        if os.path.exists(done):
            with open(done) as f:
                out[point.label] = out.get(point.label, 0.0) + float(json.load(f)["seconds"])
    return out


def run_lab_front(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.time()
    check_algorithms(args.algorithms)
    swept = ["linear", *(a for a in args.algorithms if a not in ("linear", "soup"))]
    scaling = lab_scaling(swept, args.steps, args.eta, args.steps, _say)  # every recipe read before the warm start
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "lab_scaling.json"), "w") as f:
        json.dump(scaling, f, indent=1)
    regime = get_regime(args.task)
    steps = args.sft_steps or regime.warm_start_steps
    torch.set_num_threads(warm_start_threads())  # as the lab: 1 thread on a busy machine
    sft_dir, meta = warm_start(args.cache, steps=steps, log=_say, regime=regime, task=args.task)
    _say(f"warm start {sft_dir} ({meta['parameters']:,} parameters, reference length {meta['reference_length']:.1f})")
    data = write_data(args.out, args.eval_prompts)
    sweep = load_sweep(write_sweep_file(args, sft_dir, data, meta))
    results = run_sweep(sweep, args.jobs, say=_say)
    dirs = [sweep.point_dir(p) for p in sweep.points if results[p.name]["rc"] == 0]
    seconds = _run_seconds(sweep)
    if "soup" in args.algorithms:
        t_soup = time.time()
        seed = args.seeds[0]
        corners = [os.path.join(sweep.output_dir, point_name("linear", w, {}, seed)) for w in CORNERS]
        soup_dir = os.path.join(args.out, "soup")
        os.makedirs(soup_dir, exist_ok=True)
        recipe_a = os.path.join(corners[0], SWEEP_RECIPE_FILE)
        rows = run_soup(corners, parse_alphas("grid:2", 3), soup_dir, recipe_a, "merged", say=_say)
        dirs += [r["dir"] for r in rows]
        seconds["soup"] = time.time() - t_soup
    if "linear" not in args.algorithms:
        dirs = [d for d in dirs if not os.path.basename(d).startswith("linear-")]
    result = write_report(load_runs(dirs), os.path.join(args.out, "report"), reference="0,0,0")
    table = front_table(result, seconds)
    total = time.time() - t0
    stamp = time.strftime("%Y-%m-%d")
    setting = f"task {args.task}, {args.steps} steps, --eta {args.eta}, seeds {list(args.seeds)}, {args.jobs} jobs"
    head = f"`make lab-front` ({stamp}, {setting}): {total:.0f} s in all"
    with open(os.path.join(args.out, "front.md"), "w") as f:
        f.write(head + "\n\n" + table + "\n")
    _say(head)
    sys.stdout.write(table + "\n")
    return {"result": result, "seconds": seconds, "total": total}


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m mo_align.sweep.labfront", description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="tradeoff", help="the lab's task regime (default tradeoff)")
    p.add_argument("--steps", type=int, default=50, help="GRPO steps per run (default 50, as the lab)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), help=f"a subset of {list(ALGORITHMS)}")
    p.add_argument("--out", default=os.path.join("outputs", "lab-front"))
    p.add_argument("--cache", default=os.path.join("outputs", "lab-cache"), help="the lab's warm-start cache")
    p.add_argument("--sft-steps", type=int, default=None, help="warm-start steps (default: the task's)")
    p.add_argument("--eval-prompts", type=int, default=None, help="held-out prompts evaluated (default: all)")
    p.add_argument("--eta", choices=ETA_MODES, default=DEFAULT_ETA, help="adaptive step sizes, as the lab's --eta")
    run_lab_front(p.parse_args(argv))


if __name__ == "__main__":
    main()
