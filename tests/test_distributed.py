"""Two-process MOGRPOTrainer runs on the CPU (torchrun, gloo): DDP and DeepSpeed ZeRO-3.

The worker (tests/dist_worker.py) trains a few steps with the stateful ``DriftWeighting`` and writes one JSON report
per rank. The checks: both ranks saw the same gathered reward matrix r, moved the weighting identically (exactly, at
every generation batch, and as a replay of r predicts), took disjoint slices of the same advantages, updated the
model identically; under ZeRO-3 the parameters were really partitioned and ``save_model`` wrote a full model that
loads in a fresh process without DeepSpeed.

Layout equivalence (worker modes ``equiv`` and ``zero3-mgda``): the gradient-space weighting MGDA (gramian_space
logprobs and parameters) and CTWA (statistic exact and on_policy) train the same global batch on 1 plain process and on
2 DDP ranks; α at every micro-batch, CTWA's log-weights and EMA after every generation batch and the final model agree
to 1e-6, and bitwise across ranks. MGDA under ZeRO-3 (logprobs) agrees across ranks and with the 1-process run, and
gramian_space 'parameters' is refused there at construction. The logprobs Gram matrix must not depend on the number of
processes (GradNorm and Dynamic weights depend on its scale; a bug found this way summed the ranks' matrices).

DeepSpeed's CPU shared-memory communication op is not built (``mo_align.deepspeed_setup``: it serves inference only,
and its just-in-time build used to cost 30-70 s and hang every later run after an interrupted one): the ZeRO-3 run
builds no torch extension at all.
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

from mo_align.process_group import run_group


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


def _run_worker(
    prefix: Path, model_dir: str, mode: str, *extra: str, timeout: int, nproc: int = NPROC
) -> tuple[list[dict], str]:
    """torchrun the worker with ``nproc`` ranks (``nproc=1``: a plain, non-distributed process); return the per-rank
    reports (rank order) and the output tail."""
    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
        launcher += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    cmd = [*launcher, str(WORKER), model_dir, str(prefix), mode, *extra]
    t0 = time.perf_counter()
    try:
        # the launcher and its ranks in one process group: a timeout stops every rank, none is left with PPID 1
        proc = run_group(cmd, timeout, cwd=REPO_ROOT, env=_env(), capture_output=True, text=True)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"{mode} worker timed out after {timeout} s\n--- stdout ---\n{_tail(exc.stdout)}\n"
            f"--- stderr ---\n{_tail(exc.stderr)}"
        )
    wall = time.perf_counter() - t0
    log = f"--- stdout ---\n{_tail(proc.stdout)}\n--- stderr ---\n{_tail(proc.stderr)}"
    print(f"[{mode}, {nproc} process{'es' if nproc > 1 else ''}] wall time {wall:.1f} s")
    assert proc.returncode == 0, f"{mode} worker exited with {proc.returncode}\n{log}"
    reports = []
    for rank in range(nproc):
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


def test_zero3_two_ranks_partitioned_and_saved(tmp_path: Path, tiny_model_dir: str, monkeypatch) -> None:
    """ZeRO-3 on gloo with stage3_param_persistence_threshold=0, then save_model and reload without DeepSpeed; no
    torch extension is built on the way."""
    extensions = tmp_path / "torch_extensions"
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(extensions))  # the workers' environment copies this one
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
    built = sorted(p.name for p in extensions.iterdir()) if extensions.exists() else []
    assert built == [], f"torch extensions were built: {built}"
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
    proc = run_group(
        [sys.executable, "-c", _RELOAD, saved, tiny_model_dir],
        180,
        cwd=REPO_ROOT,
        env=_env(),
        capture_output=True,
        text=True,
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


# ---- 1 process vs 2 processes on the same global batch: MGDA, CTWA (and the logprobs Gram scale) ------------------
# The worker's equiv mode trains every scenario of dist_worker.EQUIV_SCENARIOS on a global batch of EQUIV_BATCH
# completions: one plain process with EQUIV_BATCH per device, or 2 ranks with EQUIV_BATCH / 2 each. Completions are a
# fixed function of (step, global row, prompt) and TRL's sampler order is global, so both layouts train the same rows;
# with num_generations 4 and 6 rows per rank the middle group is split across the ranks. loss_type "dapo" divides by
# the global token count, so the gradient of the global batch is the same in both layouts. The optimizer is SGD:
# Adam's first steps are ≈ lr · sign(g) and turn the rounding differences of the two reduction orders (one sum over
# 12 rows vs two sums of 6 all-reduced) in near-zero gradient components into O(lr) parameter differences (6.7e-5
# after 4 steps at lr 1e-2, α then drifts by ~1e-6), which would test Adam rather than the trainer.
EQUIV_STEPS, EQUIV_BATCH, EQUIV_GENERATIONS, EQUIV_ITERATIONS = 4, 12, 4, 2
EQUIV_ARGS = (
    "--max-steps",
    str(EQUIV_STEPS),
    "--global-batch",
    str(EQUIV_BATCH),
    "--num-generations",
    str(EQUIV_GENERATIONS),
    "--num-iterations",
    str(EQUIV_ITERATIONS),
)
TOL = 1e-6
OBJECTIVE_NAMES = ("reward_has_digit", "reward_short", "reward_vowels")


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: str) -> dict[str, Any]:
    """Two launches for every scenario: ``one`` (the 1-process report) and ``two`` (the 2 rank reports)."""
    root = tmp_path_factory.mktemp("layouts")
    (one,), _ = _run_worker(root / "one", tiny_model_dir, "equiv", *EQUIV_ARGS, nproc=1, timeout=300)
    two, log = _run_worker(root / "two", tiny_model_dir, "equiv", *EQUIV_ARGS, timeout=300)
    assert one["world_size"] == 1 and one["backend"] is None, one["backend"]
    assert [r["rank"] for r in two] == [0, 1] and all(r["world_size"] == 2 and r["backend"] == "gloo" for r in two)
    return {"one": one, "two": two, "log": log}


@pytest.fixture(scope="module")
def zero3_mgda(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: str) -> tuple[list[dict], str]:
    """One ZeRO-3 launch (threshold 0): MGDA trained with gramian_space logprobs, then 'parameters' constructed."""
    root = tmp_path_factory.mktemp("zero3_mgda")
    config = json.loads(ZERO3_JSON.read_text())
    config["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    ds_path = root / "zero3_ci.json"
    ds_path.write_text(json.dumps(config))
    return _run_worker(
        root / "z3", tiny_model_dir, "zero3-mgda", "--deepspeed", str(ds_path), *EQUIV_ARGS, timeout=540
    )


def _scenario(layouts: dict[str, Any], name: str) -> tuple[dict, dict, dict]:
    one = layouts["one"]["scenarios"][name]
    two0, two1 = (rep["scenarios"][name] for rep in layouts["two"])
    assert one["distributed_type"].endswith("NO") and one["per_device_train_batch_size"] == EQUIV_BATCH, one
    for rep in (two0, two1):
        assert rep["wrapped_type"] == "DistributedDataParallel", (rep["wrapped_type"], layouts["log"])
        assert rep["per_device_train_batch_size"] == EQUIV_BATCH // NPROC, rep
    for rep in (one, two0, two1):
        assert rep["global_step"] == EQUIV_STEPS and rep["generation_batch_size"] == EQUIV_BATCH, rep
    return one, two0, two1


def _max_diff(a: list, b: list) -> float:
    """max |a - b| over equal-shaped nested lists of numbers."""
    import torch

    ta, tb = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    assert ta.shape == tb.shape, (ta.shape, tb.shape)
    return float((ta - tb).abs().max()) if ta.numel() else 0.0


def _check_params(one: dict, two0: dict, two1: dict) -> None:
    """Both ranks hold bitwise the same trained model, equal to the 1-process one to TOL, and every tensor moved."""
    import torch

    assert two0["params"].keys() == two1["params"].keys() == one["params"].keys()
    differ = [n for n in two0["params"] if two0["params"][n]["sha256"] != two1["params"][n]["sha256"]]
    assert not differ, f"parameters differ across ranks: {differ}"
    unchanged = [n for n, p in one["params"].items() if not p["changed"]]
    assert not unchanged and all(p["changed"] for p in two0["params"].values()), unchanged
    p1, p2 = torch.load(one["params_file"]), torch.load(two0["params_file"])
    assert p1.keys() == p2.keys()
    worst = max(p1, key=lambda n: float((p1[n] - p2[n]).abs().max()))
    assert float((p1[worst] - p2[worst]).abs().max()) <= TOL, (worst, float((p1[worst] - p2[worst]).abs().max()))


def _check_alpha(one: list[dict], two0: list[dict], two1: list[dict]) -> None:
    """MGDA's α at every micro-batch: bitwise identical on both ranks, equal to the 1-process α to TOL."""
    assert len(one) == len(two0) == len(two1) == EQUIV_STEPS  # one micro-batch per optimizer step
    assert two0 == two1, "the ranks solved different Gram matrices or chose different α"
    for i, (a, b) in enumerate(zip(one, two0, strict=True)):
        assert abs(sum(a["alpha"]) - 1) < 1e-6 and min(a["alpha"]) >= 0, a["alpha"]
        assert _max_diff(a["alpha"], b["alpha"]) <= TOL, (i, a["alpha"], b["alpha"])
        assert _max_diff(a["losses"], b["losses"]) <= TOL, (i, a["losses"], b["losses"])
    # Not a trivial α: interior (no objective dropped) at the first micro-batch, and it moves as training goes on.
    assert min(one[0]["alpha"]) > 0.05 and _max_diff(one[0]["alpha"], [1 / 3] * 3) > 0.01, one[0]["alpha"]
    assert _max_diff(one[0]["alpha"], one[-1]["alpha"]) > 0.05, [r["alpha"] for r in one]


