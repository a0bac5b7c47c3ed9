"""Paper-scale GPU check: what each strategy costs with a Qwen2.5-1.5B-shaped model and fixed-length completions.

``python scripts/gpu_check.py --scale paper --out DIR`` (this module) builds a randomly initialised model with
Qwen2.5-1.5B's published architecture (``Qwen2Config``: 28 layers, hidden 1536, MLP 8960, 12 query / 2 KV heads,
vocabulary 151,936, tied embeddings — nothing is downloaded: step cost depends on shapes, not on values), then trains
each configuration for one warm-up and ``--cycles`` measured generation batches and records, per optimizer step, the
stage split (generation, scoring, the rest of the batch preparation, forward/backward, the Gram work inside it, the
post-update forward, the optimizer step and the rest), the peak CUDA memory, whether every loss was finite and how many
parameter tensors moved. Results go to ``DIR/gpu_paper.json`` after every configuration, so a run cut short keeps
what it measured; ``--budget-s`` skips the configurations that would not finish in time (said in the JSON).

The batch is the paper's per-GPU share (reference scripts: 4 GPUs, micro-batch 16, 4 accumulation steps, 2 optimizer
steps per generation batch, 16 completions per prompt): micro-batch 16 x 4 = 64 completions per optimizer step, 128
(8 prompts x 16) per generation batch, every completion forced to ``--completion-length`` tokens (``min_new_tokens``)
so every configuration does the same work. Everything else (estimator, KL 0.001 with its reference model, clipping
off, dapo loss, weighting kwargs, ``gramian_params``) is read from ``recipes/qwen2.5-1.5b/<algorithm>.yaml``. Weights
are fp32 under bf16 autocast (the paper's FSDP mixed precision: fp32 master weights, bf16 compute); activation
checkpointing on, as in the recipes.

Beyond the first table's rows: the TorchJD weightings (upgrad, dualproj, cagrad) in the recipes' layer subset and in
log-prob space; MGDA on the last layer and the last quarter (``make bench-gram``'s cheaper subsets, costs only);
linear and CTWA at ``--long-length`` (1,024) tokens; linear with bf16-held weights with and without transformers'
continuous batching (the trainer refuses that path on fp32 weights under bf16: TRL casts them in place). Each run
records its generated tokens/s and the parameter dtypes after training. ``--rollout`` adds
:func:`gpu_rollout.greedy_agreement` (``generate`` vs ``generate_batch``, greedy, same prompts).

Rewards are three stand-ins computed from the completion's token ids (fractions of ids below V/2, even, divisible by
3): a random model's text is noise, and the project's math rewards would score it 0 with zero variance, so no
advantage and no gradient. Their scoring cost is therefore not the math verifier's (that one is measured on the CPU by
``bench/rewards.py``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import weakref


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS_10_25 = r"model\.layers\.(1[0-9]|2[0-5])\."
BF16_WEIGHTS = {"dtype": "bfloat16"}
LAST_LAYER, LAST_QUARTER = r"model\.layers\.(27)\.", r"model\.layers\.(2[1-7])\."  # of 28 layers
# name, recipe, overrides (None for gramian_params = every trainable parameter)
CONFIGS = [
    ("linear", "linear", {}),
    ("ctwa exact", "ctwa", {}),
    ("dynamic (logprobs)", "dynamic", {"gramian_space": "logprobs"}),
    ("dynamic (parameters, layers 10-25)", "dynamic", {"gramian_space": "parameters", "gramian_params": LAYERS_10_25}),
    ("mgda (logprobs)", "mgda", {"gramian_space": "logprobs"}),
    ("mgda (parameters, layers 10-25)", "mgda", {"gramian_space": "parameters", "gramian_params": LAYERS_10_25}),
    ("dynamic (parameters, all)", "dynamic", {"gramian_space": "parameters", "gramian_params": None}),
    ("mgda (parameters, all)", "mgda", {"gramian_space": "parameters", "gramian_params": None}),
    # the TorchJD weightings, each in the recipe's subset and in log-prob space
    *((f"{w} ({label})", w, over) for w in ("upgrad", "dualproj", "cagrad")
      for label, over in (("parameters, layers 10-25", {"gramian_space": "parameters", "gramian_params": LAYERS_10_25}),
                          ("logprobs", {"gramian_space": "logprobs"}))),
    # the cheaper parameter subsets of make bench-gram, at paper shapes (costs only: random weights)
    ("mgda (parameters, last layer)", "mgda", {"gramian_space": "parameters", "gramian_params": LAST_LAYER}),
    ("mgda (parameters, last quarter)", "mgda", {"gramian_space": "parameters", "gramian_params": LAST_QUARTER}),
    # how the costs scale with the completion length
    ("linear (1024 tokens)", "linear", {"completion_length": "long"}),
    ("ctwa exact (1024 tokens)", "ctwa", {"completion_length": "long"}),
    # the rollout path without vLLM: transformers' continuous batching (paged KV cache); it needs weights held in
    # bf16 (on fp32 weights TRL would cast them in place, which the trainer refuses), so both rows hold bf16 weights
    ("linear (bf16 weights)", "linear", {"model_init_kwargs": BF16_WEIGHTS}),
    ("linear (continuous batching, bf16 weights)", "linear",
     {"use_transformers_continuous_batching": True, "model_init_kwargs": BF16_WEIGHTS}),
]  # fmt: skip
ZERO3 = "linear (ZeRO-3, 1 process)"
QWEN25_15B = {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
                  "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768, "rope_theta": 1000000.0,
                  "rms_norm_eps": 1e-6, "tie_word_embeddings": True}  # fmt: skip
SMALL = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 28,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "vocab_size": 4096,
    "tie_word_embeddings": True,
}  # fmt: skip  (CPU rehearsal)
RECIPE_KEYS = ("weighting", "weighting_kwargs", "advantage_estimator", "gramian_space", "gramian_params", "beta",
               "epsilon", "epsilon_high", "loss_type", "learning_rate", "weight_decay", "max_grad_norm",
               "temperature", "top_p", "num_generations", "per_device_train_batch_size",
               "gradient_accumulation_steps", "steps_per_generation")  # fmt: skip


def build_model(path: str, shape: dict, device: str) -> str:
    """A random model of ``shape`` with the project's tiny chat tokenizer (its ids are a prefix of the vocabulary)."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from mo_align.testing import make_tiny_model

    if os.path.exists(os.path.join(path, "config.json")):
        return path
    make_tiny_model(path, seed=0)  # writes the tokenizer (and a tiny model, overwritten below)
    tok = AutoTokenizer.from_pretrained(path)
    ids = {"pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id, "bos_token_id": tok.bos_token_id}
    config = Qwen2Config(**shape, **ids)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(**ids)
    model.save_pretrained(path)
    return path


def id_rewards(vocab: int) -> list:
    def make(name: str, hit):
        def reward(prompts, completions, completion_ids=None, **kw):
            return [sum(map(hit, ids)) / max(1, len(ids)) for ids in completion_ids]

        reward.__name__ = name
        return reward

    return [make("low_ids", lambda i: i < vocab // 2), make("even_ids", lambda i: i % 2 == 0),
            make("ids_div3", lambda i: i % 3 == 0)]  # fmt: skip


def recipe_args(recipe: str, overrides: dict, a) -> dict:
    import yaml

    with open(os.path.join(ROOT, "recipes", "qwen2.5-1.5b", f"{recipe}.yaml")) as f:
        raw = yaml.safe_load(f)
    args = {k: raw[k] for k in RECIPE_KEYS if k in raw}
    args.update(per_device_train_batch_size=16, gradient_accumulation_steps=4, steps_per_generation=8,
                num_generations=16)  # the per-GPU share of the paper's batch (module docstring)  # fmt: skip
    args.update(overrides)
    if a.shape == "small":
        args.update(per_device_train_batch_size=4, num_generations=4, gradient_accumulation_steps=2,
                    steps_per_generation=4)  # fmt: skip
    return args


class StageClock:
    """Wall time of named calls, CUDA-synchronised, summed per optimizer step."""

    def __init__(self, cuda: bool) -> None:
        self.cuda, self.current, self.steps = cuda, {}, []

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def wrap(self, obj, name: str, stage: str) -> None:
        inner = getattr(obj, name)

        def timed(*args, **kwargs):
            self.sync()
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.sync()
                self.current[stage] = self.current.get(stage, 0.0) + time.perf_counter() - t0

        setattr(obj, name, timed)


def train_one(name: str, recipe: str, overrides: dict, model_dir: str, a) -> dict:
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback

    from mo_align.configs import MOGRPOConfig
    from mo_align.trainer import MOGRPOTrainer

    cuda = torch.cuda.is_available() and a.device == "cuda"
    overrides = dict(overrides)
    length = overrides.pop("completion_length", a.completion_length)
    length = a.long_length if length == "long" else length
    args = recipe_args(recipe, overrides, a)
    init = args.pop("model_init_kwargs", {"dtype": "float32"})  # fp32 master weights unless the row says otherwise
    steps = 2 * (1 + a.cycles)  # 2 optimizer steps per generation batch
    prompts = [[{"role": "user", "content": f"Compute {i % 9 + 1} + {i % 7 + 2}."}] for i in range(256)]
    data = Dataset.from_dict({"prompt": prompts, "answer": [str(i % 9 + i % 7 + 3) for i in range(256)]})
    config = MOGRPOConfig(
        output_dir=tempfile.mkdtemp(), bf16=cuda, use_cpu=not cuda, max_steps=steps, logging_steps=1,
        save_strategy="no", report_to="none", disable_tqdm=True, seed=0, activation_checkpointing=True,
        max_completion_length=length, generation_kwargs={"min_new_tokens": length},
        model_init_kwargs=init, lr_scheduler_type="constant", **args,
    )  # fmt: skip
    clock = StageClock(cuda)

    class Steps(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            clock.sync()
            clock.current, self.t0 = {}, time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            clock.sync()
            clock.steps.append({**clock.current, "step_s": time.perf_counter() - self.t0})

    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    trainer = MOGRPOTrainer(model=model_dir, reward_funcs=id_rewards(a.vocab), args=config, train_dataset=data)
    trainer.add_callback(Steps())
    trainer.remove_callback(PrinterCallback)  # the per-step log dicts: the JSON holds what matters
    for obj, method, stage in [(trainer, "_generate", "generation_s"), (trainer, "_calculate_rewards", "scoring_s"),
                               (trainer, "_generate_and_score_completions", "batch_s"),
                               (trainer, "training_step", "training_step_s"),
                               (trainer.mo_gradient, "local_gradients", "gram_s"),
                               (trainer.mo_gradient, "batch_gram", "gram_batch_s"),
                               (trainer.mo_post_update, "run", "post_update_s")]:  # fmt: skip
        clock.wrap(obj, method, stage)
    before = [local(q).to("cpu", copy=True) for q in trainer.model.parameters()]  # off the GPU: not in the peak
    setup_s, error = time.time() - t0, None
    try:
        trainer.train()
    except Exception as exc:  # record and go on with the next configuration
        error = f"{type(exc).__name__}: {exc}"[:600]
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    moved = sum(not torch.equal(b, local(q).cpu()) for b, q in zip(before, trainer.model.parameters()))
    run = {"name": name, "recipe": recipe, "error": error, "setup_s": setup_s, "wall_s": time.time() - t0,
           "finite_losses": bool(losses) and all(v == v and abs(v) != float("inf") for v in losses),
           "params_moved": f"{moved}/{len(before)}", "steps": clock.steps,
           "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
           "trainer_args": {k: getattr(config, k) for k in RECIPE_KEYS},
           "parameters": sum(getattr(q, "ds_numel", q.numel()) for q in trainer.model.parameters()),
           "completion_length": length,
           # TRL's continuous-batching path casts the policy to bf16 in place when bf16 is on: recorded, not assumed
           "param_dtypes_after": sorted({str(q.dtype) for q in trainer.model.parameters()})}  # fmt: skip
    run.update(summarise(clock.steps, warmup_steps=2))
    run.update(generation_rate(trainer, clock.steps[2:], config))
    return run, weakref.ref(trainer.model)


def generation_rate(trainer, measured: list[dict], config) -> dict:
    """Generated tokens per second of generation time over the measured steps: TRL's logged mean completion length
    x the completions of a generation batch (per_device_train_batch_size x steps_per_generation), per generation."""
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    gens = [s["generation_s"] for s in measured if s.get("generation_s")]
    if not lengths or not gens:
        return {}
    tokens = (
        statistics.fmean(lengths[2:] or lengths) * config.per_device_train_batch_size * config.steps_per_generation
    )
    return {"completion_tokens_per_generation": tokens, "generation_tokens_per_s": tokens / statistics.fmean(gens)}


def release(run: dict, alive) -> None:
    """Free this configuration's model (after its frame is gone) so the next one's peak memory is its own."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        run["allocated_after_gib"] = torch.cuda.memory_allocated() / 2**30
    run["model_freed"] = alive() is None


def local(param):
    """The parameter's values held by this process (ZeRO-3: its partition, the whole tensor on one process)."""
    return getattr(param, "ds_tensor", param).detach()


def summarise(steps: list[dict], warmup_steps: int) -> dict:
    """Per optimizer step means over the measured steps (generation happens on every other step)."""
    measured = steps[warmup_steps:]
    if not measured:
        return {"measured_steps": 0}
    keys = (
        "step_s",
        "generation_s",
        "scoring_s",
        "batch_s",
        "training_step_s",
        "gram_s",
        "gram_batch_s",
        "post_update_s",
    )
    mean = {k: statistics.fmean(s.get(k, 0.0) for s in measured) for k in keys}
    out = {"measured_steps": len(measured), "s_per_step": mean["step_s"]}
    out["stages"] = {
        "generation": mean["generation_s"],
        "scoring": mean["scoring_s"],
        "batch prep (ref/old logps, advantages)": mean["batch_s"] - mean["generation_s"] - mean["scoring_s"],
        "forward/backward (excl. Gram)": mean["training_step_s"] - mean["batch_s"] - mean["gram_s"],
        "Gram (per-objective gradients + products)": mean["gram_s"] + mean["gram_batch_s"],
        "post-update forward": mean["post_update_s"] - mean["gram_batch_s"],
        "optimizer step + rest": mean["step_s"] - mean["training_step_s"] - mean["post_update_s"],
    }
    return out


def zero3(model_dir: str, a, budget_s: float) -> dict:
    """Linear under DeepSpeed ZeRO-3 on one process, launched as a user would (accelerate launch)."""
    out = os.path.join(a.out, "zero3.json")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           os.path.join(ROOT, "configs", "accelerate", "zero3.yaml"), "--num_processes", "1", __file__, "--out", a.out,
           "--model-dir", model_dir, "--only", "linear", "--result", out, "--shape", a.shape,
           "--completion-length", str(a.completion_length), "--cycles", str(a.cycles), "--device", a.device]  # fmt: skip
    t0, log = time.time(), os.path.join(a.out, "zero3.log")
    try:
        with open(log, "w") as f:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=budget_s, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {
            "name": ZERO3,
            "error": f"timed out after {budget_s:.0f} s (log: zero3.log)",
            "wall_s": time.time() - t0,
        }
    if proc.returncode != 0 or not os.path.exists(out):
        return {"name": ZERO3, "error": f"exit {proc.returncode} (log: zero3.log)", "wall_s": time.time() - t0}
    with open(out) as f:
        run = json.load(f)["runs"][0]
    return {**run, "name": ZERO3, "wall_s": time.time() - t0}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="scripts/gpu_check.py --scale paper")
    p.add_argument("--out", default="")
    p.add_argument("--shape", choices=["paper", "small"], default="paper", help="small: a CPU rehearsal")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--completion-length", type=int, default=512)
    p.add_argument("--long-length", type=int, default=1024, help="the '(1024 tokens)' rows' length (rehearsal: less)")
    p.add_argument("--cycles", type=int, default=1, help="measured generation batches (2 optimizer steps each)")
    p.add_argument("--budget-s", type=float, default=540.0, help="skip configurations that would not fit")
    p.add_argument("--only", default="", help="comma-separated configuration names, zero3 for ZeRO-3 (default: all)")
    p.add_argument("--no-zero3", action="store_true")
    p.add_argument("--model-dir", default="")
    p.add_argument("--result", default="", help="(internal) write this process's runs here")
    p.add_argument("--render", default="", help="print the markdown table of this gpu_paper.json and exit")
    p.add_argument("--rollout", action="store_true", help="also compare generate and generate_batch (gpu_rollout)")
    a = p.parse_args(argv)
    if a.render:
        with open(a.render) as f:
            return sys.stdout.write(render(json.load(f)))
    if not a.out:
        p.error("--out is required")
    start = time.time()
    sys.path.insert(0, ROOT)
    import torch

    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_paper: no CUDA device (use --device cpu --shape small for a rehearsal)")
    shape = QWEN25_15B if a.shape == "paper" else SMALL
    a.vocab = shape["vocab_size"]
    os.makedirs(a.out, exist_ok=True)
    model_dir = a.model_dir or build_model(os.path.join(tempfile.mkdtemp(), "model"), shape, a.device)
    result = a.result or os.path.join(a.out, "gpu_paper.json")
    report = {"device": torch.cuda.get_device_name(0) if a.device == "cuda" else "cpu", "torch": torch.__version__,
              "shape": shape, "completion_length": a.completion_length, "cycles": a.cycles, "runs": [],
              "skipped": [], "build_s": time.time() - start}  # fmt: skip
    wanted = [c for c in CONFIGS if not a.only or c[0] in a.only.split(";")]
    longest = 0.0
    for name, recipe, overrides in wanted:
        left = a.budget_s - (time.time() - start)
        if left < 1.3 * longest:
            report["skipped"].append(f"{name}: {left:.0f} s left, the longest configuration took {longest:.0f} s")
            continue
        run, alive = train_one(name, recipe, overrides, model_dir, a)
        release(run, alive)
        longest = max(longest, run["wall_s"])
        report["runs"].append(run)
        write(result, report)
        sys.stdout.write(line(run) + "\n")
        sys.stdout.flush()
    if a.rollout and not a.result:  # greedy, same prompts: tokens/s, memory, agreement (scripts/gpu_rollout.py)
        import gpu_rollout

        report["rollout"] = gpu_rollout.greedy_agreement(model_dir, a.device, a.completion_length)
        write(result, report)
    if not a.result and not a.no_zero3 and (not a.only or "zero3" in a.only.split(";")):
        left = a.budget_s - (time.time() - start)
        if left > 60:
            report["runs"].append(zero3(model_dir, a, left - 10))
            sys.stdout.write(line(report["runs"][-1]) + "\n")
        else:
            report["skipped"].append(f"{ZERO3}: {left:.0f} s left")
    report["total_s"] = time.time() - start
    write(result, report)


def render(report: dict) -> str:
    """The markdown table of a ``gpu_paper.json``: seconds per optimizer step, without generation, and its stages."""
    stages = ["generation", "scoring", "batch prep (ref/old logps, advantages)", "forward/backward (excl. Gram)",
              "Gram (per-objective gradients + products)", "post-update forward", "optimizer step + rest"]  # fmt: skip
    base = next((r for r in report["runs"] if r["name"] == "linear" and r.get("s_per_step")), None)
    base_train = base and base["s_per_step"] - base["stages"]["generation"]
    head = ["configuration", "s/step", "s/step without generation", "x linear (without generation)", *stages,
            "peak GiB", "finite losses", "params moved"]  # fmt: skip
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["runs"]:
        s = r.get("s_per_step")
        if s is None:
            rows.append(f"| {r['name']} | failed: {r.get('error')} |" + " |" * (len(head) - 2))
            continue
        train = s - r["stages"]["generation"]
        mem = r.get("peak_mem_gib")
        cells = [r["name"], f"{s:.2f}", f"{train:.2f}", f"{train / base_train:.2f}" if base_train else "",
                 *(f"{r['stages'][k]:.2f}" for k in stages), "" if mem is None else f"{mem:.1f}",
                 str(r["finite_losses"]), r["params_moved"]]  # fmt: skip
        rows.append("| " + " | ".join(cells) + " |")
    text = "\n".join(rows + [f"\nskipped: {x}" for x in report.get("skipped", [])]) + "\n"
    rates = [
        f"{r['name']}: {r['generation_tokens_per_s']:.0f}" for r in report["runs"] if "generation_tokens_per_s" in r
    ]
    text += f"\ngenerated tokens/s (training): {'; '.join(rates)}\n" if rates else ""
    if "rollout" in report:
        import gpu_rollout

        text += gpu_rollout.render(report["rollout"])
    return text


def write(path: str, report: dict) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(report, f, indent=1)
    os.replace(path + ".tmp", path)


def line(run: dict) -> str:
    s = run.get("s_per_step")
    mem = run.get("peak_mem_gib")
    return (f"{run['name']:<36} {s if s is None else round(s, 3)} s/step  peak {mem if mem is None else round(mem, 1)}"
            f" GiB  finite {run.get('finite_losses')}  moved {run.get('params_moved')}  err {run.get('error')}")  # fmt: skip


if __name__ == "__main__":
    main()
