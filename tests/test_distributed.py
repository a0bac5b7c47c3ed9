"""Two-process MOGRPOTrainer runs on the CPU (torchrun, gloo): DDP and DeepSpeed ZeRO-3.

The worker (tests/dist_worker.py) trains a few steps with the stateful ``DriftWeighting`` and writes one JSON report
per rank. The checks: both ranks saw the same gathered reward matrix r, moved the weighting identically (exactly, at
every generation batch, and as a replay of r predicts), took disjoint slices of the same advantages, updated the
model identically; under ZeRO-3 the parameters were really partitioned and ``save_model`` wrote a full model that
loads in a fresh process without DeepSpeed.

The first DeepSpeed multi-process run on a machine JIT-compiles ``deepspeed_shm_comm_op`` (30-70 s, cached in
``~/.cache/torch_extensions``); the ZeRO-3 timeout allows for it.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest


pytestmark = pytest.mark.distributed

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKER = REPO_ROOT / "tests" / "dist_worker.py"
ZERO3_JSON = REPO_ROOT / "configs" / "deepspeed" / "zero3.json"
NPROC = 2
NUM_OBJECTIVES = 3
LOG_TAIL = 6000
# Fields of a trajectory record that must be identical on every rank (local_* are this rank's slice).
SHARED_FIELDS = (
    "combine_calls",
    "update_calls",
    "step",
    "group_size",
    "rewards_shape",
    "rewards_sha256",
    "rewards",
    "weights_used",
    "advantages_full",
    "advantages_full_sha256",
    "update_rewards_sha256",
    "weights",
    "logits",
    "updates",
    "local_advantages_shape",
    "global_step_at_generation",
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1",
            # CPU + gloo everywhere, also on a machine that has a GPU.
            "CUDA_VISIBLE_DEVICES": "",
            "DS_ACCELERATOR": "cpu",
            # DeepSpeed's gloo path warns twice per collective; keep the failure tails readable.
            "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning",
        }
    )
    return env


def _tail(text: str | bytes | None) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "")[-LOG_TAIL:]


def _run_worker(prefix: Path, model_dir: str, mode: str, *extra: str, timeout: int) -> tuple[list[dict], str]:
    """torchrun the worker with NPROC ranks; return the per-rank reports (rank order) and the output tail."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(NPROC),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(WORKER),
        model_dir,
        str(prefix),
        mode,
        *extra,
    ]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"{mode} worker timed out after {timeout} s\n--- stdout ---\n{_tail(exc.stdout)}\n"
            f"--- stderr ---\n{_tail(exc.stderr)}"
        )
    wall = time.perf_counter() - t0
    log = f"--- stdout ---\n{_tail(proc.stdout)}\n--- stderr ---\n{_tail(proc.stderr)}"
    print(f"[{mode}] torchrun wall time {wall:.1f} s")
    assert proc.returncode == 0, f"{mode} worker exited with {proc.returncode}\n{log}"
    reports = []
    for rank in range(NPROC):
        path = Path(f"{prefix}.rank{rank}.json")
        assert path.is_file(), f"rank {rank} wrote no report {path}\n{log}"
        reports.append(json.loads(path.read_text()))
    return reports, log


def _nan(rows: list[list[float | None]]) -> list[list[float]]:
    return [[math.nan if v is None else v for v in row] for row in rows]


