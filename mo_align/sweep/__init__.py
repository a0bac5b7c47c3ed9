"""``mo-align sweep SWEEP.yaml [--print-commands] [--jobs N]``: a Pareto front's runs in one command.

The sweep file (:mod:`mo_align.sweep.spec`) names a base recipe and the axes; every point is an ordinary
``mo_align.train`` run with its own output_dir and ``mo_summary.json``. Locally the points run ``--jobs`` at a time
in separate processes (:mod:`mo_align.sweep.run`); re-running skips finished points and resumes killed ones from
their newest complete checkpoint. ``--print-commands`` runs nothing: it writes each unfinished point's recipe into one
folder, ``<output_dir>/recipes/<point>.yaml`` (no point directory), and prints one ``accelerate launch ... -m
mo_align.train --config <output_dir>/recipes/<point>.yaml`` line per point (the sweep's ``accelerate_config``, else
``cpu`` for a ``use_cpu: true`` recipe, else ``ddp``), for a cluster scheduler (``scripts/slurm_sweep.sbatch`` runs line ``$SLURM_ARRAY_TASK_ID`` of such a file).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from typing import Any

from mo_align.cli import CommandParser, run_module
from mo_align.launch import LaunchError
from mo_align.sweep.run import SweepLocked, accelerate_line, point_status, printed_recipe_path, run_sweep, write_recipe
from mo_align.sweep.spec import Point, Sweep, SweepError, load_sweep, simplex_grid


__all__ = ["Point", "Sweep", "SweepError", "add_parser", "load_sweep", "main", "run_command", "simplex_grid"]


def add_parser(subparsers: Any) -> CommandParser:
    p = subparsers.add_parser("sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("sweep_file", metavar="SWEEP.yaml")
    p.add_argument(
        "--print-commands",
        action="store_true",
        help="write each unfinished point's recipe under OUTPUT_DIR/recipes/ and print one `accelerate launch` line"
        " per point; run nothing",
    )
    p.add_argument("--jobs", type=int, default=2, help="points run in parallel (1 thread each when > 1; default 2)")
    p.add_argument("--accelerate-config", default=None, help="override the sweep file's accelerate_config")
    return p


def print_commands(sweep: Sweep, out: object | None = None) -> int:
    """One line per unfinished point (finished points are counted on stderr); returns the number of lines."""
    lines, finished = [], 0
    for point in sweep.points:
        if point_status(sweep.point_dir(point)) == "done":
            finished += 1
            continue
        recipe = write_recipe(sweep, point, printed_recipe_path(sweep, point))
        lines.append(accelerate_line(sweep, point, recipe, sweep.output_dir))
    out = out or sys.stdout  # looked up at call time (a redirected stdout)
    for line in lines:
        out.write(line + "\n")
    if finished:
        sys.stderr.write(f"mo-align sweep: {finished} finished point(s) left out\n")
    return len(lines)


def _say(message: str) -> None:
    sys.stdout.write(f"[sweep] {message}\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """``mo-align sweep``: 0 every point finished, 1 a point failed, 2 a usage or sweep-file error (one line)."""
    return run_module(add_parser, run_command, argv, "mo-align sweep")


def run_command(args: argparse.Namespace) -> int:
    """``mo-align sweep`` with parsed arguments (not ``run``: that name is the submodule :mod:`mo_align.sweep.run`)."""
    if args.jobs < 1:
        sys.stderr.write("mo-align: error: --jobs must be >= 1\n")
        return 2
    try:
        with contextlib.redirect_stdout(sys.stderr):  # libraries' banners never reach a commands file
            sweep = load_sweep(args.sweep_file)
        if args.accelerate_config:
            sweep.accelerate_config = args.accelerate_config
        if args.print_commands:
            print_commands(sweep)
            return 0
        result = run_sweep(sweep, args.jobs, say=_say)
    except (SweepError, SweepLocked, LaunchError, ImportError) as exc:
        sys.stderr.write(f"mo-align: error: {exc}\n")
        return 2
    failed = [name for name, r in result.items() if r["rc"] != 0]
    if failed:
        sys.stderr.write(f"mo-align: error: {len(failed)} point(s) failed: {', '.join(failed)}\n")
        return 1
    return 0
