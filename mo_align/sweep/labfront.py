"""``make lab-front``: the lab's fronts — a Linear preference sweep, a CTWA sweep, UPGrad, the soup of the
single-objective runs and the preference-conditioned policy — on the lab's task, with hypervolumes, run times and
the conditioned policy's paired HV comparisons over seeds.

``python -m mo_align.sweep.labfront [--task tradeoff] [--steps 50] [--seeds 0 1 2] [--jobs 2] [--algorithms ...]``

Everything goes through the user-facing commands: the warm start of the lab (cached, :mod:`mo_align.lab.sft`), the
lab's data written as a local dataset (``train.jsonl``, ``test.jsonl``), one recipe per algorithm with exactly the
settings of a lab run (:func:`mo_align.lab.scaling.lab_settings`: the paper recipe under the lab's scaling rule, with
``--eta``; sampled evaluation at T = 1 with 4 samples per held-out prompt, conciseness against the warm-started
policy's length) plus checkpoints for the sweep's resume, a sweep file run by ``mo-align sweep``
(:mod:`mo_align.sweep`; each algorithm on its own recipe), ``mo-align soup`` over each seed's three
single-objective Linear runs (the simplex corners), ``mo-align evaluate-preferences`` on each conditioned run and
``mo-align report`` with its fronts section. Writes ``OUT/front.md`` (the tables in docs/fronts.md),
``OUT/front.json`` and ``OUT/report/fronts.png``.

The lab's scaling rule is printed first and written to ``OUT/lab_scaling.json``; the conditioned rows' changes to the
Linear lab recipe (:mod:`mo_align.sweep.labfront_conditioned`) are printed next and written into ``front.json``.

Preference points (kept few): Linear at the three corners and at two interior points, CTWA and UPGrad
(``pref_vector``) at the two interior points; the soup at every point of the simplex grid with 2 steps over each
seed's corner runs (its corners are the Linear corner models re-evaluated); the conditioned policy — one Linear run
with ``preference_conditioning``, trained for the steps of one Linear run (``conditioned-same-steps``) and for the
steps of the whole Linear sweep (``conditioned-same-compute``) — evaluated at the Linear sweep's five points.

In the report, soup and evaluate-preferences points are named ``<point>-seed<s>`` (in memory; their summaries keep
their names) so that the seeds of one point are grouped as the sweep's are. The verdict
(:mod:`mo_align.sweep.labfront_paired`): per seed, the HV of each front's own points above the origin, and each
conditioned row's paired difference with the Linear sweep and the soup (same seed, same warm start), t interval over
seeds, Holm over the comparisons.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch
import yaml

from mo_align.cli import CommandParser, run_module
from mo_align.lab.batch import lab_scaling
from mo_align.lab.jobs import warm_start_threads
from mo_align.lab.run import lab_datasets
from mo_align.lab.scaling import DEFAULT_ETA, ETA_MODES, lab_settings, paper_recipe
from mo_align.lab.sft import warm_start
from mo_align.lab.task import get_regime
from mo_align.runs.files import SWEEP_RECIPE_FILE
from mo_align.runs.report import write_report
from mo_align.runs.summary import json_safe, load_run
from mo_align.soup import parse_alphas, run_soup
from mo_align.sweep import load_sweep
from mo_align.sweep.labfront_conditioned import ROWS, conditioned_recipe, declared, evaluate_runs, row_steps
from mo_align.sweep.labfront_paired import compare, comparison_table, hv_table, seed_hypervolumes
from mo_align.sweep.run import DONE_FILE, run_sweep
from mo_align.sweep.spec import point_name
from mo_align.weightings import get_weighting


CORNERS = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
INTERIOR = [[0.5, 0.25, 0.25], [0.334, 0.333, 0.333]]
ALGORITHMS = ("linear", "ctwa", "upgrad", "soup", "conditioned")
DEFAULT_SEEDS = [0, 1, 2]  # paired comparisons over seeds need at least 3 (a t interval with 2 degrees of freedom)
REFERENCE = "0,0,0"  # HV reference point of the report and the paired comparisons
SOUP_ALPHAS = "grid:2"
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
        if name in ("soup", "conditioned"):  # conditioned: the Linear recipe with a block (checked by the sweep)
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
    """Per algorithm of the sweep: its own lab recipe and preference axis (CTWA, UPGrad: interior points only; the
    conditioned rows: none, one run per seed)."""
    algos: dict[str, Any] = {}
    if "conditioned" in algorithms:  # first: the same-compute runs are the longest, the sweep starts them first
        algos.update({row: {"recipe": recipes[row], "preferences": False} for row in ROWS})
    if "linear" in algorithms or "soup" in algorithms:
        algos["linear"] = {"preferences": CORNERS + INTERIOR if "linear" in algorithms else CORNERS}
    for name in ("ctwa", "upgrad"):
        if name in algorithms:
            algos[name] = {"recipe": recipes[name], "preferences": INTERIOR}
    return algos


def write_recipes(out: str, algorithms: Sequence[str], sft_dir: str, data: str, meta: dict, args: Any) -> dict:
    """``OUT/recipes/<algorithm>.yaml`` for Linear (the sweep's base recipe), each other algorithm swept and each
    conditioned row (:func:`mo_align.sweep.labfront_conditioned.conditioned_recipe`)."""
    folder = os.path.join(out, "recipes")
    os.makedirs(folder, exist_ok=True)
    recipes = {}
    bodies = {}
    for name in ["linear", *(a for a in algorithms if a not in ("linear", "soup", "conditioned"))]:
        bodies[name] = lab_recipe(name, sft_dir, data, meta["reference_length"], args.steps, args.eta)
    if "conditioned" in algorithms:
        linear = functools.partial(lab_recipe, "linear", sft_dir, data, meta["reference_length"], eta=args.eta)
        for row, steps in row_steps(args.steps, len(CORNERS + INTERIOR)).items():
            bodies[row] = conditioned_recipe(linear, steps)
    for name, body in bodies.items():
        recipes[name] = os.path.join(folder, f"{name}.yaml")
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


def _prepare(args: argparse.Namespace) -> Any:
    """The scaling rule (printed, ``lab_scaling.json``), the conditioned rows' changes (printed), the warm start, the
    data and the sweep file; returns the loaded sweep."""
    check_algorithms(args.algorithms)
    swept = ["linear", *(a for a in args.algorithms if a not in ("linear", "soup", "conditioned"))]
    scaling = lab_scaling(swept, args.steps, args.eta, args.steps, _say)  # every recipe read before the warm start
    if "conditioned" in args.algorithms:
        changes = _declared(args)
        _say(
            f"conditioned rows: the Linear lab recipe with only these fields changed {json.dumps(changes['changes'])}"
        )
        for key in ("preference_conditioning", "max_steps"):
            _say(f"  {key}: {json.dumps(changes[key])}")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "lab_scaling.json"), "w") as f:
        json.dump(scaling, f, indent=1)
    regime = get_regime(args.task)
    steps = args.sft_steps or regime.warm_start_steps
    torch.set_num_threads(warm_start_threads())  # as the lab: 1 thread on a busy machine
    sft_dir, meta = warm_start(args.cache, steps=steps, log=_say, regime=regime, task=args.task)
    _say(f"warm start {sft_dir} ({meta['parameters']:,} parameters, reference length {meta['reference_length']:.1f})")
    data = write_data(args.out, args.eval_prompts)
    return load_sweep(write_sweep_file(args, sft_dir, data, meta))


def _declared(args: argparse.Namespace) -> dict[str, Any]:
    return declared(args.steps, len(CORNERS + INTERIOR), paper_recipe("linear")["reward_funcs"])


# ---- the fronts per seed: (front, seed, summary directory) entries ----
def _soups(args: argparse.Namespace, sweep: Any, ok: set[str]) -> list[tuple[str, int, str]]:
    """``mo-align soup`` of each seed's three corner runs into ``OUT/soup/seed<s>`` (a seed whose corner failed: none)."""
    entries = []
    for seed in args.seeds:
        corners = [os.path.join(sweep.output_dir, point_name("linear", w, {}, seed)) for w in CORNERS]
        if not set(corners) <= ok:
            _say(f"soup seed {seed}: not made (a corner run of seed {seed} failed)")
            continue
        soup_dir = os.path.join(args.out, "soup", f"seed{seed}")
        os.makedirs(soup_dir, exist_ok=True)
        recipe = os.path.join(corners[0], SWEEP_RECIPE_FILE)
        rows = run_soup(corners, parse_alphas(SOUP_ALPHAS, len(CORNERS)), soup_dir, recipe, "merged", say=_say)
        entries += [("soup", seed, r["dir"]) for r in rows]
    return entries


def _conditioned(args: argparse.Namespace, sweep: Any, ok: set[str], seconds: dict) -> list[tuple[str, int, str]]:
    """evaluate-preferences on every finished conditioned run at the Linear sweep's points (``OUT/preferences``)."""
    runs = {sweep.point_dir(p): p for p in sweep.points if p.label in ROWS and sweep.point_dir(p) in ok}
    out = os.path.join(args.out, "preferences")
    results = evaluate_runs(list(runs), CORNERS + INTERIOR, out, args.jobs, REFERENCE, say=_say)
    entries = []
    for r in results:
        point = runs[r["run"]]
        seconds[point.label] = seconds.get(point.label, 0.0) + r["seconds"]
        entries += [(point.label, point.seed, d) for d in r.get("point_dirs", [])]
    return entries


def _tagged(front: str, seed: int, path: str, rename: bool) -> dict[str, Any]:
    """The run's summary labelled with its front; a soup or evaluate-preferences point named ``<point>-seed<s>``
    (prefixed with its front where its name lacks it), so that the report groups its seeds into one point."""
    run = load_run(path)
    if rename:
        base = os.path.basename(os.path.normpath(path))
        base = base if base.startswith(front) else f"{front}-{base}"
        run = {**run, "run_name": f"{base}-seed{seed}"}
    return {**run, "algorithm": front}


def _verdict(runs: list[dict], entries: list, objectives: list[str]) -> dict[str, Any]:
    """HV per front and seed, and the conditioned rows' paired comparisons with the Linear sweep and the soup."""
    points: dict[str, dict[int, list]] = {}
    for run, (front, seed, _) in zip(runs, entries, strict=True):
        points.setdefault(front, {}).setdefault(seed, []).append(
            [run["final"].get(o, float("nan")) for o in objectives]
        )
    n_soup = len(parse_alphas(SOUP_ALPHAS, len(CORNERS)))
    expected = {"linear": len(CORNERS + INTERIOR), "ctwa": len(INTERIOR), "upgrad": len(INTERIOR), "soup": n_soup}
    expected.update(dict.fromkeys(ROWS, len(CORNERS + INTERIOR)))
    expected = {front: n for front, n in expected.items() if front in points}
    hv = seed_hypervolumes(points, expected, [float(x) for x in REFERENCE.split(",")])
    rows = compare(hv, [(row, other) for row in reversed(ROWS) for other in ("linear", "soup")])
    return {"expected": expected, "hv": hv, "comparisons": rows}


def run_lab_front(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.time()
    sweep = _prepare(args)
    results = run_sweep(sweep, args.jobs, say=_say)
    ok = {sweep.point_dir(p) for p in sweep.points if results[p.name]["rc"] == 0}
    seconds = _run_seconds(sweep)
    entries = [
        (p.label, p.seed, sweep.point_dir(p))
        for p in sweep.points
        if sweep.point_dir(p) in ok and p.label not in ROWS and (p.label != "linear" or "linear" in args.algorithms)
    ]
    if "soup" in args.algorithms:
        t_soup = time.time()
        entries += _soups(args, sweep, ok)
        seconds["soup"] = time.time() - t_soup
    if "conditioned" in args.algorithms:
        entries += _conditioned(args, sweep, ok, seconds)
    runs = [_tagged(front, seed, path, front == "soup" or front in ROWS) for front, seed, path in entries]
    result = write_report(runs, os.path.join(args.out, "report"), reference=REFERENCE)
    verdict = _verdict(runs, entries, result["objectives"])
    return _write(args, result, seconds, verdict, time.time() - t0)


def _write(args: argparse.Namespace, result: dict, seconds: dict, verdict: dict, total: float) -> dict[str, Any]:
    """``OUT/front.md`` (the fronts, the HV per seed, the paired comparisons) and ``OUT/front.json``."""
    stamp = time.strftime("%Y-%m-%d")
    setting = f"task {args.task}, {args.steps} steps, --eta {args.eta}, seeds {list(args.seeds)}, {args.jobs} jobs"
    head = f"`make lab-front` ({stamp}, {setting}): {total:.0f} s in all"
    parts = [head, front_table(result, seconds), hv_table(verdict["hv"], list(args.seeds), verdict["expected"])]
    if verdict["comparisons"]:
        parts.append(comparison_table(verdict["comparisons"]))
    text = "\n\n".join(parts) + "\n"
    with open(os.path.join(args.out, "front.md"), "w") as f:
        f.write(text)
    record = {
        "setting": {**vars(args), "seeds": list(args.seeds), "algorithms": list(args.algorithms)},
        "total_seconds": total,
        "seconds": seconds,
        "reference": [float(x) for x in REFERENCE.split(",")],
        "conditioned": _declared(args) if "conditioned" in args.algorithms else None,
        "points_per_seed": verdict["expected"],
        "hypervolume_per_seed": verdict["hv"],
        "comparisons": [
            {**r, "per_seed": {str(s): d for s, d in r["per_seed"].items()}} for r in verdict["comparisons"]
        ],
        "fronts": result["fronts"],
    }
    with open(os.path.join(args.out, "front.json"), "w") as f:
        json.dump(json_safe(record), f, indent=1)
    _say(head)
    sys.stdout.write(text)
    return {"result": result, "seconds": seconds, "total": total, **verdict}


def add_parser(subparsers: Any) -> CommandParser:
    """``python -m mo_align.sweep.labfront`` (``make lab-front``)."""
    p = subparsers.add_parser("labfront", description=__doc__.split("\n\n")[0], exits=True)
    p.add_argument("--task", default="tradeoff", help="the lab's task regime (default tradeoff)")
    p.add_argument("--steps", type=int, default=50, help="GRPO steps per run (default 50, as the lab)")
    p.add_argument("--seeds", type=int, nargs="+", default=DEFAULT_SEEDS, help="default 0 1 2 (paired over seeds)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), help=f"a subset of {list(ALGORITHMS)}")
    p.add_argument("--out", default=os.path.join("outputs", "lab-front"))
    p.add_argument("--cache", default=os.path.join("outputs", "lab-cache"), help="the lab's warm-start cache")
    p.add_argument("--sft-steps", type=int, default=None, help="warm-start steps (default: the task's)")
    p.add_argument("--eval-prompts", type=int, default=None, help="held-out prompts evaluated (default: all)")
    p.add_argument("--eta", choices=ETA_MODES, default=DEFAULT_ETA, help="adaptive step sizes, as the lab's --eta")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    run_module(add_parser, run_lab_front, argv, "python -m mo_align.sweep.labfront")


if __name__ == "__main__":
    main()
