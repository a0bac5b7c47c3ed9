"""One command line: every ``mo-align`` command is a sub-parser of one parser (``mo_align.cli``), built by its module's
``add_parser``; each ``python -m`` form builds the same sub-parser, so both list the same options and reject a bad
flag the same way (argparse's error line, exit status 2)."""

import pathlib
import re
import subprocess
import sys

import pytest

from mo_align import cli


ROOT = pathlib.Path(__file__).resolve().parents[1]
OPTION = re.compile(r"(?<![\w-])--?[A-Za-z][\w-]*")

# (mo-align arguments, the python -m module of the same command)
BOTH_FORMS = [
    (["train"], "mo_align.train"),
    (["push"], "mo_align.hub"),
    (["lab"], "mo_align.lab"),
    (["data", "math500"], "mo_align.data.math500"),
]
# every command with arguments that parse, then one unknown flag
BAD_FLAG = {
    "report": ["report", "RUN", "--out", "DIR"],
    "push": ["push", "RUN", "--repo-id", "a/b"],
    "sweep": ["sweep", "SWEEP.yaml"],
    "soup": ["soup", "RUN_A", "RUN_B", "--alphas", "0.5", "--out", "DIR"],
    "lab": ["lab"],
    "data": ["data", "math500", "--out", "DIR"],
    "env": ["env"],
}


def _status(argv: list[str]) -> int:
    """``cli.main``'s status, returned or raised (the lab and data commands exit as argparse does)."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return exc.code


def _options(help_text: str) -> set[str]:
    """The flags a help text lists (its ``options:`` section on: the usage line names the program)."""
    return set(OPTION.findall(help_text[help_text.index("options:") :]))


def test_help_lists_every_command_with_one_line(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert list(cli.COMMANDS) == [
        "train",
        "report",
        "push",
        "sweep",
        "soup",
        "evaluate-preferences",
        "lab",
        "data",
        "env",
    ]
    listing = " ".join(out[out.index("commands:") : out.index("usage forms:")].split())
    for name, command in cli.COMMANDS.items():
        assert f"{name} {' '.join(command.help.split())}" in listing
        assert "\n" not in command.help and len(command.help) <= 110


@pytest.mark.parametrize(("argv", "module"), BOTH_FORMS, ids=[m for _, m in BOTH_FORMS])
def test_help_of_both_forms_lists_the_same_options(argv, module, capsys):
    assert _status([*argv, "--help"]) == 0
    console = capsys.readouterr().out
    proc = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(_options(console)) >= 5
    assert _options(console) == _options(proc.stdout)


@pytest.mark.parametrize("command", sorted(BAD_FLAG))
def test_a_bad_flag_is_argparse_one_line_error_and_status_2(command, capsys):
    assert _status([*BAD_FLAG[command], "--no-such-flag"]) == 2
    out, err = capsys.readouterr()
    prog = " ".join(["mo-align", *BAD_FLAG[command][: 2 if command == "data" else 1]])
    errors = [line for line in err.splitlines() if "error:" in line]
    assert errors == [f"{prog}: error: unrecognized arguments: --no-such-flag"], err
    assert err.startswith(f"usage: {prog} ") and out == ""


def test_a_bad_flag_of_the_python_m_form_is_the_same_line(capsys):
    from mo_align.data import math500
    from mo_align.lab import run

    for main, prog, argv in ((run.main, "python -m mo_align.lab", []), (math500.main, None, ["--out", "DIR"])):
        prog = prog or "python -m mo_align.data.math500"
        with pytest.raises(SystemExit) as exc:
            main([*argv, "--no-such-flag"])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.splitlines()[-1] == f"{prog}: error: unrecognized arguments: --no-such-flag"


def test_train_passes_its_arguments_on_as_typed(monkeypatch):
    """``mo-align train`` parses nothing itself: the recipe's flags, in order, reach ``mo_align.train``'s parser."""
    import mo_align.train

    seen = []
    monkeypatch.setattr(mo_align.train, "cli", seen.append)
    argv = ["--config", "r.yaml", "--learning_rate", "-1e-3", "--x=3", "--help", "--", "--y"]
    assert cli.main(["train", *argv]) == 0
    assert seen == [argv]


def test_one_parser_module():
    """Every argparse parser of the package is built in ``mo_align/cli.py``: the commands' modules add sub-parsers."""
    built = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "mo_align").rglob("*.py")
        if "ArgumentParser(" in path.read_text().replace("class CommandParser(argparse.ArgumentParser)", "")
    }
    assert built == {"mo_align/cli.py"}


def test_the_lab_worker_command_line(monkeypatch):
    """``python -m mo_align.lab worker ...`` (how :mod:`mo_align.lab.jobs` starts a run) reaches ``train_one``."""
    import torch

    from mo_align.lab import run

    seen = []
    monkeypatch.setattr(run, "train_one", lambda *a, **k: seen.append((a, k)))
    threads = str(torch.get_num_threads())
    argv = ["--algo", "ctwa", "--sft", "S", "--out", "O", "--seed", "3", "--reference-length", "41.5"]
    run.main(["worker", *argv, "--steps", "7", "--eval-steps", "5", "--threads", threads, "--eta", "matched"])
    assert seen == [(("ctwa", 3, "S", 41.5, "O", 7, 5, "matched"), {"save_model": False})]


def test_the_labs_save_models_flag_reaches_the_worker(monkeypatch):
    """``--save-models`` sets ``save_model`` in every job; the job's command line (:func:`jobs.worker_command`) parsed
    by the worker's own parser hands ``save_model=True`` to ``train_one``, and ``False`` when the job's is false."""
    from mo_align.lab import jobs, run

    seen = []
    monkeypatch.setattr(run, "train_one", lambda *a, **k: seen.append((a, k)))
    job = {"algo": "linear", "seed": 1, "sft": "S", "reference_length": 20.5, "out": "O", "steps": 4}
    job.update(eval_steps=2, threads=1, eta="paper")
    for flag in (True, False):
        cmd = jobs.worker_command({**job, "save_model": flag})
        assert cmd[1:4] == ["-m", "mo_align.lab", "worker"] and ("--save-model" in cmd) is flag
        run.main(cmd[3:])
    positional = ("linear", 1, "S", 20.5, "O", 4, 2, "paper")
    assert seen == [(positional, {"save_model": True}), (positional, {"save_model": False})]
    with pytest.raises(SystemExit) as err:
        run.main(["--sweep", "--save-models"])
    assert err.value.code == 2
