"""Per-run progress on the console while runs train in child processes whose output goes to log files.

The child: a trainer started with ``MO_ALIGN_PROGRESS_FILE`` in its environment gets :class:`ProgressCallback`,
which rewrites that file (atomically) after every optimizer step with ``{"step", "max_steps", "elapsed"}``
(``elapsed``: seconds since training began, from the child's own clock). The parent (the lab's workers, the lab
sweep, ``mo-align sweep``): a :class:`ProgressWatcher` polls the files of the runs in flight and prints, per run,
``<run> step k/n (eta 3m10s)`` when the run has crossed another tenth of its steps or ``every`` seconds have passed
since that run's last line, whichever comes first (and the step moved). The ETA is the run's seconds per step so
far times the steps left. Both clocks are injectable (tests use fake ones).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import TYPE_CHECKING, Any


if TYPE_CHECKING:
    from transformers import Trainer

from transformers import TrainerCallback


PROGRESS_ENV = "MO_ALIGN_PROGRESS_FILE"


class ProgressCallback(TrainerCallback):
    """Writes ``{"step", "max_steps", "elapsed"}`` to ``path`` after each optimizer step (main process only)."""

    def __init__(self, path: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.path, self.clock, self.start = path, clock, None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = self.clock()
        self._write(state)

    def on_step_end(self, args, state, control, **kwargs):
        self._write(state)

    def _write(self, state: Any) -> None:
        if not state.is_world_process_zero:
            return
        elapsed = self.clock() - (self.start if self.start is not None else self.clock())
        record = {"step": int(state.global_step), "max_steps": int(state.max_steps), "elapsed": round(elapsed, 3)}
        tmp = f"{self.path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.replace(tmp, self.path)


def attach(trainer: Trainer) -> None:
    """Add a :class:`ProgressCallback` to ``trainer`` when ``MO_ALIGN_PROGRESS_FILE`` names a file."""
    path = os.environ.get(PROGRESS_ENV)
    if path:
        trainer.add_callback(ProgressCallback(path))


def duration(seconds: float) -> str:
    """``45s``, ``3m10s``, ``1h02m``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def read_progress(path: str) -> dict[str, Any] | None:
    """The child's last record, or None (not written yet, or half-read)."""
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    ok = isinstance(record, dict) and all(isinstance(record.get(k), (int, float)) for k in ("step", "max_steps"))
    return record if ok else None


class ProgressWatcher:
    """Prints a progress line per watched run at a modest rate (see the module docstring)."""

    def __init__(self, say: Callable[[str], None], every: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.say, self.every, self.clock = say, every, clock
        self.runs: dict[str, str] = {}  # label -> progress file
        self.last: dict[str, tuple[int, float]] = {}  # label -> (step, clock) of its last line

    def watch(self, label: str, path: str) -> None:
        self.runs[label] = path
        self.last[label] = (0, self.clock())

    def forget(self, label: str) -> None:
        self.runs.pop(label, None)
        self.last.pop(label, None)

    def poll(self) -> None:
        for label, path in list(self.runs.items()):
            record = read_progress(path)
            if record is None or record["max_steps"] <= 0 or record["step"] <= 0:
                continue
            step, total, now = int(record["step"]), int(record["max_steps"]), self.clock()
            before, said_at = self.last.setdefault(label, (0, now))
            tenth = max(1, total // 10)
            if step == before or (step // tenth == before // tenth and now - said_at < self.every):
                continue
            self.last[label] = (step, now)
            elapsed = float(record.get("elapsed") or 0.0)
            eta = f" (eta {duration(elapsed / step * (total - step))})" if elapsed > 0 and step < total else ""
            self.say(f"{label} step {step}/{total}{eta}")


def completed_with_progress(
    futures: Iterable[Future], watcher: ProgressWatcher | None, interval: float = 2.0
) -> Iterator[Future]:
    """Like ``concurrent.futures.as_completed``, polling ``watcher`` every ``interval`` seconds while it waits."""
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=interval, return_when=FIRST_COMPLETED)
        if watcher is not None:
            watcher.poll()
        yield from done
