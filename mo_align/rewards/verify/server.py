"""The server process (``python -m mo_align.rewards.verify``): imports math-verify once, forks the workers
(:class:`~mo_align.rewards.verify.workers.VerifyPool`) and answers its client's batches over stdin/stdout."""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
from typing import Any

from mo_align.cli import CommandParser, run_module
from mo_align.rewards.verify.checker import Checker
from mo_align.rewards.verify.protocol import ERROR, READY, SERVER_MODULE, read_message, write_message
from mo_align.rewards.verify.workers import SERVER_FDS, VerifyPool


__all__ = ["serve"]


def add_parser(subparsers: Any) -> CommandParser:
    """The server's command line (``python -m mo_align.rewards.verify --workers N --timeout T``)."""
    parser = subparsers.add_parser(
        "verify", description="math-verify server (started by mo_align's accuracy reward)", exits=True
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=0.5)
    parser.add_argument("--soft-timeout", type=float, default=None, help="default 0.8 * timeout; 0 disables")
    return parser


def serve(argv: list[str] | None = None) -> None:
    """Entry point of the server process (``python -m mo_align.rewards.verify --workers N --timeout T``)."""
    run_module(add_parser, run, argv, f"python -m {SERVER_MODULE}")


def run(args: argparse.Namespace) -> None:
    """The server's loop: answers batches until its client closes stdin or exits."""
    out = os.fdopen(os.dup(1), "wb")  # protocol channel; stray prints of libraries go to stderr instead
    SERVER_FDS.append(out.fileno())
    os.dup2(2, 1)
    in_fd = sys.stdin.fileno()
    parent = os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's; it closes our stdin
    Checker().warmup()  # import and warm math-verify/sympy here, once, so that forked workers start warm

    pool = VerifyPool(args.workers, args.timeout, args.soft_timeout)
    pool.warmup()
    write_message(out, (READY, os.getpid()))
    while True:
        readable, _, _ = select.select([in_fd], [], [], 1.0)
        if not readable:
            if os.getppid() != parent:
                return  # the trainer is gone
            continue
        try:
            msg = read_message(in_fd)
        except EOFError:
            return
        if msg is None:
            return
        try:
            results = pool.run(msg)
        except Exception as exc:  # e.g. workers that cannot start: answer, and try again on the next batch
            results = [(ERROR, f"{type(exc).__name__}: {exc}"[:200])] * len(msg)
        write_message(out, (results, dict(pool.stats)))
