"""Multi-process worker for tests/test_distributed.py: a few MOGRPOTrainer steps, then a JSON report per rank.

Run under torchrun (gloo on the CPU)::

    PYTHONPATH=<repo root> python -m torch.distributed.run --nproc_per_node 2 tests/dist_worker.py \\
        MODEL_DIR OUT_PREFIX {ddp,zero3,equiv,zero3-mgda} [--deepspeed ZERO3_JSON]

Every rank writes ``OUT_PREFIX.rank<R>.json`` with:

* ``trajectory``: one entry per training generation batch, recorded by the weighting and the trainer themselves: the
  gathered reward matrix r the weighting saw (values and a sha256), the weights used to combine it, the full (N,)
  advantages, the weights and logits after ``update``, and this rank's slice of the advantages;
* ``params``: per-parameter sha256 of the final (gathered, under ZeRO-3) weights and whether each one moved away from
  the initial checkpoint;
* ``zero3`` (zero3 mode only): partitioning evidence (``ds_status``, local numel, shard sizes) taken outside any gather,
  and the directory ``trainer.save_model`` wrote (the test reloads it in a fresh process).

Modes ``equiv`` (any number of ranks, 1 included) and ``zero3-mgda`` (2 ranks, ZeRO-3) compare layouts instead: the
same global batch of ``--global-batch`` completions is trained on 1 process or split over 2, and the report holds, per
scenario (:data:`EQUIV_SCENARIOS`), what the weighting computed at every micro-batch (MGDA, GradNorm: the global Gram
matrix, the losses and α) or generation batch (CTWA: the gathered signal, the EMA and the log-weights; Dynamic: the
Gram matrix and the weights), and the final parameters (``OUT_PREFIX.<scenario>.params.pt``, rank 0). Generation is
replaced (:class:`FixedCompletionsTrainer`) by completions that are a fixed function of the prompt, the row's global
index and the step, so both layouts see the same completions without sampling; TRL's data order is global already.

Nothing here changes what the trainer computes: the recording subclasses only observe, and the fixed completions
only replace the sampler.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import math
import os
import random
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

from mo_align.testing import SPECIAL_TOKENS  # noqa: E402
from mo_align.trainer import MOGRPOTrainer  # noqa: E402
from mo_align.weightings.ctwa import CTWAWeighting  # noqa: E402
from mo_align.weightings.dynamic import DynamicWeighting  # noqa: E402
from mo_align.weightings.gradnorm import GradNormWeighting  # noqa: E402
from mo_align.weightings.jd import JDGradVac  # noqa: E402
from mo_align.weightings.mgda import MGDAWeighting  # noqa: E402
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

    from mo_align.deepspeed_setup import prepare_deepspeed

    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    # Under `accelerate launch`, MOGRPOConfig runs this before transformers builds the state; here the state comes
    # first, so run it first too (no CPU comm-op build, no wait on a stale extension lock).
    prepare_deepspeed()
    state = PartialState(backend="gloo")
    if state.num_processes != int(os.environ.get("WORLD_SIZE", "1")):
        raise RuntimeError(
            f"accelerate sees {state.num_processes} processes, torchrun started {os.environ['WORLD_SIZE']}"
        )
    return {"use_cpu": False, "accelerator_config": {"use_configured_state": True}}


# ---- layout equivalence (modes equiv and zero3-mgda) -------------------------------------------------------------
OBJECTIVES = (reward_has_digit, reward_short, reward_vowels)
# Scenario -> (weighting, config overrides). Every scenario trains the same global batch with loss_type "dapo"
# (normalised by the global token count, so the gradient of the global batch does not depend on the layout).
EQUIV_SCENARIOS: dict[str, tuple[str, dict[str, Any]]] = {
    "mgda-logprobs": ("mgda", {"gramian_space": "logprobs"}),
    "mgda-parameters": ("mgda", {"gramian_space": "parameters"}),
    "gradnorm-logprobs": ("gradnorm", {"gramian_space": "logprobs"}),
    "ctwa-exact": ("ctwa-exact", {}),
    "ctwa-on_policy": ("ctwa-on_policy", {}),
    "dynamic-logprobs": ("dynamic", {"gramian_space": "logprobs"}),
    # a TorchJD weighting that is stateful (EMA targets) and random (a seeded stream): jd:GradVac
    "gradvac-logprobs": ("jd:GradVac", {"gramian_space": "logprobs"}),
    # full-batch Gram matrices under micro-batching (test_full_batch_gram_two_ranks): the "-mb2" layouts split each
    # rank's share of the batch into 2 micro-batches of one optimizer step; compared with the 1-process, 1
    # micro-batch layouts of the same strategy and space
    "dynamic-parameters": ("dynamic", {"gramian_space": "parameters"}),
    "gradnorm-parameters": ("gradnorm", {"gramian_space": "parameters"}),
    "dynamic-parameters-mb2": ("dynamic", {"gramian_space": "parameters", "micro_batches": 2}),
    "gradnorm-parameters-mb2": ("gradnorm", {"gramian_space": "parameters", "micro_batches": 2}),
    "dynamic-logprobs-mb2": ("dynamic", {"gramian_space": "logprobs", "micro_batches": 2}),
    "gradnorm-logprobs-mb2": ("gradnorm", {"gramian_space": "logprobs", "micro_batches": 2}),
}


class FixedCompletionsTrainer(MOGRPOTrainer):
    """Replaces sampling by completions that depend only on (global step, global row index, prompt tokens).

    TRL's ``RepeatSampler`` order is global and each rank takes a contiguous slice of the generation batch (gathered
    back in rank order), so the global row index ``process_index * n_local + i`` names the same prompt copy whatever
    the number of processes: 1 process × N rows and 2 processes × N/2 rows generate the same N completions. Lengths
    vary (1 .. max_completion_length, some end with EOS, some are truncated) and 30 % of the tokens are digits, so
    every objective has variance within most groups.
    """

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        tok = self.processing_class
        eos = tok.eos_token_id
        digits = tok.convert_tokens_to_ids(list("0123456789"))
        first, vocab = len(SPECIAL_TOKENS), len(tok)
        max_len = self.args.max_completion_length
        offset = self.accelerator.process_index * len(prompt_ids)
        completions = []
        for i, ids in enumerate(prompt_ids):
            key = f"{self.state.global_step}|{offset + i}|{','.join(map(str, ids))}"
            rng = random.Random(hashlib.sha256(key.encode()).digest())
            body = rng.randint(1, max_len)
            row = [rng.choice(digits) if rng.random() < 0.3 else rng.randrange(first, vocab) for _ in range(body)]
            if body < max_len and rng.random() < 0.6:
                row.append(eos)
            completions.append(row)
        return completions, None


def _tensor_record(t: torch.Tensor) -> list[Any]:
    return as_list(t.double())


class RecordingMGDA(MGDAWeighting):
    """MGDA that records, at every micro-batch, the global Gram matrix and losses it was given and the α it chose."""

    def __init__(self, num_objectives: int) -> None:
        super().__init__(num_objectives)
        self.records: list[dict[str, Any]] = []

    def gradient_weights(self, gram, losses):
        alpha, extra = super().gradient_weights(gram, losses)
        self.records.append(
            {"gram": _tensor_record(gram), "losses": _tensor_record(losses), "alpha": alpha.tolist(), **extra}
        )
        return alpha, extra


class RecordingGradNorm(GradNormWeighting):
    """GradNorm that records the Gram matrix, the weights used and the state after every micro-batch."""

    def __init__(self, num_objectives: int) -> None:
        super().__init__(num_objectives)
        self.records: list[dict[str, Any]] = []

    def gradient_weights(self, gram, losses):
        used, extra = super().gradient_weights(gram, losses)
        self.records.append(
            {
                "gram": _tensor_record(gram),
                "losses": _tensor_record(losses),
                "alpha": used.tolist(),
                "w_after": self.w.tolist(),
                **extra,
            }
        )
        return used, extra


class RecordingGradVac(JDGradVac):
    """TorchJD's GradVac that records, at every micro-batch, the global Gram matrix and the α it chose."""

    def __init__(self, num_objectives: int) -> None:
        super().__init__(num_objectives)
        self.records: list[dict[str, Any]] = []

    def gradient_weights(self, gram, losses):
        alpha, extra = super().gradient_weights(gram, losses)
        self.records.append({"gram": _tensor_record(gram), "alpha": alpha.tolist(), "calls": self.calls})
        return alpha, extra