def _check_logged_alpha(scenario: dict) -> None:
    """The logged mo/grad_weight/<name> of every step is that step's (only) micro-batch's α."""
    logged = scenario["logged_grad_weight"]
    assert len(logged) == EQUIV_STEPS, logged
    for entry, rec in zip(logged, scenario["records"], strict=True):
        values = [entry[f"mo/grad_weight/{name}"] for name in OBJECTIVE_NAMES]
        assert _max_diff(values, rec["alpha"]) <= TOL, (entry, rec["alpha"])


@pytest.mark.parametrize("space", ["logprobs", "parameters"])
def test_mgda_two_ranks_match_one_process(layouts: dict[str, Any], space: str) -> None:
    """MGDA (DDP, gloo): α identical on both ranks and equal to the 1-process α at every micro-batch; so is the model."""
    one, two0, two1 = _scenario(layouts, f"mgda-{space}")
    assert one["gramian_space"] == two0["gramian_space"] == space
    _check_alpha(one["records"], two0["records"], two1["records"])
    for rep in (one, two0, two1):
        _check_logged_alpha(rep)
    if space == "parameters":  # the all-reduced gradient vectors are the 1-process gradients: same Gram matrix
        for a, b in zip(one["records"], two0["records"], strict=True):
            scale = max(abs(v) for row in a["gram"] for v in row)
            assert _max_diff(a["gram"], b["gram"]) <= 1e-5 * scale, (a["gram"], b["gram"])
    _check_params(one, two0, two1)


