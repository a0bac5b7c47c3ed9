#!/usr/bin/env bash
# The wheel as a user gets it: build it, install it into a clean venv (the tested set from constraints-cpu.txt), and
# train one tiny step with `mo-align train --accelerate_config cpu` from a directory outside the checkout.
#   bash scripts/wheel_check.sh [WORKDIR]   (make wheel-check; .ci/run runs it; default: a temporary directory)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
if [ -n "${1:-}" ]; then
    mkdir -p "$1"
    work=$(cd "$1" && pwd)
else
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
fi
case "$work/" in "$root"/*) echo "wheel-check: $work is inside the checkout; give a directory outside it" >&2; exit 2;; esac
start=$(date +%s)
rm -rf "$work/dist" "$work/venv" "$work/run"
# the build runs in a copy of the tracked files, so nothing from the checkout's own builds or venvs leaks in
git -C "$root" ls-files -z | (mkdir -p "$work/src" && cd "$root" && xargs -0 cp --parents -P -t "$work/src")
"$py" -m venv "$work/venv"
"$work/venv/bin/pip" install -q -U pip
"$work/venv/bin/pip" install -q "setuptools>=68" wheel
"$work/venv/bin/pip" wheel -q --no-deps --no-build-isolation -w "$work/dist" "$work/src"
wheel=$(ls "$work"/dist/mo_align-*.whl)
"$work/venv/bin/pip" install -q -c "$root/constraints-cpu.txt" torch==2.13.0
"$work/venv/bin/pip" install -q -c "$root/constraints-cpu.txt" "$wheel"
echo "wheel-check: built and installed $(basename "$wheel") in $(( $(date +%s) - start )) s"
cd "$work"   # outside the checkout: nothing below can read the repository's files by a relative path
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline
"$work/venv/bin/python" -m mo_align.testing --out "$work/tiny-model"
"$work/venv/bin/mo-align" train --config "$root/recipes/tiny/linear.yaml" --accelerate_config cpu \
    --model_name_or_path "$work/tiny-model" --output_dir "$work/run" --max_steps 1 \
    --eval_strategy no --eval_on_start false --disable_tqdm true
test -s "$work/run/model.safetensors" || { echo "wheel-check: no model.safetensors in $work/run" >&2; exit 1; }
test -s "$work/run/mo_summary.json" || { echo "wheel-check: no mo_summary.json in $work/run" >&2; exit 1; }
echo "wheel-check: one tiny step from the wheel, outside the checkout, in $(( $(date +%s) - start )) s"
