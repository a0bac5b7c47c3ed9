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
