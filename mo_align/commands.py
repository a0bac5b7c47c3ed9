"""The commands that are no other module's: ``mo-align train``, ``report``, ``data`` and ``env``
(:data:`mo_align.cli.COMMANDS` names this module for them).

``mo-align train`` is the one command whose flags are another parser's: the recipe's fields, which
``python -m mo_align.train`` parses with TRL's ``TrlParser``; its sub-parser passes every argument on as typed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from mo_align.cli import ARGV, CommandParser, register
from mo_align.envinfo import environment, format_environment
from mo_align.launch import TYPED_COMMAND_ENV, LaunchError, accelerate_command, typed_command
from mo_align.process_group import run_group


REPORT_DESCRIPTION = """\
Compare finished training runs and write a report.

Reads each RUN_DIR's mo_summary.json (or, when a run has none, rebuilds it from transformers'
trainer_state.json in the run directory or its latest checkpoint-* subdirectory) and writes into --out:
report.md, a self-contained report.html (plots embedded), report.json, and the plots eval_curves.png,
weights.png, cov_ema.png and pareto_<a>__<b>.png for every pair of objectives.

The report gives per run the final / best / delta (final - start) eval mean of every objective, aggregates
the seeds of each algorithm (median and [min, max]), the hypervolume of the final points (every objective
maximised), the non-dominated runs, and cross-objective interference by one rule (an objective's Δ interval
below 0 while the fixed scalar's lies above 0: per run on its paired CIs, as in its mo_summary.json; per
algorithm on the intervals over seeds). It prints a compact per-algorithm table and the path of report.md.
"""


def add_report_parser(subparsers: Any) -> CommandParser:
    parser = subparsers.add_parser(
        "report", description=REPORT_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a training output_dir (one per run/seed)")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory to write the report into")
    parser.add_argument(
        "--reference",
        metavar="x,y,z",
        default=None,
        help="hypervolume reference point, one value per objective in the report's objective order (default: 0 "
        "for an objective whose finals all lie in [0, 1], else the worst start value across runs)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.02,
        help="runs that recorded no CIs: an objective more than this below its start while another improved is "
        "noted (no verdict; default 0.02)",
    )
    return parser


def run_report(args: argparse.Namespace) -> int:
    """``mo-align report``: 0 on success, 2 on a run that cannot be read (one line on stderr)."""
    # lazy: the report's plotting and statistics stack is imported only when a report is written
    from mo_align.lab.decompose import format_decomposition
    from mo_align.runs.report import ReportError, format_console_table, write_report
    from mo_align.runs.report.fronts import format_fronts
    from mo_align.runs.summary import load_runs

    try:
        runs = load_runs(args.run_dirs)
        result = write_report(runs, args.out, reference=args.reference, tolerance=args.tolerance)
    except ReportError as exc:
        message = " ".join(str(exc).split())  # one line of at most 300 characters with the prefix
        sys.stderr.write(f"mo-align: error: {message if len(message) <= 283 else message[:282] + '…'}\n")
        return 2
    sys.stdout.write(format_console_table(result) + "\n")
    if result.get("fronts"):  # a preference sweep among the runs (mo_align.runs.report.fronts)
        sys.stdout.write(format_fronts(result["fronts"]) + "\n")
    if result.get("style_decomposition"):  # runs with per-sample answer styles (mo_align.lab.decompose)
        sys.stdout.write("\n".join(format_decomposition(result["style_decomposition"])) + "\n")
    sys.stdout.write(f"report: {result['report_md']}\n")
    return 0


def add_train_parser(subparsers: Any) -> CommandParser:
    """``mo-align train``: no flags of its own; ``--help`` and every recipe flag go to ``mo_align.train``'s parser."""
    parser = subparsers.add_parser("train", add_help=False, description="Train with a recipe.")
    parser.set_defaults(**{ARGV: []})
    return parser


def run_train(args: argparse.Namespace) -> int:
    """``mo-align train``: in this process, or under ``accelerate launch`` with ``--accelerate_config``."""
    argv = getattr(args, ARGV)
    with tempfile.TemporaryDirectory(prefix="mo-align-launch-") as workdir:
        try:
            launch = accelerate_command(argv, Path(workdir))
        except (LaunchError, ImportError) as exc:
            sys.stderr.write(f"mo-align: error: {exc}\n")
            return 2
        if launch is None:
            from mo_align.train import cli  # lazy: torch, transformers and TRL only when training here

            cli(argv)
            return 0
        command, shown = launch
        sys.stderr.write("mo-align: " + " ".join(shlex.quote(c) for c in shown) + "\n")
        env = {**os.environ, TYPED_COMMAND_ENV: typed_command()}  # the summary records what the user typed
        try:  # the launcher and its ranks in their own process group: none outlives this process
            return run_group(command, env=env).returncode
        except KeyboardInterrupt:
            sys.stderr.write("mo-align: interrupted; the launcher and its ranks were stopped\n")
            return 130


def add_data_parser(subparsers: Any) -> CommandParser:
    from mo_align.data import math500  # lazy: datasets and pyarrow only for `mo-align data`

    parser = subparsers.add_parser("data", description="Prepare a dataset.")
    datasets = parser.add_subparsers(title="datasets", dest="dataset", metavar="DATASET", required=True)
    register(datasets, math500.add_parser, math500.run)
    return parser


def add_env_parser(subparsers: Any) -> CommandParser:
    return subparsers.add_parser("env", description="Print versions, devices and installed extras, for bug reports.")


def run_env(args: argparse.Namespace) -> int:
    sys.stdout.write(format_environment(environment()) + "\n")
    return 0
