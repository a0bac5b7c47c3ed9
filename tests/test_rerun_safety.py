"""Re-running and resuming keep a run's results: a finished run is not trained past ``max_steps`` nor its final
model replaced, and a run killed and resumed records what an uninterrupted run records."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap

import datasets
import pytest
import transformers

from mo_align import train as train_mod
from mo_align.runs.finished import FINISHED_FILE
from tests.test_cli import tiny_recipe


FAST = {"eval_strategy": "no", "eval_on_start": False, "max_completion_length": 12}


@pytest.fixture
def restore_log_levels():
    levels = (
        logging.getLogger("mo_align").level,
        transformers.logging.get_verbosity(),
        datasets.logging.get_verbosity(),
    )
    yield
    logging.getLogger("mo_align").setLevel(levels[0])
    transformers.logging.set_verbosity(levels[1])
    datasets.logging.set_verbosity(levels[2])


def _snapshot(folder) -> dict[str, tuple[str, int]]:
    """Every file under ``folder``: (sha256, mtime_ns)."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = (hashlib.sha256(f.read()).hexdigest(), os.stat(path).st_mtime_ns)
    return out


def _cli(argv) -> None:
    train_mod.cli([*argv, "--log_level", "warning", "--disable_tqdm", "true"])  # returns (rc 0) or raises


def test_rerunning_a_finished_run_is_a_no_op_that_says_so(tiny_model_dir, tmp_path, capsys, restore_log_levels):
    """Before: the re-run resumed checkpoint-2 (= max_steps), trained step 3, wrote checkpoint-3 and replaced every
    tensor of the final model."""
    import mo_align.trainer

    recipe = tiny_recipe(tmp_path, tiny_model_dir, max_steps=2, save_strategy="steps", save_steps=1, **FAST)
    out = tmp_path / "out"
    _cli(["--config", recipe])
    assert json.loads((out / FINISHED_FILE).read_text()) == {"version": 1, "global_step": 2, "max_steps": 2}
    before = _snapshot(out)
    capsys.readouterr()

    def no_model(*args, **kwargs):
        raise AssertionError("a finished run loaded the model again")

    init = mo_align.trainer.MOGRPOTrainer.__init__
    mo_align.trainer.MOGRPOTrainer.__init__ = no_model
    try:
        _cli(["--config", recipe])  # no SystemExit: exit status 0
    finally:
        mo_align.trainer.MOGRPOTrainer.__init__ = init
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"mo-align: {out} holds a finished run (step 2; {FINISHED_FILE}): nothing to do. Set continue_finished_run: "
        "true to train on from its newest checkpoint (its final model is then replaced), or use another output_dir"
    ]
    assert _snapshot(out) == before  # model.safetensors, checkpoints, summary: same bytes, not even rewritten

    # a run that finished before the marker existed is recognised by what the script wrote at its end
    (out / FINISHED_FILE).unlink()
    _cli(["--config", recipe, "--max_steps", "5"])  # (would need the model: the patched __init__ is gone)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"mo-align: {out} holds a finished run (step 2; train_results.json, trainer_state.json")
    assert "train on to max_steps 5 from its newest checkpoint" in line
    assert sorted(p for p in os.listdir(out) if p.startswith("checkpoint-")) == ["checkpoint-1", "checkpoint-2"]


def test_continuing_a_finished_run_at_max_steps_takes_no_step(tiny_model_dir, tmp_path, caplog, restore_log_levels):
    """continue_finished_run with an unchanged max_steps: the checkpoint at max_steps is restored, never trained on
    (transformers' loop trained one step past it)."""
    from safetensors.torch import load_file

    recipe = tiny_recipe(tmp_path, tiny_model_dir, max_steps=2, save_strategy="steps", save_steps=1, **FAST)
    out = tmp_path / "out"
    _cli(["--config", recipe])
    final = load_file(out / "model.safetensors")
    with caplog.at_level(logging.WARNING, logger="mo_align"):
        _cli(["--config", recipe, "--continue_finished_run", "true"])
    assert any(
        f"{out / 'checkpoint-2'} is at step 2 of max_steps 2: nothing left to train" in r.getMessage()
        for r in caplog.records
    )
    assert sorted(p for p in os.listdir(out) if p.startswith("checkpoint-")) == ["checkpoint-1", "checkpoint-2"]
    again = load_file(out / "model.safetensors")
    assert again.keys() == final.keys() and all((again[k] == final[k]).all() for k in final)
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2
    assert json.loads((out / FINISHED_FILE).read_text())["global_step"] == 2


# ---- a killed and resumed run records what an uninterrupted one records ---------------------------------------------
_KILLED_AFTER_CHECKPOINT = textwrap.dedent(
    """
    import os, signal, sys
    from mo_align.trainer import state
    from mo_align.train import cli

    save = state.save_checkpoint
    def save_then_die(trainer, write, trial):  # checkpoint N complete (marked), then kill -9
        save(trainer, write, trial)
        if trainer.state.global_step == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)
    state.save_checkpoint = save_then_die
    cli(["--config", sys.argv[1], "--log_level", "warning", "--disable_tqdm", "true"])
    """
)

RESUMABLE = {
    "max_steps": 4,
    "eval_steps": 2,
    "eval_on_start": True,
    "save_strategy": "steps",
    "save_steps": 1,
    "max_completion_length": 12,
    "dataset_kwargs": {"n_train": 128, "n_eval": 8, "seed": 0},
}
NOT_THE_RECORD = ("output_dir", "run_name", "launch_command")  # where and how it ran, not what it found


def _run(recipe, kill_after=None, log_level="warning"):
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    code = _KILLED_AFTER_CHECKPOINT if kill_after else "import sys; from mo_align.train import cli; cli(sys.argv[1:])"
    argv = [recipe, str(kill_after)] if kill_after else ["--config", recipe, "--log_level", log_level]
    return subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True, timeout=900)


def _record(out) -> dict:
    summary = json.loads((out / "mo_summary.json").read_text())
    return {k: v for k, v in summary.items() if k not in NOT_THE_RECORD}


def test_a_killed_and_resumed_run_records_what_an_uninterrupted_run_records(tiny_model_dir, tmp_path):
    """Before: eval_on_start evaluated again at the resume step (eval steps [0, 2, 3, 4] vs [0, 2, 4]), adding law
    checks and a history point that an uninterrupted run does not have."""
    straight = tmp_path / "straight"
    straight.mkdir()
    done = _run(tiny_recipe(straight, tiny_model_dir, **RESUMABLE))
    assert done.returncode == 0, done.stderr[-3000:]

    killed = tmp_path / "killed"
    killed.mkdir()
    recipe = tiny_recipe(killed, tiny_model_dir, **RESUMABLE)
    proc = _run(recipe, kill_after=3)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert not (killed / "out" / "model.safetensors").exists()
    resumed = _run(recipe, log_level="info")  # auto-resume from checkpoint-3
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {killed / 'out' / 'checkpoint-3'}" in resumed.stderr

    a, b = _record(straight / "out"), _record(killed / "out")
    assert [e["step"] for e in a["eval"]] == [e["step"] for e in b["eval"]] == [0, 2, 4]
    assert len(b["law"]) == len(a["law"]) == 2 * 3  # two intervals x three objectives
    assert b == a  # eval curve and CIs, weights, covariance EMAs, train rewards, events, law checks
