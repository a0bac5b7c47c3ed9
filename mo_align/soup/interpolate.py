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
``tokenizer_config.json`` contents), or when some are LoRA runs and others are not. A weight file that safetensors
cannot read, or that holds a NaN or ±Inf in any floating tensor (every tensor of every run is checked before a model
is built), is refused naming the file and the tensor, and so is an interpolated tensor that is not finite. Every
refusal is one line of at most 300 characters: long paths keep their end, lists are counted and their first item
named (``3 tensors differ in shape, first: name (a) vs (b)``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

import torch
import yaml
from peft import PeftModel, set_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from mo_align.runs.files import ADAPTER_CONFIG, ADAPTER_WEIGHTS, CONFIG_FILE, MODEL_WEIGHTS, SWEEP_RECIPE_FILE


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
LORA_MODES = ("merged", "adapters")
ADAPTER_KEYS = ("r", "lora_alpha", "target_modules", "use_rslora", "use_dora", "fan_in_fan_out", "bias")


class SoupError(ValueError):
    """Runs that cannot be interpolated, or bad mixing weights (one line, naming the runs)."""


def _json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise SoupError(f"{clip(path, 150)}: not a valid JSON file ({clip(exc, 100)})") from exc
    if not isinstance(value, dict):
        raise SoupError(f"{clip(path, 150)}: expected a JSON object, got {type(value).__name__}")
    return value


def is_lora(run_dir: str) -> bool:
    return os.path.exists(os.path.join(run_dir, ADAPTER_CONFIG))


def base_model(run_dir: str) -> str | None:
    """The model a run started from: the adapter's base, else its sweep recipe's ``model_name_or_path``."""
    if is_lora(run_dir):
        return _json(os.path.join(run_dir, ADAPTER_CONFIG)).get("base_model_name_or_path")
    recipe = os.path.join(run_dir, SWEEP_RECIPE_FILE)
    if os.path.exists(recipe):
        try:
            with open(recipe, encoding="utf-8") as f:
                loaded = yaml.safe_load(f) or {}
        except (yaml.YAMLError, ValueError) as exc:
            raise SoupError(f"{clip(recipe, 150)}: not a valid YAML recipe ({clip(exc, 100)})") from exc
        return loaded.get("model_name_or_path") if isinstance(loaded, dict) else None
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
    return digest.hexdigest()[:16] if found else None


def _architecture(run_dir: str) -> str:
    config_dir = run_dir
    if is_lora(run_dir) and not os.path.exists(os.path.join(run_dir, CONFIG_FILE)):
        config_dir = base_model(run_dir) or run_dir
    path = os.path.join(config_dir, CONFIG_FILE)
    if not os.path.exists(path):
        return f"no {CONFIG_FILE}"
    config = _json(path)
    return f"model_type {config.get('model_type')}, " + "/".join(map(str, config.get("architectures") or ()))


def clip(text: Any, limit: int) -> str:
    """``text`` as one line of at most ``limit`` characters; a longer one keeps its end (a path's distinct part)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def fit(template: str, *paths: str, limit: int = 280) -> str:
    """``template.format(*paths)`` in at most ``limit`` characters: the paths share the room the text leaves."""
    room = max(24, (limit - len(template.format(*[""] * len(paths)))) // max(len(paths), 1))
    return template.format(*(clip(p, room) for p in paths))


def _unreadable(path: str, exc: BaseException) -> SoupError:
    return SoupError(f"{clip(path, 140)}: not a readable safetensors file ({clip(exc, 100)})")


def _shapes(path: str) -> dict[str, tuple[int, ...]]:
    try:
        with safe_open(path, framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (no __iter__)
    except Exception as exc:  # safetensors' SafetensorError (a bad header), OSError
        raise _unreadable(path, exc) from exc


def check_finite(tensors: dict[str, torch.Tensor], where: str) -> None:
    """Refuse a floating tensor holding NaN or ±Inf, naming ``where`` and the tensor (one line)."""
    for key, tensor in tensors.items():
        if tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise SoupError(
                    f"{clip(where, 150)}: tensor {clip(key, 80)} holds {bad} non-finite value{'s' * (bad > 1)} "
                    "(NaN/Inf): a diverged run cannot be interpolated"
                )


def _check_file_finite(path: str) -> None:
    """Every floating tensor of a safetensors file is finite; read one tensor at a time."""
    try:
        with safe_open(path, framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                check_finite({key: f.get_tensor(key)}, path)
    except SoupError:
        raise
    except Exception as exc:  # the data of a tensor cannot be read
        raise _unreadable(path, exc) from exc


def _load(path: str) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, refused in one line when unreadable or not finite."""
    try:
        tensors = load_file(path)
    except Exception as exc:  # SafetensorError, OSError
        raise _unreadable(path, exc) from exc
    check_finite(tensors, path)
    return tensors


def _differs(runs: Sequence[str], values: Sequence[Any], what: str) -> None:
    """Refuse (one line) when ``values`` (one per run) are not all equal, naming the first run and one that differs."""
    keys = [repr(v) for v in values]
    other = next((i for i, k in enumerate(keys) if k != keys[0]), None)
    if other is not None:
        a, b = (clip(values[i], 40).replace("{", "{{").replace("}", "}}") for i in (0, other))
        raise SoupError(fit(f"the runs have different {what}: {{}} has {a}, {{}} has {b}", runs[0], runs[other]))


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'s' * (n != 1)}"


