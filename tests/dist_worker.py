"""Multi-process worker for tests/test_distributed.py: a few MOGRPOTrainer steps, then a JSON report per rank.

Run under torchrun (gloo on the CPU)::

    PYTHONPATH=<repo root> python -m torch.distributed.run --nproc_per_node 2 tests/dist_worker.py \\
        MODEL_DIR OUT_PREFIX {ddp,zero3} [--deepspeed ZERO3_JSON]

Every rank writes ``OUT_PREFIX.rank<R>.json`` with:

* ``trajectory``: one entry per training generation batch, recorded by the weighting and the trainer themselves: the
  gathered reward matrix r the weighting saw (values and a sha256), the weights used to combine it, the full (N,)
  advantages, the weights and logits after ``update``, and this rank's slice of the advantages;
* ``params``: per-parameter sha256 of the final (gathered, under ZeRO-3) weights and whether each one moved away from
  the initial checkpoint;
* ``zero3`` (zero3 mode only): partitioning evidence (``ds_status``, local numel, shard sizes) taken outside any gather,
  and the directory ``trainer.save_model`` wrote (the test reloads it in a fresh process).

Nothing here changes what the trainer computes: the recording subclasses only observe.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any


REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from mo_align.trainer import MOGRPOTrainer  # noqa: E402
from tests.helpers import (  # noqa: E402
    DriftWeighting,
    reward_has_digit,
    reward_short,
    reward_vowels,
    tiny_config,
    tiny_dataset,
)


def sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def as_list(t: torch.Tensor) -> list[Any]:
    """Tensor -> nested list, NaN -> None (strict JSON)."""

    def clean(x: Any) -> Any:
        if isinstance(x, list):
            return [clean(v) for v in x]
        return None if isinstance(x, float) and math.isnan(x) else x

    return clean(t.detach().cpu().tolist())


class RecordingDrift(DriftWeighting):
    """DriftWeighting that logs what it was given and what it returned, into the record the trainer opened.

    Independent of the order of ``combine`` and ``update`` (``update_first``); counts the calls of each.
    """

    def __init__(self, num_objectives: int) -> None:
        super().__init__(num_objectives)
        self.records: list[dict[str, Any]] = []
        self.current: dict[str, Any] | None = None

    def combine(self, stats):
        advantages = super().combine(stats)
        if self.current is not None:
            self.current["combine_calls"] += 1
            self.current.update(
                {
                    "step": stats.step,
                    "group_size": stats.group_size,
                    "rewards_shape": list(stats.rewards.shape),
                    "rewards_sha256": sha256(stats.rewards),
                    "rewards": as_list(stats.rewards),
                    "weights_used": self.weights().tolist(),
                    "advantages_full": as_list(advantages),
                    "advantages_full_sha256": sha256(advantages),
                }
            )
        return advantages

    def update(self, stats):
        metrics = super().update(stats)
        if self.current is not None:
            self.current["update_calls"] += 1
            self.current.update(
                {
                    "update_rewards_sha256": sha256(stats.rewards),
                    "weights": self.weights().tolist(),
                    "logits": self.logits.tolist(),
                    "updates": self.updates,
                }
            )
        return metrics


class RecordingTrainer(MOGRPOTrainer):
    """Opens one record per training generation batch and adds this rank's slice of the advantages to it."""

    def _generate_and_score_completions(self, inputs):
        training = self.model.training
        if training:
            self.weighting.current = {"combine_calls": 0, "update_calls": 0}
        try:
            out = super()._generate_and_score_completions(inputs)
        finally:
            record, self.weighting.current = self.weighting.current, None
        if training:
            adv = out["advantages"]
            record.update(
                {
                    "local_advantages_shape": list(adv.shape),
                    "local_advantages": as_list(adv.float()),
                    "local_completion_ids_shape": list(out["completion_ids"].shape),
                    "global_step_at_generation": self.state.global_step,
                }
            )
            self.weighting.records.append(record)
        return out


