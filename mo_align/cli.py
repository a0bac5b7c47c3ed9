"""The ``mo-align`` console script.

``mo-align train --config recipes/<model>/<algo>.yaml [overrides]`` trains;
``mo-align report RUN_DIR [RUN_DIR ...] --out DIR`` compares finished runs (``mo_align.runs.report``);
``mo-align push RUN_DIR --repo-id ID`` uploads a finished run with its model card (``mo_align.hub``);
``mo-align lab``, ``mo-align data math500`` and ``mo-align env`` run the lab, prepare MATH-500, print the environment.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path


USAGE = """usage: mo-align <command> [args]

commands:
  train --config FILE [--key value ...]   train with a recipe (same as python -m mo_align.train)
  train --config FILE --accelerate_config NAME|FILE [--num_processes N] [--key value ...]
                                          the same under `accelerate launch` (as trl grpo --accelerate_config);
                                          NAME: cpu single_gpu ddp multi_gpu zero1 zero2 zero3 fsdp1 fsdp2
  report RUN_DIR [RUN_DIR ...] --out DIR [--reference x,y,z] [--tolerance 0.02]
                                          compare finished runs: per-objective tables, seeds aggregated by
                                          algorithm, hypervolume, Pareto plots, interference
                                          (writes report.md / report.html / PNGs; see mo-align report --help)
  push RUN_DIR --repo-id ID [--private] [--token-env HF_TOKEN]
                                          upload a finished run (model or LoRA adapter, tokenizer) with a model
                                          card written by mo_align (see mo-align push --help)
  sweep SWEEP.yaml [--print-commands] [--jobs N]
                                          every point of a preference / algorithm / seed grid as an ordinary run
                                          (re-running skips finished points, resumes killed ones; --help)
  soup RUN_A RUN_B [...] --alphas ... --out DIR
                                          weight-interpolation front (rewarded soups): evaluate Σ α_i θ_i (--help)
  evaluate-preferences RUN --preferences grid:N|LIST --out DIR
                                          a preference-conditioned model's front: evaluate it at each preference
                                          stated in the prompt, CIs and hypervolume (--help)
  lab [--quick] [...]                     the interference lab (same as python -m mo_align.lab; --help)
  data math500 --out DIR [...]            write the paper's MATH-500 split (python -m mo_align.data.math500)
  env                                     versions, devices and installed extras, for bug reports
"""

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


def _report_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mo-align report", description=REPORT_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
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


def report(argv: Sequence[str]) -> int:
    """``mo-align report``: 0 on success, 2 on a usage error or a run that cannot be read (one line on stderr)."""
    try:
        args = _report_parser().parse_args(list(argv))
    except SystemExit as exc:  # --help (0) or an argparse usage error (2, message already on stderr)
        return exc.code if isinstance(exc.code, int) else 2

    from mo_align.runs.report import ReportError, format_console_table, write_report
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
        from mo_align.runs.report.fronts import format_fronts

        sys.stdout.write(format_fronts(result["fronts"]) + "\n")
    if result.get("style_decomposition"):  # runs with per-sample answer styles (mo_align.lab.decompose)
        from mo_align.lab.decompose import format_decomposition

        sys.stdout.write("\n".join(format_decomposition(result["style_decomposition"])) + "\n")
    sys.stdout.write(f"report: {result['report_md']}\n")
    return 0


def train(argv: Sequence[str]) -> int:
    """``mo-align train``: in this process, or under ``accelerate launch`` with ``--accelerate_config``."""
    import shlex
    import tempfile

    from mo_align.launch import TYPED_COMMAND_ENV, LaunchError, accelerate_command, typed_command

    with tempfile.TemporaryDirectory(prefix="mo-align-launch-") as workdir:
        try:
            launch = accelerate_command(argv, Path(workdir))
        except (LaunchError, ImportError) as exc:
            sys.stderr.write(f"mo-align: error: {exc}\n")
            return 2
        if launch is None:
            from mo_align.train import cli

            cli(argv)
            return 0
        command, shown = launch
        sys.stderr.write("mo-align: " + " ".join(shlex.quote(c) for c in shown) + "\n")
        env = {**os.environ, TYPED_COMMAND_ENV: typed_command()}  # the summary records what the user typed
        from mo_align.process_group import run_group

        try:  # the launcher and its ranks in their own process group: none outlives this process
            return run_group(command, env=env).returncode
        except KeyboardInterrupt:
            sys.stderr.write("mo-align: interrupted; the launcher and its ranks were stopped\n")
            return 130


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "train":
        return train(rest)
    if command == "lab":
        from mo_align.lab.run import main as lab

        lab(rest)
        return 0
    if command == "data":
        if rest[:1] != ["math500"]:
            sys.stderr.write("mo-align: error: usage: mo-align data math500 --out DIR [...]\n")
            return 2
        from mo_align.data.math500 import main as math500

        return math500(rest[1:])
    if command == "env":
        from mo_align.envinfo import environment, format_environment

        sys.stdout.write(format_environment(environment()) + "\n")
        return 0
    if command == "report":
        return report(rest)
    if command in ("sweep", "soup"):
        from importlib import import_module

        return import_module(f"mo_align.{command}").main(rest)
    if command == "evaluate-preferences":  # mo_align.preferences.evaluate: add_parser(subparsers) and main(args)
        from mo_align.preferences.evaluate import cli as evaluate_preferences

        return evaluate_preferences(rest)
    if command == "push":
        from mo_align.hub import main as push

        return push(rest)
    sys.stderr.write(f"mo-align: unknown command {command!r}\n{USAGE}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