def _compare_shapes(runs: Sequence[str], shapes: Sequence[dict[str, tuple[int, ...]]]) -> None:
    """Refuse runs whose tensor names or shapes differ: counts and the first offending tensor, in one line."""
    first = shapes[0]
    for run, other in zip(runs[1:], shapes[1:]):
        only_a, only_b = sorted(set(first) - set(other)), sorted(set(other) - set(first))
        shape = sorted(k for k in set(first) & set(other) if first[k] != other[k])
        if not (only_a or only_b or shape):
            continue
        if shape:
            k = shape[0]
            found = f"{_count(len(shape), 'tensor')} differ in shape, first: {clip(k, 60)} {first[k]} vs {other[k]}"
        else:
            found = ", ".join(
                f"{_count(len(keys), 'tensor')} only in {which} (first: {clip(keys[0], 50)})"
                for keys, which in ((only_a, "the first run"), (only_b, "the second run"))
                if keys
            )
        found = found.replace("{", "{{").replace("}", "}}")
        raise SoupError(fit(f"the runs have different tensor names or shapes: {{}} vs {{}}: {found}", runs[0], run))


def check_runs(runs: Sequence[str], lora_mode: str = "merged") -> bool:
    """Refuse runs that cannot be mixed (see the module docstring); returns whether they are LoRA runs."""
    if len(runs) < 2:
        raise SoupError("a soup needs at least two runs")
    for run in runs:
        if not os.path.isdir(run):
            raise SoupError(f"{clip(run, 200)}: no such run directory")
        if not any(os.path.exists(os.path.join(run, f)) for f in (MODEL_WEIGHTS, ADAPTER_WEIGHTS)):
            raise SoupError(
                f"{clip(run, 150)}: no {MODEL_WEIGHTS} or {ADAPTER_WEIGHTS} (a finished run with one-file weights?)"
            )
    lora = [is_lora(r) for r in runs]
    _differs(runs, ["LoRA adapter" if x else "full weights" for x in lora], "kinds of weights")
    bases = [base_model(r) for r in runs]
    if all(b is not None for b in bases):
        _differs(runs, [os.path.abspath(b) if os.path.exists(b) else b for b in bases], "base models")
    _differs(runs, [_architecture(r) for r in runs], "architectures (config.json)")
    _differs(runs, [_tokenizer_digest(r) for r in runs], "tokenizers (tokenizer.json, tokenizer_config.json)")
    files = [os.path.join(r, ADAPTER_WEIGHTS if lora[0] else MODEL_WEIGHTS) for r in runs]
    _compare_shapes(runs, [_shapes(f) for f in files])
    for path in files:
        _check_file_finite(path)
    if lora[0] and lora_mode == "adapters":
        configs = [{k: _json(os.path.join(r, ADAPTER_CONFIG)).get(k) for k in ADAPTER_KEYS} for r in runs]
        differing = [k for k in ADAPTER_KEYS if len({repr(c[k]) for c in configs}) > 1]  # show only these
        _differs(
            runs, [{k: c[k] for k in differing} for c in configs], "LoRA configurations (--lora adapters needs one)"
        )
    return lora[0]