class PartitionProbe(TrainerCallback):
    """Under ZeRO-3: at the end of every optimizer step, how many parameters are partitioned away on this rank."""

    def __init__(self) -> None:
        self.trainer: MOGRPOTrainer | None = None
        self.per_step: list[dict[str, int]] = []

    def on_step_end(self, args, state, control, **kwargs):
        module = self.trainer.accelerator.unwrap_model(self.trainer.model_wrapped)
        params = list(module.parameters())
        self.per_step.append(
            {
                "step": state.global_step,
                "params": len(params),
                "not_available": sum(
                    getattr(p, "ds_status", None) is not None and p.ds_status.name == "NOT_AVAILABLE" for p in params
                ),
                "local_numel": sum(p.numel() for p in params),
            }
        )


def partition_evidence(module: torch.nn.Module) -> dict[str, Any]:
    """ds_status / local numel of every parameter, read outside any gather."""
    rows = {}
    for name, p in module.named_parameters():
        rows[name] = {
            "ds_status": p.ds_status.name if hasattr(p, "ds_status") else None,
            "local_numel": p.numel(),
            "ds_numel": int(getattr(p, "ds_numel", -1)),
            "shard_numel": int(p.ds_tensor.numel()) if getattr(p, "ds_tensor", None) is not None else -1,
        }
    return rows


def final_params(module: torch.nn.Module, initial: dict[str, torch.Tensor], zero3: bool) -> dict[str, Any]:
    named = dict(module.named_parameters())
    if zero3:
        import deepspeed

        ctx = deepspeed.zero.GatheredParameters(list(named.values()), modifier_rank=None)
    else:
        ctx = contextlib.nullcontext()
    out: dict[str, Any] = {}
    with ctx:
        for name, p in named.items():
            ref = initial.get(name)
            out[name] = {
                "sha256": sha256(p.float()),
                "shape": list(p.shape),
                "in_checkpoint": ref is not None,
                "changed": None if ref is None else not torch.equal(p.detach().cpu().float(), ref.float()),
                "max_abs_diff": None if ref is None else float((p.detach().cpu().float() - ref.float()).abs().max()),
            }
    return out