def _check_common(
    reports: list[dict], log: str, *, max_steps: int, per_device: int, num_generations: int, generation_batches: int
) -> None:
    """Checks shared by DDP and ZeRO-3 (see the module docstring)."""
    import torch

    from mo_align.weightings import ObjectiveStats
    from tests.helpers import DriftWeighting

    n_global = per_device * NPROC  # steps_per_generation = 1
    assert [r["rank"] for r in reports] == [r["env_rank"] for r in reports] == list(range(NPROC)), log
    for rep in reports:
        assert rep["world_size"] == NPROC and rep["backend"] == "gloo", (rep["world_size"], rep["backend"], log)
        assert rep["global_step"] == max_steps, log
        assert rep["generation_batch_size"] == n_global and rep["num_generations"] == num_generations, log
        assert len(rep["trajectory"]) == generation_batches, (
            f"rank {rep['rank']}: {len(rep['trajectory'])} weighting updates for {generation_batches} generation "
            f"batches\n{log}"
        )

    r0, r1 = reports
    # Identical weighting trajectory and identical gathered rewards on every rank, at every generation batch.
    for i, (a, b) in enumerate(zip(r0["trajectory"], r1["trajectory"], strict=True)):
        diff = {f: (a.get(f), b.get(f)) for f in SHARED_FIELDS if a.get(f) != b.get(f)}
        assert not diff, f"ranks disagree at generation batch {i}: {diff}"
        assert a["rewards_shape"] == [n_global, NUM_OBJECTIVES], f"r is not the gathered matrix: {a['rewards_shape']}"
        assert a["update_rewards_sha256"] == a["rewards_sha256"], "update() and combine() saw different r"
        assert a["group_size"] == num_generations
        assert a["combine_calls"] == 1 and a["update_calls"] == 1, (
            f"batch {i}: {a['combine_calls']} combine, {a['update_calls']} update calls"
        )
        assert a["updates"] == i + 1 and a["step"] == i == a["global_step_at_generation"], a
    assert r0["final_weights"] == r1["final_weights"] and r0["final_logits"] == r1["final_logits"]
    assert r0["logged_weights"] == r1["logged_weights"]
    # Different completions on the two ranks: the gathered r holds both halves.
    trajectory = r0["trajectory"]
    assert any(rec["rewards"][: n_global // 2] != rec["rewards"][n_global // 2 :] for rec in trajectory), (
        "both ranks produced identical rewards at every batch: was the data sharded?"
    )

    # Each rank optimised its own contiguous slice of the one advantage vector.
    for rec_by_rank in zip(*(rep["trajectory"] for rep in reports), strict=True):
        full = rec_by_rank[0]["advantages_full"]
        assert len(full) == n_global
        concatenated = [a for rec in rec_by_rank for a in rec["local_advantages"]]
        assert concatenated == full, f"local advantage slices {concatenated} != the full advantages {full}"
        for rec in rec_by_rank:
            assert rec["local_advantages_shape"] == [per_device]

    # The weights move, and exactly as a replay of the recorded gathered rewards predicts.
    uniform = [1.0 / NUM_OBJECTIVES] * NUM_OBJECTIVES
    replay = DriftWeighting(NUM_OBJECTIVES)
    previous = replay.weights().tolist()
    assert previous == pytest.approx(uniform)
    update_first = r0["update_first"]
    for i, rec in enumerate(trajectory):
        # update_first: the batch is scored with the state that includes it; otherwise with the previous state.
        expected = rec["weights"] if update_first else previous
        assert rec["weights_used"] == expected, f"batch {i} combined with {rec['weights_used']}, expected {expected}"
        assert rec["weights"] != previous, f"weights did not move at generation batch {i}: {rec['weights']}"
        stats = ObjectiveStats(
            rewards=torch.tensor(_nan(rec["rewards"]), dtype=torch.float32),
            group_size=rec["group_size"],
            lengths=torch.ones(n_global),
        )
        replay.update(stats)
        assert replay.logits.tolist() == pytest.approx(rec["logits"], rel=0, abs=1e-12), (i, rec["logits"])
        assert replay.weights().tolist() == pytest.approx(rec["weights"], rel=0, abs=1e-7)
        previous = rec["weights"]
    assert max(abs(w - u) for w, u in zip(trajectory[-1]["weights"], uniform, strict=True)) > 1e-3

    # The logged mo/weight/<name> metrics are the weights each batch was combined with.
    logged = r0["logged_weights"]
    keys = [f"mo/weight/{name}" for name in ("reward_has_digit", "reward_short", "reward_vowels")]
    assert len(logged) == max_steps, logged
    for entry, rec in zip(logged, trajectory, strict=True):
        assert sorted(entry) == sorted(keys), entry
        assert [entry[k] for k in keys] == pytest.approx(rec["weights_used"], abs=1e-6), (entry, rec)

    # The model trained, identically on both ranks.
    p0, p1 = r0["params"], r1["params"]
    assert p0.keys() == p1.keys() and p0, log
    assert all(p["in_checkpoint"] for p in p0.values()), [n for n, p in p0.items() if not p["in_checkpoint"]]
    unchanged = [n for n, p in p0.items() if not p["changed"]]
    assert not unchanged, f"parameters that did not move: {unchanged}"
    differ = [n for n in p0 if p0[n]["sha256"] != p1[n]["sha256"]]
    assert not differ, f"parameters differ across ranks after training: {differ}"


def test_ddp_two_ranks_agree(tmp_path: Path, tiny_model_dir: str) -> None:
    """DDP on gloo; num_generations=8 with 4 completions per rank, so every group spans both ranks."""
    max_steps, per_device, num_generations = 3, 4, 8
    reports, log = _run_worker(
        tmp_path / "ddp",
        tiny_model_dir,
        "ddp",
        "--max-steps",
        str(max_steps),
        "--per-device-batch",
        str(per_device),
        "--num-generations",
        str(num_generations),
        timeout=300,
    )
    for rep in reports:
        assert rep["wrapped_type"] == "DistributedDataParallel", (rep["wrapped_type"], log)
        assert rep["distributed_type"].endswith("MULTI_CPU"), (rep["distributed_type"], log)
    _check_common(
        reports,
        log,
        max_steps=max_steps,
        per_device=per_device,
        num_generations=num_generations,
        generation_batches=max_steps,
    )


_RELOAD = """
import hashlib, json, sys
import torch
from transformers import AutoModelForCausalLM

def digest(path):
    model, info = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, output_loading_info=True)
    shas = {n: hashlib.sha256(p.detach().float().contiguous().numpy().tobytes()).hexdigest()
            for n, p in model.named_parameters()}
    return {"sha256": shas, "info": {k: sorted(map(str, v)) for k, v in info.items()}}

print(json.dumps({"saved": digest(sys.argv[1]), "initial": digest(sys.argv[2])}))
"""


def test_zero3_two_ranks_partitioned_and_saved(tmp_path: Path, tiny_model_dir: str) -> None:
    """ZeRO-3 on gloo with stage3_param_persistence_threshold=0, then save_model and reload without DeepSpeed."""
    config = json.loads(ZERO3_JSON.read_text())
    assert config["zero_optimization"]["stage"] == 3
    assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    config["zero_optimization"]["stage3_param_persistence_threshold"] = 0  # partition even the tiny model
    ds_path = tmp_path / "zero3_ci.json"
    ds_path.write_text(json.dumps(config))

    max_steps, per_device, num_generations = 3, 4, 4
    reports, log = _run_worker(
        tmp_path / "zero3",
        tiny_model_dir,
        "zero3",
        "--deepspeed",
        str(ds_path),
        "--max-steps",
        str(max_steps),
        "--per-device-batch",
        str(per_device),
        "--num-generations",
        str(num_generations),
        timeout=540,
    )
    for rep in reports:
        assert rep["wrapped_type"] == "DeepSpeedEngine", (rep["wrapped_type"], log)
        assert rep["distributed_type"].endswith("DEEPSPEED"), (rep["distributed_type"], log)
    _check_common(
        reports,
        log,
        max_steps=max_steps,
        per_device=per_device,
        num_generations=num_generations,
        generation_batches=max_steps,
    )

    # Partitioning: outside a gather every parameter is released, each rank holds half of it.
    for rep in reports:
        z = rep["zero3"]
        assert z["zero_stage"] == 3 and z["param_persistence_threshold"] == 0, z
        for key in ("partition", "partition_after_save"):
            part = z[key]
            assert part.keys() == rep["params"].keys()
            for name, p in part.items():
                assert p["ds_status"] == "NOT_AVAILABLE" and p["local_numel"] == 0, (key, name, p)
                assert p["ds_numel"] > 0 and p["shard_numel"] == math.ceil(p["ds_numel"] / NPROC), (key, name, p)
        assert [s["step"] for s in z["per_step"]] == list(range(1, max_steps + 1))
        assert all(s["not_available"] == s["params"] > 0 and s["local_numel"] == 0 for s in z["per_step"]), z

    # The saved full model loads in a fresh process without DeepSpeed, equals the trained weights, != initial.
    saved = reports[0]["zero3"]["saved_dir"]
    assert Path(saved, "model.safetensors").is_file(), f"no model.safetensors in {saved}: {os.listdir(saved)}"
    proc = subprocess.run(
        [sys.executable, "-c", _RELOAD, saved, tiny_model_dir],
        cwd=REPO_ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, f"reload failed\n{_tail(proc.stdout)}\n{_tail(proc.stderr)}"
    loaded: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    info = loaded["saved"]["info"]
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    saved_sha, initial_sha = loaded["saved"]["sha256"], loaded["initial"]["sha256"]
    trained_sha = {n: p["sha256"] for n, p in reports[0]["params"].items()}
    assert saved_sha.keys() == trained_sha.keys() == initial_sha.keys()
    assert saved_sha == trained_sha, [n for n in saved_sha if saved_sha[n] != trained_sha[n]]
    assert all(saved_sha[n] != initial_sha[n] for n in saved_sha), "saved model equals the initial model"
