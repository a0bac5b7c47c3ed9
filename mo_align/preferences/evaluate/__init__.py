"""``mo-align evaluate-preferences RUN --preferences grid:N|LIST --out DIR``: a conditioned model's front.

One trained preference-conditioned run is evaluated at every preference of a list or a simplex grid: the eval split
of the run's recipe (``RUN/mo_recipe.yaml``, or ``--config``) with every prompt stated at that preference with the
template, placement and objectives recorded in the run's ``mo_summary.json``. Each point is measured by the
trainer's own evaluation (:mod:`mo_align.trainer.evaluation`: per-objective means with bootstrap CIs over prompts,
:mod:`mo_align.stats`) on the run's final model (:func:`mo_align.soup.soup_model` of the run alone: full weights
or a LoRA adapter merged), stateful rewards taking the state of the run's newest complete checkpoint, as
``mo-align soup`` does.

Writes ``DIR/pref-w<w_1>_..._<w_K>/mo_summary.json`` per point (algorithm ``<run algorithm>-conditioned``,
``weighting_hyperparameters`` = the run, the preference, the template), which ``mo-align report`` draws as one
more front beside sweeps and soups, and ``DIR/preference_front.json``: every point's preference, means and CIs,
the non-dominated points and the hypervolume above the reference point (``--reference``, else the report's default,
:func:`mo_align.runs.report.analysis.default_reference`; :func:`mo_align.runs.report.pareto.hypervolume`). A
point whose summary already holds the same run and preference is not evaluated again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mo_align.cli import run_module
from mo_align.preferences.front import front_record, parse_preferences, point_name
from mo_align.preferences.spec import parse_block
from mo_align.recipe import RECIPE_FILE
from mo_align.runs.jsonfile import SummaryError
from mo_align.runs.report.analysis import ReportError
from mo_align.runs.summary import SUMMARY_FILE, load_run, write_summary


if TYPE_CHECKING:
    from mo_align.trainer import MOGRPOTrainer


DESCRIPTION = __doc__.split("\n\n")[0]
FRONT_FILE = "preference_front.json"
RECORD_KEYS = ("sampler", "alpha", "preferences", "points_per_axis", "template", "placement", "seed")


class PreferenceEvalError(ValueError):
    """A run, recipe or preference list that cannot be evaluated (one line)."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``evaluate-preferences`` on an ``argparse`` sub-parser set (``main`` is its ``func``)."""
    p = subparsers.add_parser("evaluate-preferences", help=DESCRIPTION, description=__doc__.split("\n\n")[1])
    p.add_argument("run", metavar="RUN", help="a finished preference-conditioned run (its output_dir)")
    p.add_argument(
        "--preferences",
        required=True,
        help="grid:N (the simplex grid with N steps per edge, as mo-align soup) or vectors 'a,b,c;d,e,f'",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="where the points' summaries and the front go")
    p.add_argument("--config", default=None, help="the recipe to evaluate with (default: RUN/mo_recipe.yaml)")
    p.add_argument("--reference", default=None, metavar="x,y,z", help="hypervolume reference point")
    p.set_defaults(func=main)
    return p


def _run_record(run: str) -> dict[str, Any]:
    try:
        summary = load_run(os.path.join(run, SUMMARY_FILE))
    except SummaryError as exc:
        raise PreferenceEvalError(str(exc)) from None
    if not summary.get("preference_conditioning"):
        raise PreferenceEvalError(
            f"{run}: not a preference-conditioned run (its {SUMMARY_FILE} has no preference_conditioning)"
        )
    return summary


def build_trainer(run: str, recipe: str, record: dict[str, Any]) -> MOGRPOTrainer:
    """An ``MOGRPOTrainer`` on the run's final model, with the recipe's objectives and eval split and the run's
    preference conditioning (template and placement from its summary)."""
    # lazy: the training stack (transformers, TRL, torch) is imported when a point is evaluated, not by the CLI
    from mo_align.soup import soup_model
    from mo_align.soup.evaluate import recipe_trainer
    from mo_align.train import parse_args
    from mo_align.weightings import weighting_class

    parsed = parse_args(["--config", recipe])
    args = parsed[1]
    block = {k: record[k] for k in RECORD_KEYS if record.get(k) is not None}
    args.preference_conditioning = parse_block(block, weighting_class(args.weighting), args.seed)
    args.mo_eval_loss = False  # the per-objective decode only
    try:
        trainer = recipe_trainer(soup_model([run], [1.0]), parsed, recipe, run, "the front")
    except ValueError as exc:
        raise PreferenceEvalError(str(exc)) from None
    if list(trainer.mo.objective_names) != list(record.get("objectives") or []):
        raise PreferenceEvalError(
            f"{recipe}: objectives {list(trainer.mo.objective_names)} differ from the run's {record.get('objectives')}"
        )
    return trainer


