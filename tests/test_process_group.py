"""``run_group``: a launcher that times out, is interrupted or exits early takes every process it started with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from mo_align.process_group import run_group


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _pids(path: Path, n: int, seconds: float = 30.0) -> list[int]:
    """The ``n`` pids a launcher wrote to ``path`` (one a line), waiting for them."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        lines = path.read_text().split() if path.exists() else []
        if len(lines) >= n:
            return [int(x) for x in lines[:n]]
        time.sleep(0.02)
    raise AssertionError(f"the launcher wrote no {n} pids to {path}")


def _launcher(pids: Path, *, child_ignores_term: bool = False, leader_waits: bool = True) -> list[str]:
    """A shell 'launcher' that starts a sleeping child (a 'rank'), writes the child's pid then its own, and waits."""
    trap = "trap '' TERM; " if child_ignores_term else ""  # an ignored signal stays ignored across exec
    wait = "; exec sleep 600" if leader_waits else ""
    return ["sh", "-c", f"({trap}exec sleep 600) & echo $! > {pids}; echo $$ >> {pids}{wait}"]


def _kill(pids: list[int]) -> None:
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_plain_run_timeout_orphans_the_child(tmp_path):
    """The fault: subprocess.run(timeout=...) kills the launcher only; its child lives on with another parent."""
    pids = tmp_path / "pids"
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run(_launcher(pids), timeout=1.0)
    child, leader = _pids(pids, 2)
    try:
        assert not _alive(leader)
        assert _alive(child) and psutil.Process(child).ppid() != leader
    finally:
        _kill([child])


@pytest.mark.parametrize("ignores_term", [False, True], ids=["child-ends-on-term", "child-ignores-term"])
def test_timeout_stops_the_launcher_and_its_child(tmp_path, ignores_term):
    pids = tmp_path / "pids"
    with pytest.raises(subprocess.TimeoutExpired) as exc:
        run_group(_launcher(pids, child_ignores_term=ignores_term), 1.0, grace_s=0.5, capture_output=True, text=True)
    child, leader = _pids(pids, 2)
    try:
        assert not _alive(leader) and not _alive(child), (leader, child)
        assert exc.value.timeout == 1.0 and exc.value.stdout == "" and exc.value.stderr == ""
    finally:
        _kill([child, leader])


def test_a_child_left_behind_is_stopped_and_does_not_hold_the_call(tmp_path):
    """The launcher exits 0 at once; its child keeps the output pipe open. The call returns the launcher's status
    (it does not wait for the child's EOF) and the child is stopped."""
    pids = tmp_path / "pids"
    proc = run_group(_launcher(pids, leader_waits=False), 60, grace_s=0.5, capture_output=True)
    child, leader = _pids(pids, 2)
    try:
        assert proc.returncode == 0 and proc.stdout == b"" and proc.stderr == b""
        assert not _alive(child) and not _alive(leader)
    finally:
        _kill([child, leader])


def test_output_and_status_as_subprocess_run(tmp_path):
    proc = run_group(
        [sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"],
        60,
        capture_output=True,
        text=True,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "out\n", "err\n")


_CALLER = """
import sys
from mo_align.process_group import run_group
print(run_group(sys.argv[1:], None, grace_s=0.5).returncode, flush=True)
"""


def test_sigterm_to_the_caller_reaches_the_whole_group(tmp_path):
    """`kill <mo-align>`: the caller passes SIGTERM on to the launcher's group, which ends; the caller reports it."""
    pids = tmp_path / "pids"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    caller = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_CALLER), *_launcher(pids)], env=env, stdout=subprocess.PIPE, text=True
    )
    child, leader = _pids(pids, 2)
    try:
        caller.send_signal(signal.SIGTERM)
        out, _ = caller.communicate(timeout=60)
        assert caller.returncode == 0 and out.strip() == str(-signal.SIGTERM), (caller.returncode, out)
        assert not _alive(child) and not _alive(leader)
    finally:
        _kill([child, leader, caller.pid])
