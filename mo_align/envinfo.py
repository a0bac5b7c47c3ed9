"""``mo-align env``: versions, devices and installed extras, to paste into a bug report (as ``trl env``)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys

import torch


PACKAGES = (
    "mo_align",
    "torch",
    "trl",
    "transformers",
    "accelerate",
    "peft",
    "datasets",
    "tokenizers",
    "huggingface_hub",
    "math-verify",
    "deepspeed",
    "wandb",
    "trackio",
    "torchjd",
    "bitsandbytes",
    "vllm",
)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment() -> list[tuple[str, str]]:
    """(name, value) rows: platform, Python, every package of the stack and its extras, devices."""
    rows = [("platform", platform.platform()), ("python", sys.version.split()[0])]
    rows += [(dist, _version(dist)) for dist in PACKAGES]
    rows.append(("cpu cores", str(os.cpu_count())))
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        rows.append(("cuda", f"{torch.version.cuda}, {len(names)} device(s): {', '.join(names)}"))
        rows.append(("bf16", str(torch.cuda.is_bf16_supported())))
    else:
        rows.append(("cuda", "not available"))
    rows.append(("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "unset")))
    rows.append(("WANDB_MODE", os.environ.get("WANDB_MODE", "unset")))
    return rows


def format_environment(rows: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"- {name + ':':<{width + 1}} {value}" for name, value in rows)