class RecordingDynamic(DynamicWeighting):
    """Dynamic weighting that records the accumulated Gram matrix and the weights after every update."""

    def __init__(self, num_objectives: int) -> None:
        super().__init__(num_objectives, regularization=0.01)  # a visible, unsaturated mirror step at lr 0.1
        self.records: list[dict[str, Any]] = []

    def update(self, stats):
        metrics = super().update(stats)
        gram = stats.extras["gramian"]
        self.records.append({"step": stats.step, "gram": _tensor_record(gram), "weights": self.w.tolist()})
        return metrics


class RecordingCTWA(CTWAWeighting):
    """CTWA that records, after every update (one per generation batch), the signal it used and its new state."""

    def __init__(self, num_objectives: int, **kwargs: Any) -> None:
        super().__init__(num_objectives, **kwargs)
        self.records: list[dict[str, Any]] = []

    def update(self, stats):
        metrics = super().update(stats)
        self.records.append(
            {
                "step": stats.step,
                "rewards_sha256": sha256(stats.rewards),
                "signal": _tensor_record(stats.extras["signal"]),
                "log_weights": self.log_weights.tolist(),
                "ema": self.ema.tolist(),
                "weights": self.weights().tolist(),
                "unclip_frac": stats.extras.get("unclip_frac"),
            }
        )
        return metrics


