"""The ``mo-align`` console script: one argparse parser, one sub-parser per command.

A command is a module with ``add_parser(subparsers)`` (builds and returns its sub-parser) and ``run(args)`` (its exit
status; ``None`` = 0), listed in :data:`COMMANDS`. A ``python -m`` entry point builds the same sub-parser alone
(:func:`run_module`), so the flags and help of both forms are written once. ``mo-align --help`` lists the commands
from :data:`COMMANDS` without importing their modules (training and the lab import torch); ``mo-align COMMAND ...``
imports and builds that command's sub-parser only.

The commands that are no other module's (``train``, ``report``, ``data``, ``env``) are defined in
:mod:`mo_align.commands`. This module imports no other module of the package: every command module imports its
parser classes from here, and the commands are imported by name (:data:`COMMANDS`), only when named.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


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


BUILT_IN = "mo_align.commands"  # the commands defined by the console script itself
COMMANDS: dict[str, Command] = {
    "train": Command(
        BUILT_IN,
        "train with a recipe (as python -m mo_align.train), in this process or under accelerate",
        "add_train_parser",
        "run_train",
    ),
    "report": Command(
        BUILT_IN,
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
        BUILT_IN, "prepare a dataset: data math500 writes the paper's MATH-500 split", "add_data_parser", ""
    ),
    "env": Command(BUILT_IN, "versions, devices and installed extras, for bug reports", "add_env_parser", "run_env"),
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


if __name__ == "__main__":
    sys.exit(main())
