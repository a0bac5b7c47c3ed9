"""Run a command that starts processes of its own (a launcher and its ranks) so that none of them outlives the call.

``subprocess.run(cmd, timeout=...)`` kills only the process it started: the ranks that ``torch.distributed.run`` or
``accelerate launch`` spawned go on running (or waiting on a collective) with PPID 1. :func:`run_group` starts the
command as the leader of a new session, hence of its own process group, which its children join. When the call ends
early — its timeout, Ctrl-C, any exception — the whole group is sent SIGTERM and, after a grace period, SIGKILL.
SIGTERM and SIGHUP sent to the calling process while it waits are passed on to the group (main thread only). After
the leader exits, members of its group still alive (a rank its launcher left behind) are stopped the same way.

A process that starts a session of its own (``start_new_session=True``) leaves the group and is not reached; such
helpers must end with their parent themselves (mo_align's verifier server does).
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Any


__all__ = ["GRACE_S", "die_with_parent", "group_alive", "kill_group", "run_group"]

GRACE_S = 5.0  # seconds between SIGTERM and SIGKILL


def group_alive(pgid: int) -> bool:
    """Whether process group ``pgid`` still has a member (zombies count until they are reaped)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal: it exists
        return True
    return True


def kill_group(pgid: int, grace_s: float = GRACE_S, leader: subprocess.Popen | None = None) -> None:
    """SIGTERM to every process of group ``pgid``, then SIGKILL to those left after ``grace_s`` seconds.

    ``leader`` (the group's leader, our child) is reaped while waiting, so that its zombie does not keep the group
    looking alive."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if leader is not None:
            leader.poll()
        if not group_alive(pgid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


class _Forward:
    """SIGTERM and SIGHUP of this process passed on to a process group while in the block (main thread only). One
    that arrives before :meth:`attach` names the group is passed on by it, so none is lost while the group starts."""

    SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.pgid: int | None = None
        self.pending: list[int] = []
        self.previous: dict[int, Any] = {}

    def _send(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signum)

    def _handler(self, signum: int, frame: Any) -> None:
        if self.pgid is None:
            self.pending.append(signum)
        else:
            self._send(signum)

    def attach(self, pgid: int) -> None:
        self.pgid = pgid
        for signum in self.pending[:1]:
            self._send(signum)

    def __enter__(self) -> _Forward:
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self._handler) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _reader(stream: Any, chunks: list) -> threading.Thread:
    thread = threading.Thread(target=lambda: chunks.append(stream.read()), daemon=True)
    thread.start()
    return thread


def _joined(proc: subprocess.Popen, out: list, err: list, readers: list, wait_s: float) -> tuple[Any, Any]:
    """The captured output; a pipe whose reader finished is closed, one that a process outside the group still holds
    is left to its reader thread (closing it under a blocked read would wait for that process)."""
    for thread, stream in readers:
        thread.join(wait_s)
        if not thread.is_alive():
            stream.close()
    text = isinstance(proc.stdout or proc.stderr, io.TextIOBase)
    joined = ["".join(c) if text else b"".join(c) for c in (out, err)]
    return (joined[0] if proc.stdout else None), (joined[1] if proc.stderr else None)


def run_group(
    cmd: Sequence[str],
    timeout: float | None = None,
    *,
    capture_output: bool = False,
    grace_s: float = GRACE_S,
    **popen_kwargs: Any,
) -> subprocess.CompletedProcess:
    """``subprocess.run`` for a command that starts processes: they all end when the call does.

    Arguments as ``subprocess.run`` (``cwd``, ``env``, ``text``, ``stdout``, ...; no ``input``). The call returns
    when the command itself exits, even if something it left behind still holds the output pipes. On timeout the
    whole group is stopped and ``subprocess.TimeoutExpired`` is raised with the output captured so far (``str`` with
    ``text=True``); on Ctrl-C or any other exception the group is stopped and the exception propagates."""
    if capture_output:
        popen_kwargs["stdout"] = popen_kwargs["stderr"] = subprocess.PIPE
    out: list = []
    err: list = []
    with _Forward() as forward:
        proc = subprocess.Popen(list(cmd), start_new_session=True, **popen_kwargs)
        pgid = proc.pid  # the leader of a new session: its process group id is its pid
        forward.attach(pgid)
        pipes = ((proc.stdout, out), (proc.stderr, err))
        readers = [(_reader(stream, chunks), stream) for stream, chunks in pipes if stream is not None]
        try:
            proc.wait(timeout)
        except BaseException as exc:  # the timeout, Ctrl-C, anything: nothing of the group may outlive the call
            kill_group(pgid, grace_s, leader=proc)
            proc.wait()
            if isinstance(exc, subprocess.TimeoutExpired):
                stdout, stderr = _joined(proc, out, err, readers, grace_s)
                raise subprocess.TimeoutExpired(proc.args, timeout, output=stdout, stderr=stderr) from None
            raise
        if group_alive(pgid):  # the leader exited and left processes behind
            kill_group(pgid, grace_s)
        stdout, stderr = _joined(proc, out, err, readers, grace_s)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """``preexec_fn`` for a child that must not outlive the thread that started it, even when that process is
    killed with SIGKILL (Linux ``PR_SET_PDEATHSIG``; a no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