def cpu_deepspeed_overrides() -> dict[str, Any]:
    """Make ``TrainingArguments(deepspeed=...)`` really run 2-rank DeepSpeed on a machine without a GPU.

    Under torchrun, neither obvious setting works there (accelerate 1.15 / transformers 5.24, checked):

    * ``use_cpu=True``: transformers builds a MULTI_CPU gloo state and never calls ``deepspeed.init_distributed``,
      so ``zero.Init`` inside ``from_pretrained`` counts one rank and rejects the "auto"-filled train_batch_size
      (8 != 4 * 1 * 1).
    * ``use_cpu=False``: ``PartialState`` only knows backends for accelerator devices, finds none and reports
      ``num_processes == 1`` although torch.distributed has 2 ranks; the "auto" batch sizes are filled for one rank
      and DeepSpeed rejects them (4 != 4 * 1 * 2).

    So build the state the way ``accelerate launch`` with a DEEPSPEED config does, naming the gloo backend, and let
    the training arguments reuse it (``use_configured_state``). The test environment hides GPUs, so this path is
    the same on every machine.
    """
    from accelerate import PartialState

    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    state = PartialState(backend="gloo")
    if state.num_processes != int(os.environ.get("WORLD_SIZE", "1")):
        raise RuntimeError(
            f"accelerate sees {state.num_processes} processes, torchrun started {os.environ['WORLD_SIZE']}"
        )
    return {"use_cpu": False, "accelerator_config": {"use_configured_state": True}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("out_prefix")
    parser.add_argument("mode", choices=["ddp", "zero3"])
    parser.add_argument("--deepspeed", default=None, help="DeepSpeed JSON (zero3 mode)")
    parser.add_argument("--max-steps", type=int, default=3)
    parser.add_argument("--per-device-batch", type=int, default=4)
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--steps-per-generation", type=int, default=None)
    args = parser.parse_args(argv)
    if args.mode == "zero3" and not args.deepspeed:
        parser.error("zero3 mode needs --deepspeed")

    t0 = time.perf_counter()
    rank = int(os.environ.get("RANK", "0"))
    prefix = args.out_prefix
    initial = load_file(os.path.join(args.model_dir, "model.safetensors"))

    overrides: dict[str, Any] = {
        "max_steps": args.max_steps,
        "per_device_train_batch_size": args.per_device_batch,
        "num_generations": args.num_generations,
        "steps_per_generation": args.steps_per_generation,
    }
    if args.mode == "zero3":
        overrides["deepspeed"] = args.deepspeed
        overrides.update(cpu_deepspeed_overrides())
    config = tiny_config(f"{prefix}.trainer_out", **overrides)

    weighting = RecordingDrift(3)
    probe = PartitionProbe()
    trainer = RecordingTrainer(
        model=args.model_dir,
        reward_funcs=[reward_has_digit, reward_short, reward_vowels],
        args=config,
        train_dataset=tiny_dataset(16),
        weighting=weighting,
        callbacks=[probe] if args.mode == "zero3" else None,
    )
    probe.trainer = trainer
    if trainer.weighting is not weighting:
        raise RuntimeError("MOGRPOTrainer did not keep the injected weighting instance")
    t_init = time.perf_counter()
    trainer.train()
    t_train = time.perf_counter()

    acc = trainer.accelerator
    module = acc.unwrap_model(trainer.model_wrapped)
    report: dict[str, Any] = {
        "rank": acc.process_index,
        "env_rank": rank,
        "world_size": acc.num_processes,
        "dist_initialized": dist.is_initialized(),
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "distributed_type": str(acc.distributed_type),
        "wrapped_type": type(trainer.model_wrapped).__name__,
        "mode": args.mode,
        "max_steps": args.max_steps,
        "global_step": trainer.state.global_step,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "num_generations": config.num_generations,
        "steps_per_generation": config.steps_per_generation,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "num_iterations": config.num_iterations,
        "generation_batch_size": config.generation_batch_size,
        "update_first": bool(getattr(trainer.weighting, "update_first", False)),
        "trajectory": weighting.records,
        "final_weights": trainer.weighting.weights().tolist(),
        "final_logits": trainer.weighting.logits.tolist(),
        "logged_weights": [
            {k: v for k, v in entry.items() if k.startswith("mo/weight/")}
            for entry in trainer.state.log_history
            if any(k.startswith("mo/weight/") for k in entry)
        ],
    }
    if args.mode == "zero3":
        engine = trainer.model_wrapped
        report["zero3"] = {
            "zero_stage": int(engine.zero_optimization_stage()),
            "param_persistence_threshold": engine.zero_param_persistence_threshold(),
            "partition": partition_evidence(module),
            "per_step": probe.per_step,
        }
    report["params"] = final_params(module, initial, zero3=args.mode == "zero3")

    if args.mode == "zero3":
        save_dir = f"{prefix}.saved"
        trainer.save_model(save_dir)  # collective: every rank takes part in the 16-bit gather
        report["zero3"]["saved_dir"] = save_dir
        report["zero3"]["partition_after_save"] = partition_evidence(module)
    acc.wait_for_everyone()
    report["timing_s"] = {
        "init": round(t_init - t0, 2),
        "train": round(t_train - t_init, 2),
        "total": round(time.perf_counter() - t0, 2),
    }
    path = f"{prefix}.rank{acc.process_index}.json"
    with open(path + ".tmp", "w") as f:
        json.dump(report, f, indent=1, allow_nan=False)
    os.replace(path + ".tmp", path)
    acc.wait_for_everyone()
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