def make_weighting(kind: str):
    if kind == "mgda":
        return RecordingMGDA(len(OBJECTIVES))
    if kind == "gradnorm":
        return RecordingGradNorm(len(OBJECTIVES))
    if kind == "dynamic":
        return RecordingDynamic(len(OBJECTIVES))
    if kind == "jd:GradVac":
        return RecordingGradVac(len(OBJECTIVES))
    statistic = kind.removeprefix("ctwa-")
    # High targets and step: the deficits stay open, so the log-weights move at every generation batch.
    return RecordingCTWA(len(OBJECTIVES), statistic=statistic, cov_targets=0.5, lambda_lr=0.5)


def equiv_config(out_dir: str, args: argparse.Namespace, world: int, **overrides: Any):
    """The global batch split over ``world`` processes; loss_type "dapo" (global token count) and, by default, SGD.

    SGD because Adam's first steps are ≈ lr · sign(g): the rounding differences between one reduction over N rows and
    two over N/2 (then all-reduced) in near-zero gradient components would become O(lr) parameter differences.
    """
    micro = overrides.pop("micro_batches", 1)  # micro-batches per optimizer step (= per generation batch)
    if args.global_batch % (world * micro):
        raise ValueError(f"global batch {args.global_batch} does not split over {world} processes x {micro}")
    return tiny_config(
        out_dir,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.global_batch // (world * micro),
        gradient_accumulation_steps=micro,
        steps_per_generation=micro,
        num_generations=args.num_generations,
        num_iterations=args.num_iterations,
        loss_type="dapo",
        optim=args.optim,
        learning_rate=args.lr,
        **overrides,
    )


def logged(trainer: MOGRPOTrainer, prefix: str) -> list[dict[str, float]]:
    return [
        {k: v for k, v in entry.items() if k.startswith(prefix)}
        for entry in trainer.state.log_history
        if any(k.startswith(prefix) for k in entry)
    ]


def run_scenario(
    trainer: MOGRPOTrainer, prefix: str, name: str, initial: dict[str, torch.Tensor], zero3: bool
) -> dict[str, Any]:
    """Train, then the scenario's records, logged metrics and final parameters (saved to a file on rank 0)."""
    t0 = time.perf_counter()
    trainer.train()
    acc = trainer.accelerator
    module = acc.unwrap_model(trainer.model_wrapped)
    params = final_params(module, initial, zero3=zero3)
    path = f"{prefix}.{name}.params.pt"
    named = dict(module.named_parameters())
    if zero3:
        import deepspeed

        ctx = deepspeed.zero.GatheredParameters(list(named.values()), modifier_rank=None)
    else:
        ctx = contextlib.nullcontext()
    with ctx:
        if acc.is_main_process:
            torch.save({n: p.detach().cpu().float().clone() for n, p in named.items()}, path)
    out = {
        "world_size": acc.num_processes,
        "distributed_type": str(acc.distributed_type),
        "wrapped_type": type(trainer.model_wrapped).__name__,
        "global_step": trainer.state.global_step,
        "per_device_train_batch_size": trainer.args.per_device_train_batch_size,
        "gradient_accumulation_steps": trainer.args.gradient_accumulation_steps,
        "generation_batch_size": trainer.args.generation_batch_size,
        "gramian_space": trainer.args.gramian_space,
        "records": trainer.weighting.records,
        "logged_grad_weight": logged(trainer, "mo/grad_weight/"),
        "logged_grad_norm": logged(trainer, "mo/grad_norm/"),
        "logged_ctwa_ema": logged(trainer, f"mo/{trainer.weighting.name}/ema/"),
        "params": params,
        "params_file": path if acc.is_main_process else None,
        "train_s": round(time.perf_counter() - t0, 2),
    }
    if zero3:
        out["partition"] = partition_evidence(module)
    return out


