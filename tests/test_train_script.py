"""``python -m mo_align.train`` ends as TRL's scripts end: per-process log levels, metrics and
state saved, ``Trainer.end()`` called once after the model is saved."""

from __future__ import annotations

import json
import logging

import datasets
import pytest
import transformers

from mo_align import train as train_mod
from mo_align.trainer import MOGRPOTrainer
from tests.test_cli import tiny_recipe


@pytest.fixture
def restore_log_levels():
    mo, tf, ds = (
        logging.getLogger("mo_align").level,
        transformers.logging.get_verbosity(),
        datasets.logging.get_verbosity(),
    )
    yield
    logging.getLogger("mo_align").setLevel(mo)
    transformers.logging.set_verbosity(tf)
    datasets.logging.set_verbosity(ds)


def test_run_saves_metrics_and_state_and_ends_after_saving(tmp_path, tiny_model_dir, monkeypatch, restore_log_levels):
    calls = []
    end = MOGRPOTrainer.end

    def recording_end(self):
        calls.append((self.state.global_step, (tmp_path / "out" / "model.safetensors").exists()))
        return end(self)

    monkeypatch.setattr(MOGRPOTrainer, "end", recording_end)
    recipe = tiny_recipe(tmp_path, tiny_model_dir, max_steps=1)
    train_mod.main(*train_mod.parse_args(["--config", recipe, "--log_level", "warning", "--disable_tqdm", "true"]))
    out = tmp_path / "out"
    assert calls == [(1, True)]  # once, at the end, after save_model
    results = json.loads((out / "train_results.json").read_text())
    assert results["train_samples"] == 128 and results["train_runtime"] > 0
    assert json.loads((out / "all_results.json").read_text())["train_samples"] == 128
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 1 and any("mo/weight/accuracy" in h for h in state["log_history"])
    # log_level reached mo_align, transformers and datasets on this (main) process
    assert logging.getLogger("mo_align").level == logging.WARNING
    assert transformers.logging.get_verbosity() == logging.WARNING
    assert datasets.logging.get_verbosity() == logging.WARNING


class _Args:
    def __init__(self, log_level, level, should_log):
        self.log_level, self._level, self.should_log = log_level, level, should_log

    def get_process_log_level(self):
        return self._level


@pytest.mark.parametrize(
    ("log_level", "process_level", "should_log", "expected"),
    [
        ("passive", logging.WARNING, True, logging.INFO),  # default on the main process: mo_align's info shows
        ("passive", logging.WARNING, False, logging.WARNING),  # a replica: log_level_replica
        ("debug", logging.DEBUG, True, logging.DEBUG),
        ("error", logging.ERROR, True, logging.ERROR),
    ],
)
def test_setup_logging_levels(restore_log_levels, log_level, process_level, should_log, expected):
    train_mod.setup_logging(_Args(log_level, process_level, should_log))
    assert logging.getLogger("mo_align").level == expected
    assert transformers.logging.get_verbosity() == process_level