def test_torchjd_gradvac_two_ranks_match_one_process(layouts: dict[str, Any]) -> None:
    """TorchJD's GradVac (stateful EMA targets, a seeded random order; DDP, gloo, logprobs): α bitwise identical on
    both ranks at every micro-batch, equal to the 1-process α, and to TorchJD's own GradVacWeighting replayed on the
    recorded Gram matrices with torch.manual_seed(0); the model agrees too."""
    import torch
    from torchjd.aggregation import GradVacWeighting

    one, two0, two1 = _scenario(layouts, "gradvac-logprobs")
    assert two0["records"] == two1["records"], "the ranks' GradVac states or draws diverged"
    assert len(one["records"]) == len(two0["records"]) == EQUIV_STEPS
    oracle = GradVacWeighting()
    torch.manual_seed(0)
    for i, (a, b) in enumerate(zip(one["records"], two0["records"], strict=True)):
        assert a["calls"] == b["calls"] == i + 1
        assert _max_diff(a["alpha"], b["alpha"]) <= TOL, (i, a["alpha"], b["alpha"])
        expected = oracle(torch.tensor(two0["records"][i]["gram"], dtype=torch.float64)).tolist()
        assert _max_diff(b["alpha"], expected) <= 1e-6, (i, b["alpha"], expected)
    assert _max_diff(one["records"][0]["alpha"], one["records"][-1]["alpha"]) > 1e-3, one["records"]
    _check_logged_alpha(one)
    _check_params(one, two0, two1)


