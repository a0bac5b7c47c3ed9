"""math-verify behind a hard time limit, in worker processes that are killed when they hang.

Why processes: math-verify 0.9.0 bounds its own time with ``signal.alarm``, which raises in any thread but the main
one (TRL runs async reward functions on a background thread) and cannot interrupt C code at all: sympy turns
``2^{2^{30}}`` into a big-integer power that no signal stops. So every check runs in a worker process with the
library's timeouts disabled (``parsing_timeout=None``, ``timeout_seconds=None``) and two limits of our own:

* a **soft** limit inside the worker (``SIGALRM`` in the worker's own main thread, raised as a ``BaseException`` so
  the library's ``except Exception`` blocks do not swallow it) ends slow pure-Python work and keeps the worker;
* a **hard** limit: a worker that has not answered ``timeout`` seconds after it got the task is killed
  (``SIGKILL``) and replaced; the task's outcome is ``"hard-timeout"`` (the reward turns that into 0.0).

Layout (three levels, so the trainer process never forks and never imports sympy):

* the **client** (:class:`VerifyClient`, in the trainer) starts one **server** with
  ``subprocess.Popen([python, "-m", "mo_align.rewards._mv_server", ...])``: fork+exec, safe in a process with
  threads or CUDA, and no re-import of the trainer's ``__main__`` as ``multiprocessing`` spawn/forkserver would do;
* the **server** imports math-verify once and ``fork``s ``num_workers`` **workers** (:class:`VerifyPool`): forking
  the single-threaded, preloaded server is safe and takes milliseconds, so a killed worker is replaced at once;
* the server schedules a batch over its workers and enforces the per-task limits; the client only adds a generous
  batch deadline in case the server itself dies or stalls (then it is killed and restarted on the next call).

Client properties: **lazy** (nothing starts before the first check that needs math-verify; :meth:`warmup` starts
it early), **reusable** (one per process and setting, :func:`get_pool`; stopped at exit), **fork-safe** (a client
remembers its creator's pid; in a forked child :func:`get_pool` starts a fresh server and never writes to, or
kills, the parent's), **thread-safe** (a lock serialises :meth:`VerifyClient.run`), and **picklable users**: a
reward holds only settings and asks :func:`get_pool` when it runs. The server exits when its client closes the pipe
or its parent process goes away. **Nothing outlives its server**: the server leads its own process group, which the
client kills as a whole; each worker holds no pipe end but its own, gets ``SIGKILL`` from the kernel when the server
dies (``PR_SET_PDEATHSIG``, Linux) and polls its parent once a second elsewhere. So a server killed from outside (OOM
killer, ``kill -9``) or by the client at a missed deadline leaves no process holding the trainer's stdout/stderr
(``... | tee log`` returns). If no server can be started, :class:`PoolUnavailable` is raised and the caller
falls back to :func:`check_in_process` (soft limit only).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import math
import multiprocessing as mp
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from multiprocessing.connection import wait
from typing import Any, BinaryIO


logger = logging.getLogger(__name__)

OK, SOFT_TIMEOUT, HARD_TIMEOUT, ERROR = "ok", "soft-timeout", "hard-timeout", "error"
_READY = "ready"


class PoolUnavailable(RuntimeError):
    """No verification server/worker could be started (the caller falls back to in-process checks)."""


class _SoftTimeout(BaseException):
    """Raised by the worker's SIGALRM handler. A ``BaseException`` so library ``except Exception`` blocks pass it."""


