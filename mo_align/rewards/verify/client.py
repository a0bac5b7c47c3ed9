"""The client, in the trainer process: :class:`VerifyClient` starts the server with fork+exec, sends it batches,
enforces a batch deadline and restarts a dead or stalled server; :func:`get_pool` keeps one per process and setting."""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from mo_align.rewards.verify.protocol import (
    HARD_TIMEOUT,
    READY,
    SERVER_MODULE,
    PoolUnavailable,
    read_message,
    write_message,
)


__all__ = ["VerifyClient", "get_pool"]

logger = logging.getLogger(__name__)


class VerifyClient:
    """Runs math-verify checks in a server process with ``num_workers`` workers and a hard per-task ``timeout``.

    Args:
        num_workers: worker processes (default ``min(2, cpu_count)``).
        timeout: hard limit (seconds) per check, counted from the moment a worker holds it.
        soft_timeout: the in-worker SIGALRM limit (default ``0.8 * timeout``; ``0`` disables it, for tests).
        startup_timeout: how long to wait for the server (imports math-verify and sympy: about 1.5 s).
    """

    def __init__(
        self,
        num_workers: int | None = None,
        timeout: float = 0.5,
        soft_timeout: float | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.num_workers = max(1, int(num_workers or min(2, os.cpu_count() or 1)))
        self.timeout = float(timeout)
        self.soft_timeout = soft_timeout
        self.startup_timeout = float(startup_timeout)
        self.stats: dict[str, int] = {"server_restarts": 0}
        self._failures = 0  # consecutive server failures; 3 in a row and the client gives up (in-process fallback)
        self._server_stats: dict[str, int] = {}
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._broken: str | None = None

    # -- lifecycle --
    def _start(self) -> None:
        package_root = str(Path(os.path.abspath(__file__)).parents[3])  # the directory holding mo_align/
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        env.setdefault("OMP_NUM_THREADS", "1")
        cmd = [sys.executable, "-m", SERVER_MODULE]
        cmd += ["--workers", str(self.num_workers), "--timeout", repr(self.timeout)]
        if self.soft_timeout is not None:
            cmd += ["--soft-timeout", repr(float(self.soft_timeout))]
        try:
            # its own process group: the server and every worker it forks are stopped together (_kill)
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True, start_new_session=True
            )
        except OSError as exc:
            self._broken = f"cannot start the math-verify server: {exc}"
            raise PoolUnavailable(self._broken) from exc
        try:
            msg = self._receive(time.monotonic() + self.startup_timeout)
        except (EOFError, TimeoutError, OSError, pickle.UnpicklingError) as exc:
            self._kill()
            self._broken = f"the math-verify server did not start: {type(exc).__name__} {exc}"
            raise PoolUnavailable(self._broken) from exc
        if not (isinstance(msg, tuple) and msg[0] == READY):
            self._kill()
            self._broken = f"unexpected greeting from the math-verify server: {msg!r}"
            raise PoolUnavailable(self._broken)

    def _receive(self, deadline: float) -> Any:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError("math-verify server timed out")
        return read_message(fd)

    def _kill(self) -> None:
        """SIGKILL the server's whole process group (server and workers). The server is our child and not yet
        reaped, so its pid, which is the group id, cannot have been reused."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        kill_group = lambda: os.killpg(proc.pid, signal.SIGKILL)  # noqa: E731
        for step in (kill_group, proc.kill, lambda: proc.wait(timeout=2.0), proc.stdin.close, proc.stdout.close):
            with contextlib.suppress(Exception):
                step()

    def _check_owner(self) -> None:
        if os.getpid() != self._pid:
            raise RuntimeError("VerifyClient used in a forked child; use get_pool()")
        if self._broken is not None:
            raise PoolUnavailable(self._broken)

    def warmup(self) -> None:
        """Start the server and its workers now instead of at the first check."""
        with self._lock:
            self._check_owner()
            if self._proc is None:
                self._start()

    def close(self) -> None:
        """Stop the server (only from the process that started it)."""
        with self._lock:
            if os.getpid() != self._pid or self._proc is None:
                self._proc = None
                return
            proc = self._proc
            try:
                write_message(proc.stdin, None)
                proc.wait(timeout=1.0)
            except Exception:
                pass
            self._kill()

    @property
    def server_stats(self) -> dict[str, int]:
        """Counters of the current server: tasks, soft/hard timeouts, errors, worker restarts."""
        return dict(self._server_stats)

    # -- the batch call --
    def run(self, tasks: list[tuple[str, str]]) -> list[tuple[str, Any]]:
        """``(outcome, value)`` per ``(gold, pred)``: ``("ok", bool)``, ``("soft-timeout" | "hard-timeout" |
        "error", detail)``. Raises :class:`PoolUnavailable` only if the server cannot be started at all."""
        if not tasks:
            return []
        with self._lock:
            self._check_owner()
            if self._proc is None or self._proc.poll() is not None:
                if self._proc is not None:
                    self._kill()
                    self.stats["server_restarts"] += 1
                self._start()
            rounds = math.ceil(len(tasks) / self.num_workers)
            deadline = time.monotonic() + 5.0 + 2.0 * self.timeout * (rounds + 1)
            try:
                assert self._proc is not None
                write_message(self._proc.stdin, list(tasks))
                results, self._server_stats = self._receive(deadline)
            except (EOFError, TimeoutError, OSError, pickle.UnpicklingError, ValueError) as exc:
                logger.warning("math-verify server failed (%s); restarting it on the next call", exc)
                self._kill()
                self.stats["server_restarts"] += 1
                self._failures += 1
                if self._failures >= 3:
                    self._broken = f"the math-verify server failed {self._failures} times in a row ({exc})"
                return [(HARD_TIMEOUT, None)] * len(tasks)
            self._failures = 0
            return results


_CLIENTS: dict[tuple, VerifyClient] = {}
_CLIENTS_LOCK = threading.Lock()


def get_pool(num_workers: int | None = None, timeout: float = 0.5) -> VerifyClient:
    """The process-wide client for these settings (a new one in a forked child; the parent's is left alone)."""
    pid = os.getpid()
    key = (pid, num_workers, float(timeout))
    with _CLIENTS_LOCK:
        for k in [k for k in _CLIENTS if k[0] != pid]:
            del _CLIENTS[k]  # inherited through fork: not ours to use or to stop
        client = _CLIENTS.get(key)
        if client is None:
            client = _CLIENTS[key] = VerifyClient(num_workers=num_workers, timeout=timeout)
        return client


@atexit.register
def _close_clients() -> None:
    for client in list(_CLIENTS.values()):
        with contextlib.suppress(Exception):
            client.close()
