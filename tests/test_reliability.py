"""Reliability under faults and bad input (issue 13): nothing hangs, nothing trains silently on garbage, no
checkpoint or dataset is silently wrong. Each test reproduces one failure found by the fault probe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil  # a requirement of accelerate
import pytest

from tests.test_cli import no_model  # noqa: F401  (fixture)


# ---- 1. verifier workers die with their server ------------------------------------------------------------------
def _alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _alive(pids)


def test_killed_verify_server_leaves_no_process():
    """kill -9 of the math-verify server (OOM killer, from outside): its workers must not survive it."""
    from mo_align.rewards.verify_pool import VerifyClient

    client = VerifyClient(num_workers=2, timeout=0.5)
    client.warmup()
    server = psutil.Process(client._proc.pid)
    workers = [p.pid for p in server.children()]
    assert len(workers) == 2
    try:
        os.kill(server.pid, signal.SIGKILL)
        left = _wait_gone(workers, 5.0)
        assert left == [], f"{len(left)} verifier workers outlived their server"
        # and the client recovers: the next batch starts a fresh server
        assert client.run([("\\frac{1}{2}", "0.5")]) == [("ok", True)]
    finally:
        for pid in _alive(workers):
            os.kill(pid, signal.SIGKILL)
        client.close()


_PIPE_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import psutil
    from mo_align.rewards.verify_pool import VerifyClient
    client = VerifyClient(num_workers=2, timeout=0.5)
    client.warmup()
    server = psutil.Process(client._proc.pid)
    print(" ".join(str(p.pid) for p in server.children()), flush=True)
    if sys.argv[1] == "outside":
        os.kill(server.pid, signal.SIGKILL)   # killed from outside, the trainer then exits
    else:
        client._kill()                        # the client's own kill at a missed batch deadline
    os._exit(0)
    """
)


@pytest.mark.parametrize("how", ["outside", "client"])
def test_trainer_pipe_closes_when_the_server_is_killed(how):
    """`python -m mo_align.train ... | tee log` must return: no verifier process may keep the trainer's stdout or
    stderr open after the trainer exits (before the fix the orphaned workers held them forever)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _PIPE_CHILD, how], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    workers: list[int] = []
    try:
        out, _ = proc.communicate(timeout=60)  # EOF on both pipes = nobody holds them
        workers = [int(x) for x in out.split()]
        assert proc.returncode == 0 and len(workers) == 2
        assert _wait_gone(workers, 5.0) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in _alive(workers):
            os.kill(pid, signal.SIGKILL)


# ---- 4. clarity is linear in the completion length ---------------------------------------------------------------
def test_nonempty_box_equals_the_reference_pattern():
    """The linear scan gives the reference regex's verdict (the oracle) on 20k random strings over the characters
    that matter."""
    import random

    from mo_align.rewards.clarity import NONEMPTY_BOX, has_nonempty_box

    rng = random.Random(0)
    pieces = ["\\boxed{", "\\boxed", "{", "}", " ", "\n", "x", "1", "\\", "b"]
    for _ in range(20_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert has_nonempty_box(text) == (NONEMPTY_BOX.search(text) is not None), repr(text)


@pytest.mark.parametrize("unit", ["\\boxed{ x", "\\boxed{ x\n1. ", "(step ", " then"])
def test_clarity_on_1mb_is_bounded(unit):
    """1 MB of an unclosed ``\\boxed{ x`` took 89 s (quadratic). The bound here is generous (a loaded 2-core CI);
    ``bench/reliability.py`` measures the real time (about 0.03 s)."""
    from mo_align.rewards.clarity import clarity_score

    text = (unit * ((1 << 20) // len(unit) + 1))[: (1 << 20) - 1] + "}"  # a closed box: the step patterns run too
    start = time.perf_counter()
    clarity_score(text), clarity_score(text, strict=True)
    assert time.perf_counter() - start < 5.0


# ---- 2. non-finite values never train silently -------------------------------------------------------------------
NAN, INF = float("nan"), float("inf")
BAD_HYPERPARAMETERS = [  # the probe's accepted values, each now an error naming the field
    ("ctwa", {"cov_targets": NAN}, "ctwa: cov_targets must be finite"),
    ("ctwa", {"lambda_lr": NAN}, "ctwa: lambda_lr must be finite"),
    ("ctwa", {"lambda_lr": INF}, "ctwa: lambda_lr must be finite"),
    ("ctwa", {"lambda_lr": 1e6}, "ctwa: lambda_lr must be finite and >= 0 and <= 10, got 1000000.0"),
    ("ctwa", {"max_weight_ratio": NAN}, "ctwa: max_weight_ratio must be finite"),
    ("gradnorm", {"lr": INF}, "gradnorm: lr must be finite"),
    ("dynamic", {"regularization": NAN}, "dynamic: regularization must be finite and > 0"),
    ("linear", {"weights": [1e308, 1.0, 1.0]}, "linear: weights must be finite, non-negative and <= 1e+06"),
    ("ctwa", {"base": "tchebycheff", "base_kwargs": {"ideal": [NAN] * 3}}, "tchebycheff: ideal must be finite"),
    ("mgda", {"tol": 0.0}, "mgda: tol must be finite and > 0"),
]


@pytest.mark.parametrize(
    ("name", "kwargs", "message"), BAD_HYPERPARAMETERS, ids=[str(c[1])[:30] for c in BAD_HYPERPARAMETERS]
)
def test_non_finite_or_out_of_range_hyperparameters_are_refused(name, kwargs, message):
    from mo_align.weightings import get_weighting

    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace("+", r"\+")) as exc:
        get_weighting(name, 3, **kwargs)
    assert "\n" not in str(exc.value)


def test_every_registered_default_is_inside_its_declared_range():
    """The RANGES table and the constructors agree: each default passes, each declared key exists."""
    import inspect

    from mo_align.weightings import WEIGHTINGS
    from mo_align.weightings.base import RANGES, check_number

    for name, cls in WEIGHTINGS.items():
        params = inspect.signature(cls.__init__).parameters
        for key, spec in RANGES.get(name, {}).items():
            assert key in params, (name, key)
            check_number(params[key].default, f"{name}: {key}", spec)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"weighting": "ctwa", "weighting_kwargs": {"lambda_lr": NAN}}, "ctwa: lambda_lr must be finite"),
        ({"learning_rate": NAN}, "learning_rate must be a finite number, got nan"),
        ({"beta": INF}, "beta must be a finite number, got inf"),
    ],
)
@pytest.mark.usefixtures("no_model")
def test_cli_refuses_non_finite_numbers_before_the_model_loads(tmp_path, tiny_model_dir, capsys, override, message):
    from mo_align import train as train_mod
    from tests.test_cli import tiny_recipe

    recipe = tiny_recipe(tmp_path, tiny_model_dir, **override)  # yaml writes .nan / .inf
    with pytest.raises(SystemExit) as exc:
        train_mod.cli(["--config", recipe])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].startswith("mo-align: error: "), err
