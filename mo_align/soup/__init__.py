"""``mo-align soup RUN_A RUN_B [RUN_C ...] --alphas ... --out DIR``: a weight-interpolation front (rewarded soups).

For every mixing vector α (``--alphas 0,0.25,0.5,0.75,1`` = α_A for two runs, α_B = 1 − α_A; ``grid:N`` = every
point of the simplex grid with N steps, :func:`mo_align.sweep.simplex_grid`), builds θ(α) = Σ_i α_i θ_i
(:mod:`~mo_align.soup.interpolate`: what is computed for full weights and for LoRA), evaluates it with the runs'
training evaluation (:mod:`~mo_align.soup.evaluate`) and writes ``DIR/soup-a<α_1>_..._<α_n>/mo_summary.json``
(algorithm ``soup``), which ``mo-align report`` reads as one more front, and ``DIR/soup.json``. A soup point whose
summary already holds the same runs, α and LoRA mode is not evaluated again.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

from mo_align.cli import CommandParser, run_module
from mo_align.runs.files import SWEEP_RECIPE_FILE
from mo_align.runs.summary import SUMMARY_FILE
from mo_align.simplex import simplex_grid
from mo_align.soup.interpolate import LORA_MODES, SoupError, check_runs, mix, soup_model


__all__ = ["SoupError", "add_parser", "check_runs", "main", "mix", "parse_alphas", "run", "soup_model"]


def parse_alphas(text: str, n_runs: int) -> list[list[float]]:
    """``a,b,c`` (two runs: α_A; α_B = 1 − α_A) or ``grid:N`` (the simplex grid over the runs)."""
    text = text.strip()
    if text.startswith("grid:"):
        steps = text[len("grid:") :]
        if not steps.isdigit() or not 1 <= int(steps) <= 100:
            raise SoupError(f"--alphas {text!r}: grid:N with an integer N in [1, 100]")
        return simplex_grid(n_runs, int(steps))
    if n_runs != 2:
        raise SoupError(f"--alphas {text!r}: a list of α_A values mixes two runs; for {n_runs} runs use grid:N")
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SoupError(
            f"--alphas {text!r}: comma-separated numbers in [0, 1] (α of the first run), or grid:N"
        ) from None
    if not values or any(not (math.isfinite(v) and 0 <= v <= 1) for v in values):
        raise SoupError(f"--alphas {text!r}: every α must lie in [0, 1] (interpolation, not extrapolation)")
    return [[v, round(1.0 - v, 10)] for v in dict.fromkeys(values)]


def soup_name(alphas: Sequence[float]) -> str:
    return "soup-a" + "_".join(format(a, "g") for a in alphas)


def add_parser(subparsers: Any) -> CommandParser:
    p = subparsers.add_parser("soup", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN", help="finished runs of one base model (output_dirs)")
    p.add_argument("--alphas", required=True, help="α of the first run for two runs (0,0.5,1), or grid:N")
    p.add_argument("--out", required=True, metavar="DIR", help="where the soup points' summaries go")
    p.add_argument("--config", default=None, help="the recipe to evaluate with (default: RUN_A/sweep_recipe.yaml)")
    p.add_argument(
        "--lora",
        choices=LORA_MODES,
        default="merged",
        help="LoRA runs: interpolate the merged weights (linear in them; default) or the adapter matrices",
    )
    return p


def _done(out_dir: str, runs: Sequence[str], alphas: Sequence[float], lora: str) -> dict | None:
    path = os.path.join(out_dir, SUMMARY_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        summary = json.load(f)
    hp = summary.get("weighting_hyperparameters") or {}
    same = hp.get("runs") == [os.path.abspath(r) for r in runs] and hp.get("alphas") == list(alphas)
    return summary if same and hp.get("lora") == lora else None


def run_soup(runs: Sequence[str], alphas: list[list[float]], out: str, recipe: str, lora: str, say=print) -> list:
    # lazy: the evaluation (TRL's trainer, mo_align.train) loads once the runs and alphas were checked
    from mo_align.soup.evaluate import evaluate_soup

    rows = []
    for alpha in alphas:
        name = soup_name(alpha)
        point_dir = os.path.join(out, name)
        summary = _done(point_dir, runs, alpha, lora)
        if summary is None:
            summary = evaluate_soup(soup_model(runs, alpha, lora), recipe, runs, alpha, point_dir, name, lora)
        rows.append({"name": name, "alphas": alpha, "final": summary["final"], "dir": point_dir})
        say(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in summary["final"].items()))
    with open(os.path.join(out, "soup.json"), "w") as f:
        json.dump({"runs": [os.path.abspath(r) for r in runs], "lora": lora, "points": rows}, f, indent=1)
    return rows


def _say(message: str) -> None:
    sys.stdout.write(f"[soup] {message}\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """``mo-align soup``: 0 done, 2 a usage error or a run that cannot be mixed (one line on stderr)."""
    return run_module(add_parser, run, argv, "mo-align soup")


def run(args: argparse.Namespace) -> int:
    try:
        alphas = parse_alphas(args.alphas, len(args.runs))
        check_runs(args.runs, args.lora)
        recipe = args.config or os.path.join(args.runs[0], SWEEP_RECIPE_FILE)
        if not os.path.isfile(recipe):
            raise SoupError(
                f"{recipe}: no such recipe; pass --config RECIPE (the runs' recipe: objectives, eval split)"
            )
        os.makedirs(args.out, exist_ok=True)
        run_soup(args.runs, alphas, args.out, recipe, args.lora, say=_say)
    except (SoupError, ValueError, OSError) as exc:
        message = " ".join(str(exc).split())  # one line, at most 300 characters with the prefix
        sys.stderr.write(f"mo-align: error: {message if len(message) <= 283 else message[:282] + '…'}\n")
        return 2
    return 0