# ---- the check itself (runs in a worker, or in-process as a fallback) --------------------------------------------
def _quiet_math_verify() -> None:
    # With timeouts disabled math-verify warns on every call, about exactly what we do on purpose.
    for name in ("math_verify", "math_verify.parser", "math_verify.grader", "math_verify.utils"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


# Exercised once when a worker starts: sympy imports and builds much of its machinery lazily, so the first interval,
# matrix or set a fresh process meets costs 0.1-0.5 s; afterwards they take milliseconds.
_WARMUP_PAIRS = (
    ("\\frac{1}{2}", "0.5"),
    ("3", "x = 3"),
    ("10", "10\\%"),
    ("(-\\infty, 3]", "\\left[ \\frac{\\pi^2}{8}, \\frac{5 \\pi^2}{4} \\right]"),
    ("(1, 2)", "(2, \\infty)"),
    ("\\{1,2\\}", "1, 2"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 1/3 \\\\ 2 \\end{pmatrix}"),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}"),
    ("x^2+2x+1", "(x+1)^2"),
    ("6 - 5i", "8"),
    ("\\text{(C)}", "C"),
    ("x \\in [-2,7]", "-2 \\le x \\le 7"),
    ("30^\\circ", "\\frac{\\pi}{6}"),
    ("2\\pi", "\\cot x"),
)


class _Checker:
    """``verify(parse(gold), parse(pred))`` with both parses cached (LRU) across calls.

    Both sides are already extracted answers, parsed as ``\\boxed{answer}`` with LaTeX extraction only (first
    match): the same verdicts as math-verify's default configuration on MATH-500 answers, about 40% faster.
    """

    def __init__(self, cache_size: int = 4096) -> None:
        import math_verify  # 1+ s; only in processes that check answers

        _quiet_math_verify()
        self._mv = math_verify
        self._config = [math_verify.LatexExtractionConfig()]
        self._parsed: OrderedDict[str, Any] = OrderedDict()
        self._cache_size = cache_size

    def warmup(self) -> None:
        for gold, pred in _WARMUP_PAIRS:
            with contextlib.suppress(Exception):
                self(gold, pred)
        self._parsed.clear()

    def _parse(self, answer: str) -> Any:
        hit = self._parsed.get(answer)
        if hit is not None:
            self._parsed.move_to_end(answer)
            return hit
        parsed = self._mv.parse(
            "\\boxed{" + answer + "}",
            extraction_config=self._config,
            extraction_mode="first_match",
            parsing_timeout=None,
        )
        self._parsed[answer] = parsed
        if len(self._parsed) > self._cache_size:
            self._parsed.popitem(last=False)
        return parsed

    def __call__(self, gold: str, pred: str) -> bool:
        g = self._parse(gold)
        p = self._parse(pred)
        if not g or not p:
            return False
        return bool(self._mv.verify(g, p, timeout_seconds=None))


def _alarm_handler(signum: int, frame: Any) -> None:
    raise _SoftTimeout()


def _timed(checker: _Checker, gold: str, pred: str, soft_timeout: float | None) -> tuple[str, Any]:
    """Run one check under a SIGALRM soft limit (main thread only); never raises."""
    use_alarm = bool(soft_timeout) and threading.current_thread() is threading.main_thread()
    previous: Any = None
    try:
        if use_alarm:
            previous = signal.signal(signal.SIGALRM, _alarm_handler)
            signal.setitimer(signal.ITIMER_REAL, soft_timeout)
        try:
            return OK, checker(gold, pred)
        finally:
            if use_alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
    except _SoftTimeout:
        return SOFT_TIMEOUT, None
    except RecursionError:
        return ERROR, "RecursionError"
    except Exception as exc:
        return ERROR, f"{type(exc).__name__}: {exc}"[:200]
    finally:
        if use_alarm and previous is not None:
            signal.signal(signal.SIGALRM, previous)


_IN_PROCESS: _Checker | None = None


def check_in_process(gold: str, pred: str, soft_timeout: float | None) -> tuple[str, Any]:
    """Fallback without worker processes: the soft limit only, and only on the main thread. Never raises."""
    global _IN_PROCESS
    try:
        if _IN_PROCESS is None:
            checker = _Checker()
            checker.warmup()  # lazy imports and parser set-up outside the timed check (a cold first check timed out)
            _IN_PROCESS = checker
    except Exception as exc:
        return ERROR, f"{type(exc).__name__}: {exc}"[:200]
    return _timed(_IN_PROCESS, gold, pred, soft_timeout)


# ---- workers and their scheduler (inside the server process) -----------------------------------------------------
def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux ``PR_SET_PDEATHSIG``; elsewhere a no-op,
    the worker's parent poll remains). A worker is forked by the server's only thread, so the parent thread and the
    parent process end together."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

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
    for fd in (*_SERVER_FDS, *inherited):
        with contextlib.suppress(OSError):
            os.close(fd)
    try:
        checker = _Checker()
        checker.warmup()
    except Exception as exc:
        conn.send((None, ERROR, f"{type(exc).__name__}: {exc}"))
        return
    conn.send((None, _READY, os.getpid()))
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
        outcome, value = _timed(checker, gold, pred, soft_timeout)
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
        if outcome == _READY:
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


# ---- framing over the server's pipes ------------------------------------------------------------------------------
_HEADER = struct.Struct("!I")


def _write(stream: BinaryIO, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_exact(fd: int, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, n - got)
        if not chunk:
            raise EOFError("pipe closed")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _read(fd: int) -> Any:
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size))
    return pickle.loads(_read_exact(fd, size))


# ---- the server (``python -m mo_align.rewards._mv_server``) ------------------------------------------------------
_SERVER_FDS: list[int] = []  # the server's protocol fds, closed by forked workers


def serve(argv: list[str] | None = None) -> None:
    """Entry point of the server process (``python -m mo_align.rewards._mv_server --workers N --timeout T``)."""
    parser = argparse.ArgumentParser(description="math-verify server (started by mo_align's accuracy reward)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=0.5)
    parser.add_argument("--soft-timeout", type=float, default=None, help="default 0.8 * timeout; 0 disables")
    args = parser.parse_args(argv)
    out = os.fdopen(os.dup(1), "wb")  # protocol channel; stray prints of libraries go to stderr instead
    _SERVER_FDS.append(out.fileno())
    os.dup2(2, 1)
    in_fd = sys.stdin.fileno()
    parent = os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's; it closes our stdin
    _Checker().warmup()  # import and warm math-verify/sympy here, once, so that forked workers start warm

    pool = VerifyPool(args.workers, args.timeout, args.soft_timeout)
    pool.warmup()
    _write(out, (_READY, os.getpid()))
    while True:
        readable, _, _ = select.select([in_fd], [], [], 1.0)
        if not readable:
            if os.getppid() != parent:
                return  # the trainer is gone
            continue
        try:
            msg = _read(in_fd)
        except EOFError:
            return
        if msg is None:
            return
        try:
            results = pool.run(msg)
        except Exception as exc:  # e.g. workers that cannot start: answer, and try again on the next batch
            results = [(ERROR, f"{type(exc).__name__}: {exc}"[:200])] * len(msg)
        _write(out, (results, dict(pool.stats)))


# ---- the client (in the trainer) ----------------------------------------------------------------------------------
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
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        env.setdefault("OMP_NUM_THREADS", "1")
        cmd = [sys.executable, "-m", "mo_align.rewards._mv_server"]
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
        if not (isinstance(msg, tuple) and msg[0] == _READY):
            self._kill()
            self._broken = f"unexpected greeting from the math-verify server: {msg!r}"
            raise PoolUnavailable(self._broken)

    def _receive(self, deadline: float) -> Any:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError("math-verify server timed out")
        return _read(fd)

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
                _write(proc.stdin, None)
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
                _write(self._proc.stdin, list(tasks))
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
