"""Weight interpolation of finished runs (rewarded soups): θ(α) = Σ_i α_i θ_i, α on the simplex.

Ramé et al. 2023, "Rewarded soups: towards Pareto-optimal alignment by interpolating weights fine-tuned on diverse
rewards" (arXiv 2306.04488): fine-tune one copy of a shared base per reward, then interpolate the weights; the
interpolations trace a front in reward space at no further training cost.

What is computed, exactly:

* **Full weights** (``model.safetensors`` in each run): θ = Σ_i α_i θ_i for every floating tensor, accumulated in
  float64 and cast back to the tensor's dtype; a non-floating tensor (an integer buffer) must be equal in every run
  and is copied.
* **LoRA, ``merged``** (the default): each run's adapter is merged into the base, θ_i = θ_0 + s_i B_i A_i, and the
  merged weights are interpolated: θ = Σ_i α_i θ_i = θ_0 + Σ_i α_i s_i B_i A_i (Σ α_i = 1). This is linear in the
  *effective* weights, so α = e_i gives run i's model exactly (to the float rounding of the merge), and runs with
  different LoRA ranks or target modules mix.
* **LoRA, ``adapters``** (Ramé et al.'s choice for their LoRA experiments): the adapter matrices are interpolated,
  A = Σ_i α_i A_i, B = Σ_i α_i B_i, and the one resulting adapter merged. The effective update is
  s B A = s Σ_i Σ_j α_i α_j B_i A_j: *not* Σ_i α_i s B_i A_i (cross terms i ≠ j), i.e. not linear in the runs'
  effective weights. Needs the same LoRA configuration (rank, alpha, targets) in every run.

Runs are refused, naming them, in one line when they differ in architecture (``model_type``, ``architectures``, the
names and shapes of the tensors), base model (a LoRA adapter's ``base_model_name_or_path``; for full weights the
``model_name_or_path`` of the run's ``sweep_recipe.yaml`` where it has one), or tokenizer (``tokenizer.json`` /
``tokenizer_config.json`` contents), or when some are LoRA runs and others are not.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

import torch
import yaml


ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MODEL_WEIGHTS = "model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
LORA_MODES = ("merged", "adapters")
ADAPTER_KEYS = ("r", "lora_alpha", "target_modules", "use_rslora", "use_dora", "fan_in_fan_out", "bias")


class SoupError(ValueError):
    """Runs that cannot be interpolated, or bad mixing weights (one line, naming the runs)."""


def _json(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def is_lora(run_dir: str) -> bool:
    return os.path.exists(os.path.join(run_dir, ADAPTER_CONFIG))


def base_model(run_dir: str) -> str | None:
    """The model a run started from: the adapter's base, else its sweep recipe's ``model_name_or_path``."""
    if is_lora(run_dir):
        return _json(os.path.join(run_dir, ADAPTER_CONFIG)).get("base_model_name_or_path")
    recipe = os.path.join(run_dir, "sweep_recipe.yaml")
    if os.path.exists(recipe):
        with open(recipe, encoding="utf-8") as f:
            return (yaml.safe_load(f) or {}).get("model_name_or_path")
    return None


def _tokenizer_digest(run_dir: str) -> str | None:
    digest = hashlib.sha256()
    found = False
    for name in TOKENIZER_FILES:
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            found = True
            text = _json(path)
            text.pop("name_or_path", None)  # where it was loaded from, not what it is
            digest.update(json.dumps(text, sort_keys=True).encode())
    return digest.hexdigest() if found else None


def _architecture(run_dir: str) -> tuple[Any, ...]:
    config_dir = run_dir
    if is_lora(run_dir) and not os.path.exists(os.path.join(run_dir, "config.json")):
        config_dir = base_model(run_dir) or run_dir
    path = os.path.join(config_dir, "config.json")
    if not os.path.exists(path):
        return ("no config.json",)
    config = _json(path)
    return config.get("model_type"), tuple(config.get("architectures") or ())


def _shapes(path: str) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)


def _differs(runs: Sequence[str], values: Sequence[Any], what: str) -> None:
    if len(set(map(repr, values))) > 1:
        listed = "; ".join(f"{r}: {v}" for r, v in zip(runs, values, strict=True))
        raise SoupError(f"the runs have different {what} ({listed}); a soup mixes runs of one base model")


def check_runs(runs: Sequence[str], lora_mode: str = "merged") -> bool:
    """Refuse runs that cannot be mixed (see the module docstring); returns whether they are LoRA runs."""
    if len(runs) < 2:
        raise SoupError("a soup needs at least two runs")
    for run in runs:
        if not os.path.isdir(run):
            raise SoupError(f"{run}: no such run directory")
        if not any(os.path.exists(os.path.join(run, f)) for f in (MODEL_WEIGHTS, ADAPTER_WEIGHTS)):
            raise SoupError(f"{run}: no {MODEL_WEIGHTS} or {ADAPTER_WEIGHTS} (a finished run with one-file weights?)")
    lora = [is_lora(r) for r in runs]
    _differs(runs, ["LoRA adapter" if x else "full weights" for x in lora], "kinds of weights")
    bases = [base_model(r) for r in runs]
    if all(b is not None for b in bases):
        _differs(runs, [os.path.abspath(b) if os.path.exists(b) else b for b in bases], "base models")
    _differs(runs, [_architecture(r) for r in runs], "architectures (model_type, architectures)")
    _differs(runs, [_tokenizer_digest(r) for r in runs], "tokenizers (tokenizer.json / tokenizer_config.json)")
    weights = ADAPTER_WEIGHTS if lora[0] else MODEL_WEIGHTS
    _differs(runs, [sorted(_shapes(os.path.join(r, weights)).items()) for r in runs], "tensor names or shapes")
    if lora[0] and lora_mode == "adapters":
        configs = [{k: _json(os.path.join(r, ADAPTER_CONFIG)).get(k) for k in ADAPTER_KEYS} for r in runs]
        _differs(runs, configs, "LoRA configurations (--lora adapters needs one)")
    return lora[0]


def mix(state_dicts: Sequence[dict[str, torch.Tensor]], alphas: Sequence[float]) -> dict[str, torch.Tensor]:
    """Σ_i α_i θ_i per floating tensor (float64 accumulation, cast back); other tensors must agree and are copied."""
    out = {}
    for key, first in state_dicts[0].items():
        if not first.is_floating_point():
            if any(not torch.equal(sd[key], first) for sd in state_dicts[1:]):
                raise SoupError(f"tensor {key} ({first.dtype}) differs between the runs and cannot be interpolated")
            out[key] = first.clone()
            continue
        acc = torch.zeros_like(first, dtype=torch.float64)
        for sd, a in zip(state_dicts, alphas, strict=True):
            acc += float(a) * sd[key].to(torch.float64)
        out[key] = acc.to(first.dtype)
    return out


def _merged_state(run_dir: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_model(run_dir), dtype=dtype)
    merged = PeftModel.from_pretrained(base, run_dir).merge_and_unload()
    return {k: v.detach().clone() for k, v in merged.state_dict().items()}


def soup_model(runs: Sequence[str], alphas: Sequence[float], lora_mode: str = "merged", dtype=torch.float32) -> Any:
    """The interpolated model (a transformers ``PreTrainedModel``, LoRA merged) for the mixing weights ``alphas``."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    lora = is_lora(runs[0])
    if not lora:
        model = AutoModelForCausalLM.from_pretrained(runs[0], dtype=dtype)
        theta = mix([load_file(os.path.join(r, MODEL_WEIGHTS)) for r in runs], alphas)
    elif lora_mode == "merged":
        model = AutoModelForCausalLM.from_pretrained(base_model(runs[0]), dtype=dtype)
        theta = mix([_merged_state(r, dtype) for r in runs], alphas)
    else:
        from peft import PeftModel, set_peft_model_state_dict

        base = AutoModelForCausalLM.from_pretrained(base_model(runs[0]), dtype=dtype)
        peft_model = PeftModel.from_pretrained(base, runs[0])
        adapters = mix([load_file(os.path.join(r, ADAPTER_WEIGHTS)) for r in runs], alphas)
        set_peft_model_state_dict(peft_model, adapters)
        return peft_model.merge_and_unload()
    missing, unexpected = model.load_state_dict(theta, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    if unexpected or set(missing) - tied:
        raise SoupError(
            f"{runs[0]}: the interpolated weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    if missing:
        model.tie_weights()
    return model