def mix(state_dicts: Sequence[dict[str, torch.Tensor]], alphas: Sequence[float]) -> dict[str, torch.Tensor]:
    """Σ_i α_i θ_i per floating tensor (float64 accumulation, cast back); other tensors must agree and are copied."""
    out = {}
    for key, first in state_dicts[0].items():
        if not first.is_floating_point():
            if any(not torch.equal(sd[key], first) for sd in state_dicts[1:]):
                raise SoupError(
                    f"tensor {clip(key, 80)} ({first.dtype}) differs between the runs and cannot be interpolated"
                )
            out[key] = first.clone()
            continue
        acc = torch.zeros_like(first, dtype=torch.float64)
        for sd, a in zip(state_dicts, alphas, strict=True):
            acc += float(a) * sd[key].to(torch.float64)
        out[key] = acc.to(first.dtype)
    return out


def _merged_state(run_dir: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    base = AutoModelForCausalLM.from_pretrained(base_model(run_dir), dtype=dtype)
    merged = PeftModel.from_pretrained(base, run_dir).merge_and_unload()
    return {k: v.detach().clone() for k, v in merged.state_dict().items()}


def soup_model(runs: Sequence[str], alphas: Sequence[float], lora_mode: str = "merged", dtype=torch.float32) -> Any:
    """The interpolated model (a transformers ``PreTrainedModel``, LoRA merged) for the mixing weights ``alphas``;
    a weight file that cannot be read or holds NaN/Inf, and an interpolated weight that is not finite, are refused."""
    where = f"the soup of {clip(runs[0], 80)} and {len(runs) - 1} more at α = {[float(a) for a in alphas]}"
    if is_lora(runs[0]) and lora_mode != "merged":
        base = AutoModelForCausalLM.from_pretrained(base_model(runs[0]), dtype=dtype)
        peft_model = PeftModel.from_pretrained(base, runs[0])
        adapters = mix([_load(os.path.join(r, ADAPTER_WEIGHTS)) for r in runs], alphas)
        set_peft_model_state_dict(peft_model, adapters)
        model = peft_model.merge_and_unload()
        check_finite(model.state_dict(), where)
        return model
    if is_lora(runs[0]):
        model = AutoModelForCausalLM.from_pretrained(base_model(runs[0]), dtype=dtype)
        theta = mix([_merged_state(r, dtype) for r in runs], alphas)
    else:
        model = AutoModelForCausalLM.from_pretrained(runs[0], dtype=dtype)
        theta = mix([_load(os.path.join(r, MODEL_WEIGHTS)) for r in runs], alphas)
    check_finite(theta, where)
    missing, unexpected = model.load_state_dict(theta, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    if unexpected or set(missing) - tied:
        raise SoupError(
            f"{clip(runs[0], 100)}: the interpolated weights do not fit the model "
            f"({_count(len(missing), 'missing tensor')}, first {clip(missing[:1], 60)}; "
            f"{_count(len(unexpected), 'unexpected tensor')}, first {clip(unexpected[:1], 60)})"
        )
    if missing:
        model.tie_weights()
    return model