@pytest.mark.parametrize("statistic", ["exact", "on_policy"])
def test_ctwa_two_ranks_match_one_process(layouts: dict[str, Any], statistic: str) -> None:
    """CTWA (DDP, gloo): after every generation batch, log-weights and EMA identical on both ranks and equal to the
    1-process run; the gathered per-completion signal is the 1-process signal in the same (global) order."""
    one, two0, two1 = _scenario(layouts, f"ctwa-{statistic}")
    batches = EQUIV_STEPS // EQUIV_ITERATIONS
    assert len(one["records"]) == len(two0["records"]) == batches, (one["records"], two0["records"])
    assert two0["records"] == two1["records"], "the ranks' CTWA states diverged"
    previous = None
    for i, (a, b) in enumerate(zip(one["records"], two0["records"], strict=True)):
        assert a["step"] == b["step"] == i * EQUIV_ITERATIONS, (a["step"], b["step"])
        assert a["rewards_sha256"] == b["rewards_sha256"], f"batch {i}: the layouts scored different completions"
        assert len(a["signal"]) == len(b["signal"]) == EQUIV_BATCH
        assert _max_diff(a["signal"], b["signal"]) <= 10 * TOL, (i, a["signal"], b["signal"])
        assert _max_diff(a["ema"], b["ema"]) <= TOL, (i, a["ema"], b["ema"])
        assert _max_diff(a["log_weights"], b["log_weights"]) <= TOL, (i, a["log_weights"], b["log_weights"])
        if statistic == "exact":
            assert a["unclip_frac"] == pytest.approx(b["unclip_frac"], abs=TOL) and 0 < a["unclip_frac"] <= 1
        else:
            assert a["unclip_frac"] is None and b["unclip_frac"] is None
        if previous is not None:  # open deficits: the weights move at every batch
            assert _max_diff(a["log_weights"], previous) > 1e-3, (a["log_weights"], previous)
        previous = a["log_weights"]
        for rep in (one, two0):
            entry = rep["logged_ctwa_ema"][i]
            assert _max_diff([entry[f"mo/ctwa/ema/{n}"] for n in OBJECTIVE_NAMES], a["ema"]) <= TOL, entry
    if statistic == "exact":  # the post-update signal really is not the on-policy one (ρ ≠ 1 after the update)
        on_policy = layouts["one"]["scenarios"]["ctwa-on_policy"]["records"][0]["signal"]
        assert _max_diff(one["records"][0]["signal"], on_policy) > 1e-3
    _check_params(one, two0, two1)


@pytest.mark.parametrize("space", ["parameters", "logprobs"])
@pytest.mark.parametrize("kind", ["dynamic", "gradnorm"])
def test_full_batch_gram_two_ranks(layouts: dict[str, Any], kind: str, space: str) -> None:
    """The Gram matrix of the full batch under micro-batching and DDP: 1 process × 1 micro-batch (the oracle) vs
    1 process × 2 micro-batches vs 2 ranks × 2 micro-batches of the same global batch give the same Gram matrix at
    every update (1e-6 relative, Frobenius), the same weights, and the same model; bitwise across ranks."""
    import torch

    oracle = layouts["one"]["scenarios"][f"{kind}-{space}"]
    one_mb = layouts["one"]["scenarios"][f"{kind}-{space}-mb2"]
    two0, two1 = (rep["scenarios"][f"{kind}-{space}-mb2"] for rep in layouts["two"])
    assert oracle["gradient_accumulation_steps"] == 1 and oracle["per_device_train_batch_size"] == EQUIV_BATCH
    assert one_mb["gradient_accumulation_steps"] == 2 and one_mb["per_device_train_batch_size"] == EQUIV_BATCH // 2
    for rep in (two0, two1):
        assert rep["wrapped_type"] == "DistributedDataParallel", (rep["wrapped_type"], layouts["log"])
        assert rep["gradient_accumulation_steps"] == 2 and rep["per_device_train_batch_size"] == EQUIV_BATCH // 4
        assert rep["global_step"] == EQUIV_STEPS
    assert two0["records"] == two1["records"], "the ranks saw different Gram matrices or took different weights"
    expected = EQUIV_STEPS // EQUIV_ITERATIONS if kind == "dynamic" else EQUIV_STEPS  # per generation batch / step
    for rep in (one_mb, two0):
        assert len(rep["records"]) == len(oracle["records"]) == expected, (rep["records"], oracle["records"])
        for a, b in zip(oracle["records"], rep["records"], strict=True):
            ga, gb = torch.tensor(a["gram"], dtype=torch.float64), torch.tensor(b["gram"], dtype=torch.float64)
            rel = float(torch.linalg.matrix_norm(ga - gb) / torch.linalg.matrix_norm(ga))
            assert rel <= 1e-6, (kind, space, rel, a["gram"], b["gram"])
            key = "weights" if kind == "dynamic" else "w_after"
            assert _max_diff(a[key], b[key]) <= TOL, (kind, space, key, a[key], b[key])
    _check_params(oracle, two0, two1)


