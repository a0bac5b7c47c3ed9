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
  ``subprocess.Popen([python, "-m", "mo_align.rewards.verify", ...])``: fork+exec, safe in a process with
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

Modules, one per process side: :mod:`~.protocol` (outcomes and pipe framing, shared), :mod:`~.checker` (the check
and its soft limit), :mod:`~.workers` (the workers and :class:`VerifyPool`, in the server), :mod:`~.server` (the
server's loop; ``__main__`` runs it) and :mod:`~.client` (:class:`VerifyClient` and :func:`get_pool`, in the trainer).
"""

from __future__ import annotations

from mo_align.rewards.verify.checker import check_in_process
from mo_align.rewards.verify.client import VerifyClient, get_pool
from mo_align.rewards.verify.protocol import ERROR, HARD_TIMEOUT, OK, SERVER_MODULE, SOFT_TIMEOUT, PoolUnavailable
from mo_align.rewards.verify.workers import VerifyPool


__all__ = [
    "ERROR",
    "HARD_TIMEOUT",
    "OK",
    "SERVER_MODULE",
    "SOFT_TIMEOUT",
    "PoolUnavailable",
    "VerifyClient",
    "VerifyPool",
    "check_in_process",
    "get_pool",
]
