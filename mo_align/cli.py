"""The ``mo-align`` console script: one argparse parser, one sub-parser per command.

A command is a module with ``add_parser(subparsers)`` (builds and returns its sub-parser) and ``run(args)`` (its exit
status; ``None`` = 0), listed in :data:`COMMANDS`. A ``python -m`` entry point builds the same sub-parser alone
(:func:`run_module`), so the flags and help of both forms are written once. ``mo-align --help`` lists the commands
from :data:`COMMANDS` without importing their modules (training and the lab import torch); ``mo-align COMMAND ...``
imports and builds that command's sub-parser only.

``mo-align train`` is the one command whose flags are another parser's: the recipe's fields, which
``python -m mo_align.train`` parses with TRL's ``TrlParser``; its sub-parser passes every argument on as typed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mo_align.envinfo import environment, format_environment
from mo_align.launch import TYPED_COMMAND_ENV, LaunchError, accelerate_command, typed_command
from mo_align.process_group import run_group


PROG = "mo-align"
DESCRIPTION = "mo_align's command line: train, compare, sweep and publish multi-objective GRPO runs."
EPILOG = """\
usage forms:
  mo-align train --config FILE [--key value ...]          (same as python -m mo_align.train)
  mo-align train --config FILE --accelerate_config NAME|FILE [--num_processes N] [--key value ...]
      the same under `accelerate launch` (as trl grpo --accelerate_config);
      NAME: cpu single_gpu ddp multi_gpu zero1 zero2 zero3 fsdp1 fsdp2
  mo-align report RUN_DIR [RUN_DIR ...] --out DIR [--reference x,y,z] [--tolerance 0.02]
  mo-align push RUN_DIR --repo-id ID [--private] [--token-env HF_TOKEN]
  mo-align sweep SWEEP.yaml [--print-commands] [--jobs N]
  mo-align soup RUN_A RUN_B [...] --alphas ... --out DIR
  mo-align evaluate-preferences RUN --preferences grid:N|LIST --out DIR
  mo-align lab [--quick] [...]                             (same as python -m mo_align.lab)
  mo-align data math500 --out DIR [...]                    (same as python -m mo_align.data.math500)
  mo-align env

`mo-align COMMAND --help` lists a command's options.
"""


@dataclass(frozen=True)
class Command:
    """Where a command is defined: ``module``'s ``add`` (builds its sub-parser) and ``run`` functions; ``help`` is
    its line in ``mo-align --help``."""

    module: str
    help: str
    add: str = "add_parser"
    run: str = "run"


COMMANDS: dict[str, Command] = {
    "train": Command(
        __name__,
        "train with a recipe (as python -m mo_align.train), in this process or under accelerate",
        "add_train_parser",
        "run_train",
    ),
    "report": Command(
        __name__,
        "compare finished runs: per-objective tables, seeds by algorithm, hypervolume, Pareto plots, interference",
        "add_report_parser",
        "run_report",
    ),
    "push": Command(
        "mo_align.hub.push", "upload a finished run (model or LoRA adapter, tokenizer) with its model card"
    ),
    "sweep": Command(
        "mo_align.sweep", "every point of a preference / algorithm / seed grid as an ordinary run", run="run_command"
    ),
    "soup": Command("mo_align.soup", "weight-interpolation front (rewarded soups) of finished runs"),
    "evaluate-preferences": Command(
        "mo_align.preferences.evaluate",
        "a preference-conditioned model's front: evaluated at each preference stated in the prompt, CIs, hypervolume",
        run="main",
    ),
    "lab": Command("mo_align.lab.run", "the interference lab on CPU (as python -m mo_align.lab)"),
    "data": Command(
        __name__, "prepare a dataset: data math500 writes the paper's MATH-500 split", "add_data_parser", ""
    ),
    "env": Command(__name__, "versions, devices and installed extras, for bug reports", "add_env_parser", "run_env"),
}
_COMMAND = "_command"  # namespace key of the parsed command: (its sub-parser, its run function)
ARGV = "argv"  # a sub-parser that sets this default takes the arguments it does not know, as typed (train)


class UsageError(Exception):
    """A mistake in a command's arguments found after parsing: its parser reports it as argparse does (the usage and
    ``PROG: error: MESSAGE``; ``usage=False``: the error line alone), exit status 2."""

    def __init__(self, message: str, usage: bool = True):
        super().__init__(message)
        self.usage = usage


class CommandExit(SystemExit):
    """``--help`` or a usage error of a sub-parser built with ``exits=True``: it leaves :func:`main` and
    :func:`run_module` as ``SystemExit``, where the other commands return the status."""


class CommandParser(argparse.ArgumentParser):
    """A command's sub-parser. ``exits``: its ``--help`` and usage errors raise ``SystemExit`` (the lab and data
    commands, whose runs stop that way too) rather than return the status; ``error_filter`` rewrites its error
    messages (push: a token typed by mistake is never echoed)."""

    def __init__(self, *args: Any, exits: bool = False, error_filter: Callable[[str], str] | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self.exits = exits
        self.error_filter = error_filter

    def error(self, message: str):
        super().error(message if self.error_filter is None else self.error_filter(message))

    def exit(self, status: int = 0, message: str | None = None):
        try:
            super().exit(status, message)
        except SystemExit as exc:
            if self.exits:
                raise CommandExit(exc.code) from None
            raise


AddParser = Callable[[Any], CommandParser]


def register(subparsers: Any, add_parser: AddParser, run: Callable[[argparse.Namespace], Any] | None) -> CommandParser:
    """``add_parser``'s sub-parser, which dispatches to ``run`` when parsed."""
    parser = add_parser(subparsers)
    if run is not None:
        parser.set_defaults(**{_COMMAND: (parser, run)})
    return parser


