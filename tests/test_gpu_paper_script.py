"""scripts/gpu_paper.py (``gpu_check.py --scale paper``): its CPU rehearsal trains, and its stage arithmetic is right."""

import json
import os
import sys

import pytest


sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
import gpu_paper


def test_stage_split_is_the_mean_over_measured_steps_with_nested_calls_subtracted():
    warm = {"step_s": 99.0, "generation_s": 50.0}
    steps = [
        warm,
        warm,
        {"step_s": 10.0, "generation_s": 6.0, "scoring_s": 0.5, "batch_s": 7.0, "training_step_s": 9.0,
         "gram_s": 1.0, "gram_batch_s": 0.2, "post_update_s": 0.6},
        {"step_s": 2.0, "training_step_s": 1.5, "gram_s": 0.4},
    ]  # fmt: skip
    out = gpu_paper.summarise(steps, warmup_steps=2)
    assert out["measured_steps"] == 2
    assert out["s_per_step"] == pytest.approx(6.0)
    st = out["stages"]
    assert st["generation"] == pytest.approx(3.0)
    assert st["scoring"] == pytest.approx(0.25)
    assert st["batch prep (ref/old logps, advantages)"] == pytest.approx((7.0 - 6.0 - 0.5) / 2)
    # training_step holds the batch preparation (TRL generates inside it) and the Gram work of the micro-batches
    assert st["forward/backward (excl. Gram)"] == pytest.approx((10.5 - 7.0 - 1.4) / 2)
    assert st["Gram (per-objective gradients + products)"] == pytest.approx((1.4 + 0.2) / 2)
    assert st["post-update forward"] == pytest.approx((0.6 - 0.2) / 2)  # the batch Gram runs inside it
    assert st["optimizer step + rest"] == pytest.approx((12.0 - 10.5 - 0.6) / 2)
    assert sum(st.values()) == pytest.approx(out["s_per_step"])


def test_cpu_rehearsal_trains_every_parameter_and_renders(tmp_path):
    out = tmp_path / "out"
    argv = ["--shape", "small", "--device", "cpu", "--completion-length", "4", "--out", str(out)]
    gpu_paper.main([*argv, "--only", "linear;dynamic (parameters, layers 10-25)"])
    report = json.loads((out / "gpu_paper.json").read_text())
    assert [r["name"] for r in report["runs"]] == ["linear", "dynamic (parameters, layers 10-25)"]
    for run in report["runs"]:
        assert run["error"] is None and run["finite_losses"] and run["model_freed"]
        moved, total = map(int, run["params_moved"].split("/"))
        assert moved == total > 0
        assert run["measured_steps"] == 2 and run["s_per_step"] > 0
    linear, dynamic = report["runs"]
    assert linear["stages"]["Gram (per-objective gradients + products)"] == 0
    assert dynamic["stages"]["Gram (per-objective gradients + products)"] > 0
    assert dynamic["trainer_args"]["gramian_params"] == gpu_paper.LAYERS_10_25
    assert linear["trainer_args"]["beta"] == 0.001  # read from recipes/qwen2.5-1.5b/linear.yaml
    table = gpu_paper.render(report)
    assert table.count("\n| ") == 2 and "| dynamic (parameters, layers 10-25) |" in table


def test_cpu_rehearsal_of_the_torchjd_long_and_rollout_rows(tmp_path):
    """The rows added for the TorchJD weightings, the long completions and continuous batching, and the greedy
    rollout comparison, rehearsed on the small shape (a rehearsal: the numbers are a GPU's to give)."""
    out = tmp_path / "out"
    only = "upgrad (logprobs);linear (1024 tokens);linear (continuous batching, bf16 weights)"
    argv = ["--shape", "small", "--device", "cpu", "--completion-length", "4", "--long-length", "6", "--out", str(out)]
    gpu_paper.main([*argv, "--only", only, "--no-zero3", "--rollout"])
    report = json.loads((out / "gpu_paper.json").read_text())
    runs = {r["name"]: r for r in report["runs"]}
    assert list(runs) == only.split(";")
    for run in runs.values():
        assert run["error"] is None and run["finite_losses"] and run["params_moved"].split("/")[0] != "0"
        assert run["generation_tokens_per_s"] > 0
    assert [runs[n]["param_dtypes_after"] for n in only.split(";")] == [["torch.float32"]] * 2 + [["torch.bfloat16"]]
    assert runs["upgrad (logprobs)"]["trainer_args"]["gramian_space"] == "logprobs"
    assert runs["upgrad (logprobs)"]["trainer_args"]["weighting"] == "upgrad"
    assert [runs[n]["completion_length"] for n in only.split(";")] == [4, 6, 4]
    # 16 completions of exactly 6 tokens per generation batch (min_new_tokens = max_completion_length)
    assert runs["linear (1024 tokens)"]["completion_tokens_per_generation"] == 6 * 4 * 4
    rollout = report["rollout"]
    assert rollout["paths"]["generate"]["tokens"] == 16 * 4  # 16 prompts, 4 new tokens each
    assert "error" not in rollout["paths"]["generate_batch"]
    agreement = rollout["agreement"]
    # greedy in float32 on the CPU: the two paths choose the same tokens (on a GPU in bf16 this is what is measured)
    assert agreement["identical_share"] == 1.0 and agreement["max_abs_dlogp_shared_prefix"] == 0.0
    table = gpu_paper.render(report)
    assert "| linear (continuous batching, bf16 weights) |" in table and "generated tokens/s (training)" in table
    assert "| generate_batch |" in table and "identical completions" in table