def _fresh_record(trainer: MOGRPOTrainer, out_dir: str, name: str) -> None:
    """The trainer's evaluation record emptied, so each point's summary holds its one evaluation."""
    from mo_align.trainer.mostate import new_history  # lazy: with the trainer (torch, TRL), once one is built

    mo = trainer.mo
    mo.history, mo.eval_start, mo.eval_starts, mo.eval_samples, mo.monitor = new_history(), None, {}, [], None
    trainer._mo_eval_cache = {}  # MOGRPOTrainer.evaluate's cache, keyed by step: every point is at step 0
    trainer.args.output_dir, trainer.args.run_name = out_dir, name


def _done(point_dir: str, run: str, preference: list[float]) -> dict[str, Any] | None:
    path = os.path.join(point_dir, SUMMARY_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        summary = json.load(f)
    hp = summary.get("weighting_hyperparameters") or {}
    return summary if hp.get("run") == os.path.abspath(run) and hp.get("preference") == preference else None


def evaluate_point(
    trainer: MOGRPOTrainer, run_summary: dict[str, Any], preference: list[float], out: str
) -> dict[str, Any]:
    """Evaluate at ``preference`` and write the point's ``mo_summary.json``; returns the summary."""
    from transformers import set_seed  # lazy: the training stack, as in build_trainer

    name = point_name(preference)
    point_dir = os.path.join(out, name)
    _fresh_record(trainer, point_dir, f"{run_summary['run_name']}-{name}")
    trainer.mo.conditioning.eval_preference = list(preference)
    set_seed(trainer.args.seed)
    trainer.evaluate()
    summary = trainer.summary()
    record = run_summary["preference_conditioning"]
    summary["algorithm"] = f"{run_summary['algorithm']}-conditioned"
    summary["weighting_hyperparameters"] = {
        "run": os.path.abspath(run_summary["output_dir"]),
        "preference": list(preference),
        "template": record.get("template"),
        "placement": record.get("placement"),
    }
    summary["weights"], summary["cov_ema"], summary["train_reward"] = [], [], []
    write_summary(summary, point_dir)
    return summary


def evaluate_preferences(run: str, preferences: list[list[float]], out: str, recipe: str, say=print) -> list[dict]:
    """Every point's summary (evaluated, or read back when already there), in the order of ``preferences``."""
    from mo_align.soup.evaluate import reward_state  # lazy: torch, when a point is evaluated

    run_summary = _run_record(run)
    run_summary["output_dir"] = run
    summaries, trainer = [], None
    for w in preferences:
        summary = _done(os.path.join(out, point_name(w)), run, w)
        if summary is None:
            if trainer is None:
                trainer = build_trainer(run, recipe, run_summary["preference_conditioning"])
                states, _ = reward_state(run)
                for fname, fn in zip(trainer.reward_func_names, trainer.reward_funcs, strict=True):
                    if fname in states and hasattr(fn, "load_state_dict") and hasattr(fn, "state_dict"):
                        fn.load_state_dict(states[fname])
            summary = evaluate_point(trainer, run_summary, w, out)
        summaries.append(summary)
        say(f"{point_name(w)}: " + ", ".join(f"{k} {v:.3f}" for k, v in summary["final"].items() if v is not None))
    return summaries


def main(args: argparse.Namespace) -> int:
    """Run the parsed command: 0, or 2 with one line on stderr."""
    try:
        run_summary = _run_record(args.run)
        objectives = list(run_summary["preference_conditioning"].get("objectives") or run_summary["objectives"])
        preferences = parse_preferences(args.preferences, len(objectives))
        recipe = args.config or os.path.join(args.run, RECIPE_FILE)
        if not os.path.isfile(recipe):
            raise PreferenceEvalError(
                f"{recipe}: no such recipe; pass --config RECIPE (the run's objectives, eval split)"
            )
        os.makedirs(args.out, exist_ok=True)
        summaries = evaluate_preferences(args.run, preferences, args.out, recipe, say=_say)
        front = front_record(args.run, run_summary, summaries, objectives, args.reference, args.out)
    except (PreferenceEvalError, ReportError, SummaryError, ValueError, OSError) as exc:
        message = " ".join(str(exc).split())
        sys.stderr.write(f"mo-align: error: {message if len(message) <= 283 else message[:282] + '…'}\n")
        return 2
    path = os.path.join(args.out, FRONT_FILE)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(front, f, indent=1)
    os.replace(path + ".tmp", path)
    counts = f"{len(front['points'])} points, {len(front['front'])} non-dominated"
    _say(f"{counts}, HV {front['hypervolume']:.4f} (reference {front['reference']}): {path}")
    return 0


def _say(message: str) -> None:
    sys.stdout.write(f"[evaluate-preferences] {message}\n")
    sys.stdout.flush()


def cli(argv: Sequence[str] | None = None) -> int:
    """``mo-align evaluate-preferences ...`` from its arguments (``--help`` 0, a usage error 2)."""
    return run_module(add_parser, main, argv, "mo-align evaluate-preferences")