def _load(name: str) -> tuple[AddParser, Callable | None]:
    command = COMMANDS[name]
    module = importlib.import_module(command.module)  # only the named command's module: start-up time
    return getattr(module, command.add), getattr(module, command.run) if command.run else None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``mo-align`` parser: every command listed with its line; ``command``'s sub-parser built by its module."""
    root = argparse.ArgumentParser(
        prog=PROG, description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    subparsers = root.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", parser_class=CommandParser, required=True
    )
    for name, entry in COMMANDS.items():
        if name == command:
            register(subparsers, *_load(name))
        else:  # listed only: a command's sub-parser is built when it is named
            subparsers.add_parser(name, help=entry.help, add_help=False)
    return root


def exit_status(exc: SystemExit) -> int:
    return exc.code if isinstance(exc.code, int) else 2


def call(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], Any], args: argparse.Namespace) -> Any:
    """``run(args)``; a :class:`UsageError` is reported by ``parser`` (exit status 2)."""
    try:
        return run(args)
    except UsageError as exc:
        if exc.usage:
            parser.error(str(exc))
        parser.exit(2, f"{parser.prog}: error: {exc}\n")


def build(add_parser: AddParser, prog: str) -> CommandParser:
    """The sub-parser that ``add_parser`` builds, alone and named ``prog`` (a ``python -m`` entry point)."""
    holder = argparse.ArgumentParser(prog=prog, add_help=False)
    parser = add_parser(holder.add_subparsers(parser_class=CommandParser))
    parser.prog = prog
    return parser


def run_module(add_parser: AddParser, run: Callable[[argparse.Namespace], Any], argv: Sequence[str] | None, prog: str):
    """A ``python -m`` entry point and a module's ``main(argv)``: parse ``argv`` (default ``sys.argv[1:]``) with the
    command's sub-parser named ``prog`` and run it; ``--help`` or a usage error returns argparse's status (raises
    it, for a parser with ``exits``)."""
    parser = build(add_parser, prog)
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except CommandExit:
        raise
    except SystemExit as exc:
        return exit_status(exc)
    return call(parser, run, args)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    root = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
    if not argv or argv[0] == "help":
        root.print_help()
        return 0
    try:
        args, extras = root.parse_known_args(argv)
        parser, run = vars(args).pop(_COMMAND)
        if extras and not hasattr(args, ARGV):
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        if extras:
            setattr(args, ARGV, extras)
    except CommandExit:
        raise
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed)
        return exit_status(exc)
    status = call(parser, run, args)
    return status if isinstance(status, int) else 0


# ---- the commands defined here --------------------------------------------------------------------------------------
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


if __name__ == "__main__":
    sys.exit(main())
