"""Per-run progress lines while child processes train (fake clocks and fake workers; no wall-clock asserts)."""

import json
import os
import threading
import time
from types import SimpleNamespace

from mo_align.lab.jobs import _run_jobs
from mo_align.runs.progress import PROGRESS_ENV, ProgressCallback, ProgressWatcher, duration
from mo_align.trainer import MOGRPOTrainer
from tests.helpers import reward_short, reward_vowels, tiny_config, tiny_dataset


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _record(path, step, total, elapsed):
    path.write_text(json.dumps({"step": step, "max_steps": total, "elapsed": elapsed}))


def test_watcher_says_a_line_per_tenth_or_every_30_s_with_an_eta(tmp_path):
    clock, said = Clock(), []
    watcher = ProgressWatcher(said.append, every=30.0, clock=clock)
    path = tmp_path / "run.progress"
    watcher.watch("ctwa-seed0", str(path))
    watcher.poll()  # nothing written yet
    # (clock, step, elapsed in the child) -> the line expected, or None
    steps = [
        (10, 1, 4.0, None),  # first tenth not crossed, 10 s since the watch began
        (31, 2, 8.0, "ctwa-seed0 step 2/50 (eta 3m12s)"),  # 30 s since the last line: 8/2 * 48 = 192 s
        (40, 3, 12.0, None),  # same tenth, 9 s later
        (41, 5, 20.0, "ctwa-seed0 step 5/50 (eta 3m00s)"),  # crossed a tenth (5 = 50 / 10)
        (100, 5, 20.0, None),  # the step did not move
        (101, 50, 200.0, "ctwa-seed0 step 50/50"),  # done: no eta
    ]
    for t, step, elapsed, line in steps:
        clock.t = t
        _record(path, step, 50, elapsed)
        watcher.poll()
        if line:
            assert said[-1] == line, (t, said)
    assert said == [s[3] for s in steps if s[3]]
    path.write_text("{half a rec")  # read while the child rewrites it: skipped, not an error
    watcher.poll()
    assert len(said) == 3


def test_duration_format():
    assert [duration(s) for s in (0, 45.4, 190, 3600 + 125)] == ["0s", "45s", "3m10s", "1h02m"]


def test_callback_writes_step_of_max_steps_and_elapsed(tmp_path):
    clock, path = Clock(), tmp_path / "p"
    callback = ProgressCallback(str(path), clock=clock)
    state = SimpleNamespace(global_step=0, max_steps=8, is_world_process_zero=True)
    clock.t = 100.0
    callback.on_train_begin(None, state, None)
    assert json.loads(path.read_text()) == {"step": 0, "max_steps": 8, "elapsed": 0.0}
    clock.t, state.global_step = 112.5, 3
    callback.on_step_end(None, state, None)
    assert json.loads(path.read_text()) == {"step": 3, "max_steps": 8, "elapsed": 12.5}
    other = ProgressCallback(str(tmp_path / "q"), clock=clock)
    other.on_step_end(None, SimpleNamespace(global_step=1, max_steps=8, is_world_process_zero=False), None)
    assert not (tmp_path / "q").exists()  # only the main process writes


def test_a_trainer_started_with_the_progress_env_writes_its_steps(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, str(tmp_path / "run.progress"))
    trainer = MOGRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=[reward_short, reward_vowels],
        args=tiny_config(str(tmp_path / "out"), max_steps=2),
        train_dataset=tiny_dataset(16),
    )
    trainer.train()
    record = json.loads((tmp_path / "run.progress").read_text())
    assert record["step"] == record["max_steps"] == 2 and record["elapsed"] > 0


def test_lab_workers_progress_reaches_the_console_before_their_end(tmp_path):
    """A fake worker writes its progress file (as the trainer's callback would) and ends only once the lab printed
    that progress; the console has the step line, then the run's end line, per run."""
    said, lock = [], threading.Lock()

    def say(message):
        with lock:
            said.append(message)

    def fake_launch(job, log_dir):
        label = os.path.basename(job["out"])
        path = os.path.join(log_dir, label + ".progress")
        with open(path, "w") as f:
            json.dump({"step": 6, "max_steps": 12, "elapsed": 30.0}, f)
        end = time.monotonic() + 60  # a safeguard against a hang, not an assertion on time
        while not any(m.startswith(f"{label} step") for m in list(said)) and time.monotonic() < end:
            time.sleep(0.01)
        return job["out"], 1.0, 0

    logs = tmp_path / "logs"
    logs.mkdir()
    # an earlier lab's record of the run that waits (one job at a time) is not shown while linear runs
    (logs / "ctwa-seed0.progress").write_text(json.dumps({"step": 11, "max_steps": 12, "elapsed": 1.0}))
    todo = [{"algo": a, "out": str(tmp_path / f"{a}-seed0")} for a in ("linear", "ctwa")]
    done, seconds = _run_jobs(todo, 1, str(logs), say, launch=fake_launch, poll=0.01)
    assert done == [(todo[0]["out"], 0), (todo[1]["out"], 0)] and seconds == {job["out"]: 1.0 for job in todo}
    for label in ("linear-seed0", "ctwa-seed0"):
        progress = said.index(f"{label} step 6/12 (eta 30s)")  # 30 s / 6 steps x 6 left
        assert progress < said.index(f"{label}: ok in 1 s")
    assert not any("11/12" in m for m in said)
