"""Experiment trackers, offline: ``report_to: [wandb, trackio]`` receive every ``mo/`` metric and the per-objective
eval metrics, and their run config holds the weighting and its hyperparameters.

The run happens in a subprocess so that WANDB_DIR / TRACKIO_DIR (trackio reads its directory at import time) point
into the test's temporary directory. wandb runs in offline mode and writes its transaction log (``run-*.wandb``),
read back here with a small LevelDB-log reader and wandb's own protobuf schema; trackio writes SQLite.
"""

from __future__ import annotations

import json
import os
import pathlib
import sqlite3
import struct
import subprocess
import sys
import textwrap

import pytest
from transformers.integrations.integration_utils import rewrite_logs


ROOT = pathlib.Path(__file__).resolve().parents[1]
PROJECT = "mo-align-tracking-test"
WEIGHTING_KWARGS = {"weights": [0.4, 0.6], "lambda_lr": 0.1, "cov_targets": [0.1, 0.05]}
OBJECTIVES = ("reward_has_digit", "reward_vowels")
SECRET = "hf_" + "Zq7" * 11 + "x"

DRIVER = textwrap.dedent(
    """
    import json, sys
    from mo_align.trainer import MOGRPOTrainer
    from tests.helpers import reward_has_digit, reward_vowels, tiny_config, tiny_dataset

    model_dir, out, kwargs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    args = tiny_config(
        out, report_to=["wandb", "trackio"], project=kwargs.pop("project"), run_name="tracking-test",
        weighting="ctwa", weighting_kwargs=kwargs, eval_strategy="steps", eval_steps=1, eval_on_start=True,
        per_device_eval_batch_size=4,
    )
    trainer = MOGRPOTrainer(
        model=model_dir, reward_funcs=[reward_has_digit, reward_vowels], args=args,
        train_dataset=tiny_dataset(16), eval_dataset=tiny_dataset(4),
    )
    trainer.train()
    with open(out + "/log_history.json", "w") as f:
        json.dump(trainer.state.log_history, f)
    """
)


@pytest.fixture(scope="module")
def tracked_run(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tracking")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HOME": str(tmp / "hf_home"),
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp / "wandb_dir"),
        "WANDB_SILENT": "true",
        "TRACKIO_DIR": str(tmp / "trackio"),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_TOKEN": SECRET,  # the supported way to give a hub token: it must reach no tracker file
    }
    (tmp / "wandb_dir").mkdir()
    out = tmp / "run"
    kwargs = json.dumps({**WEIGHTING_KWARGS, "project": PROJECT})
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, tiny_model_dir, str(out), kwargs],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    history = json.loads((out / "log_history.json").read_text())
    return tmp, history


def _expected_keys(history: list[dict]) -> set[str]:
    """Every mo/, TRL per-objective reward and per-objective eval key the trainer logged, named as transformers forwards it to trackers."""
    keys = set()
    for entry in history:
        mine = {k: v for k, v in entry.items() if k.startswith(("mo/", "eval_", "rewards/"))}
        keys |= set(rewrite_logs(mine))
    return keys


def _check_history(history: list[dict], received: set[str]) -> None:
    expected = _expected_keys(history)
    for name in OBJECTIVES:  # the headline metrics are really among them
        assert any(k.endswith(f"mo/weight/{name}") for k in expected)
        assert f"train/rewards/{name}/mean" in expected and not any(f"mo/reward/{name}/" in k for k in expected)
        # transformers' rewriter files eval_<objective>/mean under the tracker's eval/ section
        assert f"eval/{name}/mean" in expected and f"eval/{name}/delta" in expected
    assert any("mo/ctwa/" in k for k in expected) and "train/mo/scalar/mean" in expected
    assert "eval/loss" in expected
    assert not any(k.startswith("train/eval") for k in expected)
    missing = expected - received
    assert not missing, f"not received by the tracker: {sorted(missing)}"


def _check_config(config: dict) -> None:
    assert config["weighting"] == "ctwa"
    kwargs = config["weighting_kwargs"]
    kwargs = json.loads(kwargs) if isinstance(kwargs, str) else kwargs
    assert kwargs == WEIGHTING_KWARGS
    assert config["advantage_estimator"] == "grpo"
    assert config["gramian_space"] == "parameters"


# ---- wandb -----------------------------------------------------------------------------------------------------
def _wandb_records(path: pathlib.Path):
    """Records of a wandb transaction log: a 7-byte file header, then LevelDB-log chunks in 32 KiB blocks."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a wandb transaction log"
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:  # a block trailer too small for a chunk header is zero padding
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += room
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_wandb_offline_receives_mo_and_eval_metrics_and_config(tracked_run):
    tmp, history = tracked_run
    runs = sorted((tmp / "wandb_dir" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, runs
    received: dict[str, list[float]] = {}
    config: dict = {}
    for record in _wandb_records(runs[0]):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            for item in record.history.item:
                key = "/".join(item.nested_key) if item.nested_key else item.key
                received.setdefault(key, []).append(json.loads(item.value_json))
        elif kind == "config":
            for item in record.config.update:
                config[item.key] = json.loads(item.value_json)
    _check_history(history, set(received))
    _check_config(config)
    # values arrive unchanged: the last logged weight of each objective
    last = [h for h in history if "mo/weight/reward_vowels" in h][-1]
    assert received["train/mo/weight/reward_vowels"][-1] == pytest.approx(last["mo/weight/reward_vowels"])
    last_eval = [h for h in history if "eval_reward_vowels/mean" in h][-1]
    assert received["eval/reward_vowels/mean"][-1] == pytest.approx(last_eval["eval_reward_vowels/mean"])


# ---- trackio ---------------------------------------------------------------------------------------------------
def test_trackio_local_receives_mo_and_eval_metrics_and_config(tracked_run):
    tmp, history = tracked_run
    db = tmp / "trackio" / f"{PROJECT}.db"
    assert db.exists(), sorted(p.name for p in (tmp / "trackio").iterdir())
    with sqlite3.connect(db) as conn:
        rows = [json.loads(m) for (m,) in conn.execute("SELECT metrics FROM metrics WHERE run_name = 'tracking-test'")]
        configs = [
            json.loads(c) for (c,) in conn.execute("SELECT config FROM configs WHERE run_name = 'tracking-test'")
        ]
    received = {k for row in rows for k in row}
    _check_history(history, received)
    assert len(configs) == 1
    _check_config(configs[0])
    last = [h for h in history if "mo/weight/reward_vowels" in h][-1]
    values = [row["train/mo/weight/reward_vowels"] for row in rows if "train/mo/weight/reward_vowels" in row]
    assert values[-1] == pytest.approx(last["mo/weight/reward_vowels"])


def test_no_tracker_file_holds_the_hub_token(tracked_run):
    """wandb's offline run files (uploaded by `wandb sync`), trackio's database and the run directory never hold
    the token (``--hub_token`` itself is refused by the CLI: tests/test_reliability.py)."""
    tmp, _ = tracked_run
    files = [p for p in tmp.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files) and any("trackio" in str(p) for p in files)
    leaking = [str(p) for p in files if SECRET.encode() in p.read_bytes()]
    assert leaking == []