@pytest.mark.parametrize("name", ["mgda-logprobs", "gradnorm-logprobs", "dynamic-logprobs"])
def test_logprobs_gramian_is_independent_of_the_world_size(layouts: dict[str, Any], name: str) -> None:
    one, two0, two1 = _scenario(layouts, name)
    assert two0["records"] == two1["records"]
    assert len(one["records"]) == len(two0["records"]) > 0
    for a, b in zip(one["records"], two0["records"], strict=True):
        scale = max(abs(v) for row in a["gram"] for v in row)
        assert _max_diff(a["gram"], b["gram"]) <= 1e-5 * scale, (name, a["gram"], b["gram"])
        for key in ("alpha", "w_after", "weights"):
            if key in a:
                assert _max_diff(a[key], b[key]) <= TOL, (name, key, a[key], b[key])
    for a, b in zip(one["logged_grad_norm"], two0["logged_grad_norm"], strict=True):
        assert a == pytest.approx(b, rel=1e-5), (a, b)


# ---- ZeRO-3 (2 ranks, every parameter partitioned): MGDA ----------------------------------------------------------
def test_zero3_mgda_logprobs_ranks_agree(zero3_mgda: tuple[list[dict], str]) -> None:
    """MGDA with gramian_space logprobs under ZeRO-3: it trains, the ranks agree on α at every micro-batch, the
    parameters were partitioned and changed."""
    reports, log = zero3_mgda
    r0, r1 = (rep["scenarios"]["mgda-logprobs"] for rep in reports)
    for rep in reports:
        assert rep["zero3"] == {"zero_stage": 3, "param_persistence_threshold": 0}, rep["zero3"]
    for rep in (r0, r1):
        assert rep["wrapped_type"] == "DeepSpeedEngine", (rep["wrapped_type"], log)
        assert rep["distributed_type"].endswith("DEEPSPEED") and rep["world_size"] == NPROC, rep["distributed_type"]
        assert rep["global_step"] == EQUIV_STEPS and rep["gramian_space"] == "logprobs"
        for name, p in rep["partition"].items():
            assert p["ds_status"] == "NOT_AVAILABLE" and p["local_numel"] == 0, (name, p)
            assert p["shard_numel"] == math.ceil(p["ds_numel"] / NPROC), (name, p)
        _check_logged_alpha(rep)
    assert len(r0["records"]) == EQUIV_STEPS
    assert r0["records"] == r1["records"], "the ranks disagree on the Gram matrix or on α"
    alphas = [rec["alpha"] for rec in r0["records"]]
    assert all(abs(sum(a) - 1) < 1e-6 and min(a) > 0 for a in alphas), alphas
    assert _max_diff(alphas[0], alphas[-1]) > 0.05, alphas
    p0, p1 = r0["params"], r1["params"]
    assert p0.keys() == p1.keys() and p0
    assert all(p["changed"] for p in p0.values()), [n for n, p in p0.items() if not p["changed"]]
    assert all(p0[n]["sha256"] == p1[n]["sha256"] for n in p0), "the gathered parameters differ across ranks"


def test_zero3_mgda_matches_one_process(zero3_mgda: tuple[list[dict], str], layouts: dict[str, Any]) -> None:
    """The same global batch under ZeRO-3 (2 ranks) and on 1 plain process: same α at every micro-batch, same model."""
    reports, _ = zero3_mgda
    z3 = reports[0]["scenarios"]["mgda-logprobs"]
    one = layouts["one"]["scenarios"]["mgda-logprobs"]
    _check_alpha(one["records"], z3["records"], reports[1]["scenarios"]["mgda-logprobs"]["records"])
    _check_params(one, z3, reports[1]["scenarios"]["mgda-logprobs"])


def test_zero3_refuses_the_parameter_gramian(zero3_mgda: tuple[list[dict], str]) -> None:
    """gramian_space 'parameters' under ZeRO-3: a clear ValueError at construction, on every rank."""
    reports, log = zero3_mgda
    for rep in reports:
        assert rep["parameters_error"] == {
            "type": "ValueError",
            "message": "weighting 'mgda' with gramian_space 'parameters' is not supported under ZeRO-3; "
            "set gramian_space: logprobs",
        }, (rep["parameters_error"], log)
