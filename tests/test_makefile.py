"""The Makefile: offline only where it belongs.

Each target runs against a fake venv whose ``python`` / ``accelerate`` print the environment they were started
with, so the test sees exactly what make exported to the real command, without running it.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest


ROOT = pathlib.Path(__file__).resolve().parents[1]
FAKE = '#!/bin/sh\necho "$(basename "$0") HF_HUB_OFFLINE=${HF_HUB_OFFLINE-unset} WANDB_MODE=${WANDB_MODE-unset} $*"\n'


@pytest.fixture
def fake_venv(tmp_path):
    if shutil.which("make") is None:
        pytest.fail("GNU make is required by the project (make install / make test)")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for tool in ("python", "accelerate"):
        path = venv / "bin" / tool
        path.write_text(FAKE)
        path.chmod(0o755)
    (venv / ".mo_align-installed").touch()  # newer than setup.cfg: `install` is a no-op
    return venv


def run_make(venv: pathlib.Path, target: str, **env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "WANDB_MODE")}
    proc = subprocess.run(
        ["make", "--no-print-directory", "-s", f"VENV={venv}", f"TINY_MODEL_DIR={venv}/tiny", target],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line.startswith(("python ", "accelerate "))]


def test_train_targets_are_online(fake_venv):
    (line,) = run_make(fake_venv, "train-ctwa")
    assert line.startswith("accelerate HF_HUB_OFFLINE=unset WANDB_MODE=unset launch --config_file configs/accelerate/")
    assert "--config recipes/qwen2.5-1.5b/ctwa.yaml" in line


@pytest.mark.parametrize("target", ["smoke-linear", "lab", "lab-quick", "lab-sweep", "lab-front"])
def test_test_like_targets_are_offline(fake_venv, target):
    lines = run_make(fake_venv, target)
    assert lines, "the target ran no command"
    for line in lines:  # smoke-linear: tiny-model (its prerequisite) and the run itself
        assert "HF_HUB_OFFLINE=1 WANDB_MODE=offline" in line, line


def test_a_users_wandb_mode_wins_in_offline_targets(fake_venv):
    (line,) = run_make(fake_venv, "lab", WANDB_MODE="disabled")
    assert "HF_HUB_OFFLINE=1 WANDB_MODE=disabled" in line


def test_lab_sweep_passes_its_shares(fake_venv):
    (line,) = run_make(fake_venv, "lab-sweep")
    assert line.endswith("-m mo_align.lab --sweep")  # the defaults of mo_align.lab.sweep
    (line,) = run_make(fake_venv, "lab-sweep", SHARES="0.05 0.2")
    assert line.endswith("-m mo_align.lab --sweep 0.05 0.2")
