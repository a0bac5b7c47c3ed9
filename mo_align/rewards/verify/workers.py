"""The workers and their scheduler, inside the server process: :class:`VerifyPool` forks ``num_workers`` workers
from the preloaded server, hands each one task at a time, and kills and replaces a worker that misses its hard
per-task deadline (the task's outcome is then ``"hard-timeout"``)."""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import wait
from typing import Any

from mo_align.rewards.verify.checker import Checker, timed
from mo_align.rewards.verify.protocol import ERROR, HARD_TIMEOUT, READY, SOFT_TIMEOUT, PoolUnavailable


__all__ = ["SERVER_FDS", "VerifyPool"]

SERVER_FDS: list[int] = []  # the server's protocol fds (filled by the server), closed by forked workers


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux ``PR_SET_PDEATHSIG``; elsewhere a no-op,
    the worker's parent poll remains). A worker is forked by the server's only thread, so the parent thread and the
    parent process end together."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1


def _worker_main(conn: Any, soft_timeout: float | None, inherited: tuple[int, ...] = ()) -> None:
    """Worker loop: receive ``(task_id, gold, pred)``, answer ``(task_id, outcome, value)``; exit on ``None``/EOF,
    and when the server is gone (parent-death signal, or the parent poll where that signal does not exist)."""
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:  # the server died before the signal was armed
        os._exit(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Forked from the server: hold no other end of any pipe open (the client's protocol channel, this worker's own
    # server end, the other workers' ends), so a dead server means EOF here and a closed pipe at the client.
    for fd in (*SERVER_FDS, *inherited):
        with contextlib.suppress(OSError):
            os.close(fd)
    try:
        checker = Checker()
        checker.warmup()
    except Exception as exc:
        conn.send((None, ERROR, f"{type(exc).__name__}: {exc}"))
        return
    conn.send((None, READY, os.getpid()))
    while True:
        try:
            if not conn.poll(1.0):
                if os.getppid() != parent:
                    return  # the server is gone
                continue
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        task_id, gold, pred = msg
        outcome, value = timed(checker, gold, pred, soft_timeout)
        try:
            conn.send((task_id, outcome, value))
        except OSError:
            return


class _Worker:
    def __init__(self, ctx: Any, soft_timeout: float | None, siblings: Sequence[_Worker] = ()) -> None:
        self.conn, child_conn = ctx.Pipe(duplex=True)
        inherited = tuple(c.fileno() for c in [self.conn, *(w.conn for w in siblings)] if not c.closed)
        self.proc = ctx.Process(target=_worker_main, args=(child_conn, soft_timeout, inherited), daemon=True)
        self.proc.start()
        child_conn.close()
        self.ready = False
        self.task: tuple[int, float] | None = None  # (task index, hard deadline)

    def kill(self) -> None:
        for step in (self.proc.kill, lambda: self.proc.join(timeout=1.0), self.conn.close):
            with contextlib.suppress(Exception):
                step()


class VerifyPool:
    """``num_workers`` forked math-verify workers with a hard per-task ``timeout``. Used inside the server.

    ``soft_timeout`` (default ``0.8 * timeout``) is the in-worker SIGALRM limit. The ``fork`` start method is
    only safe in a single-threaded process without CUDA, which the server is; do not build one in a trainer.
    """

    def __init__(self, num_workers: int, timeout: float, soft_timeout: float | None = None) -> None:
        self.num_workers = max(1, int(num_workers))
        self.timeout = float(timeout)
        self.soft_timeout = 0.8 * self.timeout if soft_timeout is None else soft_timeout
        self.stats = {"tasks": 0, HARD_TIMEOUT: 0, SOFT_TIMEOUT: 0, ERROR: 0, "restarts": 0}
        self._ctx = mp.get_context("fork")
        self._workers: list[_Worker] = []
        self._failed_starts = 0

    def _fill(self) -> None:
        while len(self._workers) < self.num_workers:
            self._workers.append(_Worker(self._ctx, self.soft_timeout, self._workers))

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        if worker in self._workers:
            self._workers.remove(worker)
        self.stats["restarts"] += 1
        self._fill()

    def _receive(self, worker: _Worker, results: list) -> None:
        try:
            task_id, outcome, value = worker.conn.recv()
        except (EOFError, OSError):  # the worker died (crash, OOM kill, ...)
            if worker.task is not None:
                results[worker.task[0]] = (ERROR, "worker died")
                self.stats[ERROR] += 1
            if not worker.ready:
                self._failed_starts += 1
                if self._failed_starts > 8:
                    raise PoolUnavailable("math-verify workers die at start-up") from None
            self._replace(worker)
            return
        if outcome == READY:
            worker.ready = True
            return
        if task_id is None:
            raise PoolUnavailable(f"math-verify worker failed to start: {value}")
        worker.task = None
        results[task_id] = (outcome, value)
        if outcome in self.stats:
            self.stats[outcome] += 1

    def warmup(self, timeout: float = 60.0) -> None:
        self._fill()
        deadline = time.monotonic() + timeout
        while not all(w.ready for w in self._workers):
            left = deadline - time.monotonic()
            if left <= 0:
                raise PoolUnavailable("math-verify workers did not start")
            starting = {w.conn: w for w in self._workers if not w.ready}
            for conn in wait(list(starting), timeout=left):
                self._receive(starting[conn], [])

    def run(self, tasks: list[tuple[str, str]]) -> list[tuple[str, Any]]:
        """``(outcome, value)`` per ``(gold, pred)``; tasks run in parallel, each bounded by ``timeout``."""
        results: list[Any] = [None] * len(tasks)
        self.stats["tasks"] += len(tasks)
        queue = deque(range(len(tasks)))
        self._fill()
        while queue or any(w.task is not None for w in self._workers):
            now = time.monotonic()
            for w in list(self._workers):
                if queue and w.ready and w.task is None:
                    i = queue.popleft()
                    try:
                        w.conn.send((i, *tasks[i]))
                    except OSError:
                        queue.appendleft(i)
                        self._replace(w)
                        continue
                    w.task = (i, now + self.timeout)
            busy = [w for w in self._workers if w.task is not None]
            left = max(0.0, min(w.task[1] for w in busy) - now) if busy else 60.0
            watched = {w.conn: w for w in self._workers if w.task is not None or not w.ready}
            if not busy and not watched:
                raise PoolUnavailable("no math-verify worker")
            ready = wait(list(watched), timeout=left)
            if not busy and not ready:
                raise PoolUnavailable("math-verify workers did not start")
            for conn in ready:
                if watched[conn] in self._workers:
                    self._receive(watched[conn], results)
            now = time.monotonic()
            for w in list(self._workers):
                if w.task is not None and now >= w.task[1]:
                    results[w.task[0]] = (HARD_TIMEOUT, None)
                    self.stats[HARD_TIMEOUT] += 1
                    self._replace(w)
        return results