def main_equiv(args: argparse.Namespace, initial: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Every scenario in turn, in this process group (one launch for all: the imports dominate)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    report: dict[str, Any] = {"scenarios": {}}
    for name in args.scenarios.split(","):
        kind, overrides = EQUIV_SCENARIOS[name]
        config = equiv_config(f"{args.out_prefix}.runs/{name}", args, world, **dict(overrides))
        trainer = FixedCompletionsTrainer(
            model=args.model_dir,
            reward_funcs=list(OBJECTIVES),
            args=config,
            train_dataset=tiny_dataset(16),
            weighting=make_weighting(kind),
        )
        report["scenarios"][name] = run_scenario(trainer, args.out_prefix, name, initial, zero3=False)
        trainer.accelerator.wait_for_everyone()
        del trainer
        gc.collect()
    return report


def main_zero3_mgda(args: argparse.Namespace, initial: dict[str, torch.Tensor]) -> dict[str, Any]:
    """MGDA under ZeRO-3: train with gramian_space logprobs, then check that 'parameters' is refused at construction."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    ds = {"deepspeed": args.deepspeed, **cpu_deepspeed_overrides()}
    config = equiv_config(f"{args.out_prefix}.runs/zero3-mgda", args, world, gramian_space="logprobs", **ds)
    trainer = FixedCompletionsTrainer(
        model=args.model_dir,
        reward_funcs=list(OBJECTIVES),
        args=config,
        train_dataset=tiny_dataset(16),
        weighting=make_weighting("mgda"),
    )
    report: dict[str, Any] = {
        "scenarios": {"mgda-logprobs": run_scenario(trainer, args.out_prefix, "zero3", initial, zero3=True)}
    }
    engine = trainer.model_wrapped
    report["zero3"] = {
        "zero_stage": int(engine.zero_optimization_stage()),
        "param_persistence_threshold": engine.zero_param_persistence_threshold(),
    }
    trainer.accelerator.wait_for_everyone()
    del trainer, engine
    gc.collect()
    # accelerate refuses a second Accelerator with a DeepSpeed plugin in one process; forget the first one's state
    # (the process group, held by PartialState, stays) so that the refused configuration is really constructed.
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()
    GradientState._reset_state()

    config = equiv_config(f"{args.out_prefix}.runs/zero3-params", args, world, gramian_space="parameters", **ds)
    try:
        FixedCompletionsTrainer(
            model=args.model_dir,
            reward_funcs=list(OBJECTIVES),
            args=config,
            train_dataset=tiny_dataset(16),
            weighting=make_weighting("mgda"),
        )
    except ValueError as exc:
        report["parameters_error"] = {"type": type(exc).__name__, "message": str(exc)}
    else:
        report["parameters_error"] = None
    return report


def main_layouts(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    initial = load_file(os.path.join(args.model_dir, "model.safetensors"))
    report = main_equiv(args, initial) if args.mode == "equiv" else main_zero3_mgda(args, initial)
    rank = int(os.environ.get("RANK", "0"))
    report.update(
        {
            "rank": rank,
            "world_size": int(os.environ.get("WORLD_SIZE", "1")),
            "backend": dist.get_backend() if dist.is_initialized() else None,
            "total_s": round(time.perf_counter() - t0, 2),
        }
    )
    path = f"{args.out_prefix}.rank{rank}.json"
    with open(path + ".tmp", "w") as f:
        json.dump(report, f, indent=1, allow_nan=False)
    os.replace(path + ".tmp", path)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("out_prefix")
    parser.add_argument("mode", choices=["ddp", "zero3", "equiv", "zero3-mgda"])
    parser.add_argument("--deepspeed", default=None, help="DeepSpeed JSON (zero3 and zero3-mgda modes)")
    parser.add_argument("--max-steps", type=int, default=3)
    parser.add_argument("--per-device-batch", type=int, default=4)
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--steps-per-generation", type=int, default=None)
    parser.add_argument("--global-batch", type=int, default=12, help="equiv / zero3-mgda: completions per step")
    parser.add_argument("--num-iterations", type=int, default=2, help="equiv / zero3-mgda: TRL num_iterations")
    parser.add_argument("--scenarios", default=",".join(EQUIV_SCENARIOS), help="equiv: comma-separated")
    parser.add_argument("--optim", default="sgd", help="equiv / zero3-mgda: TrainingArguments.optim")
    parser.add_argument("--lr", type=float, default=0.1, help="equiv / zero3-mgda: learning rate")
    args = parser.parse_args(argv)
    if args.mode in ("zero3", "zero3-mgda") and not args.deepspeed:
        parser.error(f"{args.mode} mode needs --deepspeed")
    if args.mode in ("equiv", "zero3-mgda"):
        main_layouts(args)
        return

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
