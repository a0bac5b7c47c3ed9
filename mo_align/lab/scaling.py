"""The lab's scaling rule: every lab run is a paper recipe with a declared, printed list of changes.

Each algorithm the lab runs (``make lab``, ``make demo``, ``make lab-sweep``, ``make lab-front``) is built from
``recipes/qwen2.5-1.5b/<algorithm>.yaml``: its weighting and ``weighting_kwargs`` (CTWA's gate ``obj_targets``
included), ``advantage_estimator``, ``beta``, ``epsilon``, ``loss_type``, ``weight_decay``, the LR schedule and the
optimizer steps per generation batch (``steps_per_generation / gradient_accumulation_steps``). Only the fields in
:data:`RULES` change, each with its paper value (read from the recipe), its lab value and the reason; the task
(model, data, reward options: :data:`TASK`) is the lab's own. ``accuracy_only`` is the Linear recipe with weights
[1, 0, 0] (:data:`CONTROLS`).

``--eta matched`` also scales each adaptive weighting's step size by (paper weight updates) / (lab weight updates)
(:data:`STEP_SIZES`: which keyword is the step, how often the weighting updates, how the step scales); ``--eta
paper`` (the default) keeps the recipes' step sizes. The paper's run length follows from its recipes: 90 epochs of
the 300 MATH-500 training prompts on 4 processes (:data:`PAPER_PROCESSES`, :data:`PAPER_TRAIN_PROMPTS`), 32 prompts
per generation batch and 2 optimizer steps on each: 810 generation batches, 1,620 optimizer steps (Linear: 64
prompts, 360 and 720).

The recipes are read from the repository next to the package (:func:`recipe_dir`): without one the lab stops.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from mo_align.configs import MOGRPOConfig
from mo_align.lab.catalog import lab_strategies, step_sizes
from mo_align.lab.known_answer import parse_linear_name
from mo_align.recipe import RecipeError, check_recipe
from mo_align.weightings import validate_kwargs, weighting_class
from mo_align.weightings.base import GENERATION, StepSize


RECIPE_SET = "qwen2.5-1.5b"
PAPER_PROCESSES = 4  # GPUs of the paper's runs (the recipes' per-device sizes assume them)
PAPER_TRAIN_PROMPTS = 300  # MATH-500 training split of the paper's runs (dataset_path: data/math500)
ETA_MODES = ("paper", "matched")
DEFAULT_ETA = "paper"
LAB_LR = 1e-4
LAB_OPTIMIZER_STEPS_PER_GENERATION = 2  # = steps_per_generation, with gradient_accumulation_steps 1
# controls: a recipe with these weighting_kwargs changed (listed after their recipe)
CONTROLS: dict[str, dict[str, Any]] = {"accuracy_only": {"weights": [1.0, 0.0, 0.0]}}
CONTROL_RECIPE = "linear"
# reward-design variants: a recipe trained with objective conditions (mo_align.objectives.conditions) the lab adds;
# run by name (--algorithms linear_conditioned), not in make lab's default list
CONDITIONED_CONCISENESS: dict[str, Any] = {
    "conciseness": {"only_if": {"objective": "accuracy", "at_least": 1.0}, "otherwise": 0.0}
}
VARIANTS: dict[str, str] = {"linear_conditioned": "linear"}  # label -> recipe


def _algorithms() -> dict[str, str]:
    """label -> recipe: every strategy the lab runs (:func:`mo_align.lab.catalog.lab_strategies`, each class's
    ``lab_order``) and the controls after their recipe."""
    out = {}
    for name in lab_strategies():
        out[name] = name
        out.update(dict.fromkeys(CONTROLS, name) if name == CONTROL_RECIPE else {})
    return out


ALGORITHMS: dict[str, str] = _algorithms()  # the lab's algorithms in report order
PER_RUN = "per run"  # a lab value set by each run (its directory, seed, steps, evaluation interval)


class LabRecipeError(ValueError):
    """A paper recipe the lab needs is missing or unreadable (one line naming the file)."""


@dataclass(frozen=True)
class Rule:
    """One recipe field the lab changes: ``lab`` (or :data:`PER_RUN`), why, and which recipes it concerns.

    ``kind`` groups the rules: ``scale`` (the budget and batch layout the CPU allows), ``eval`` (the lab's sampled
    evaluation; the recipes do not evaluate), ``harness`` (where and how a run writes, CPU flags)."""

    field: str
    lab: Any
    kind: str
    reason: str
    only: tuple[str, ...] = ()  # recipe names it applies to; empty = every recipe

    def applies(self, recipe: str) -> bool:
        return not self.only or recipe in self.only


RULES: tuple[Rule, ...] = (
    Rule(
        "learning_rate",
        LAB_LR,
        "scale",
        "a 0.8 M-parameter model trained for 50 steps barely moves at 1e-6, and 3e-4 collapsed even the accuracy-only "
        "control; at 1e-4, lr × optimizer steps is 5e-3 (the paper's 1e-6 × 1,620 = 1.6e-3)",
    ),
    Rule("max_steps", PER_RUN, "scale", "--steps optimizer steps (make lab and make demo: 50) instead of 90 epochs"),
    Rule(
        "per_device_train_batch_size",
        64,
        "scale",
        "one CPU process: 8 prompts × 8 completions per optimizer step (the paper: 4 GPUs × 16 × 4 accumulated)",
    ),
    Rule("gradient_accumulation_steps", 1, "scale", "one process, one micro-batch per optimizer step"),
    Rule(
        "steps_per_generation",
        LAB_OPTIMIZER_STEPS_PER_GENERATION,
        "scale",
        "keeps the recipe's 2 optimizer steps per generation batch (steps_per_generation / "
        "gradient_accumulation_steps): 16 prompts × 8 completions generated, trained in 2 steps of 64",
    ),
    Rule("num_generations", 8, "scale", "8 completions per prompt instead of 16: half the CPU generation cost"),
    Rule("max_completion_length", 64, "scale", "the lab's answers are 6 to 37 tokens long"),
    Rule(
        "gramian_params",
        None,
        "scale",
        "the recipe's regex selects decoder layers 10-25 of Qwen2.5-1.5B; the lab's model has 4 layers: every "
        "parameter",
        only=("dynamic",),
    ),
    Rule("eval_strategy", "steps", "eval", "the lab evaluates every --eval-steps optimizer steps"),
    Rule("eval_steps", PER_RUN, "eval", "--eval-steps (default 25)"),
    Rule("eval_on_start", True, "eval", "the step-0 evaluation is every Δ's baseline"),
    Rule("per_device_eval_batch_size", 128, "eval", "the held-out prompts in few batches"),
    Rule(
        "mo_eval_temperature",
        1.0,
        "eval",
        "sampled evaluation: the warm-started policy's greedy mode is one template for every prompt",
    ),
    Rule("mo_eval_num_samples", 4, "eval", "4 samples per held-out prompt"),
    Rule(
        "mo_eval_fixed_reference",
        True,
        "eval",
        "conciseness is scored against the warm-started policy's mean length, not the running training mean",
    ),
    Rule("mo_eval_loss", False, "eval", "TRL's eval loss would sample 8 more completions per prompt"),
    Rule("output_dir", PER_RUN, "harness", "<out>/<algorithm>-seed<s>"),
    Rule("run_name", PER_RUN, "harness", "<algorithm>-seed<s>"),
    Rule("mo_run_label", PER_RUN, "harness", "the lab's algorithm label (accuracy_only for the control)"),
    Rule("seed", PER_RUN, "harness", "--seeds"),
    Rule("use_cpu", True, "harness", "the lab runs on CPU"),
    Rule("bf16", False, "harness", "float32 on CPU"),
    Rule("activation_checkpointing", False, "harness", "a 0.8 M-parameter model needs no activation checkpointing"),
    Rule("save_strategy", "no", "harness", "the lab keeps no checkpoints"),
    Rule("report_to", "none", "harness", "no tracker: the lab writes its own report"),
    Rule("disable_tqdm", True, "harness", "one log line per run in the lab's console"),
)
# fields transformers / TRL derive from changed ones in ``__post_init__`` (they change with them, nothing else)
DERIVED: dict[str, tuple[str, ...]] = {
    "generation_batch_size": ("per_device_train_batch_size", "steps_per_generation"),
    "do_eval": ("eval_strategy",),
    "dataloader_pin_memory": ("use_cpu",),
    "gradient_checkpointing": ("activation_checkpointing",),
}
CONTROL_RULE = Rule(
    "weighting_kwargs.weights",
    [1.0, 0.0, 0.0],
    "scale",
    "accuracy_only: the single-objective control, the Linear recipe with weights [1, 0, 0]",
    only=("accuracy_only",),
)
CONDITION_RULE = Rule(
    "objective_conditions",
    CONDITIONED_CONCISENESS,
    "reward",
    "linear_conditioned: conciseness counts only for a correct answer (a wrong one scores 0), so a wrong compact "
    "answer no longer outscores a correct long one under equal weights",
    only=("linear_conditioned",),
)
# the lab's task in place of the paper's (model and script arguments, not MOGRPOConfig fields)
TASK: tuple[tuple[str, str, str], ...] = (
    (
        "model",
        "Qwen/Qwen2.5-1.5B base, bfloat16, 4 GPUs",
        "a 0.8 M-parameter Qwen2 (4 layers, digit tokenizer) warm-started on styled answers, float32, CPU",
    ),
    ("data", "MATH-500: 300 training prompts, 100 test prompts", "synthetic a±b±c arithmetic (--task regime)"),
    ("accuracy reward", "math-verify (mode: verify)", "exact boxed answer (mode: reference)"),
    (
        "evaluation",
        "greedy, 100 test prompts, every 5 generation batches",
        "sampled at T = 1, 4 per held-out prompt, at step 0 and every --eval-steps",
    ),
)


# recipe -> how its weighting adapts (each class's ``step_size``), in the order of the protocol's step-size table
STEP_SIZES: dict[str, StepSize] = step_sizes()


def recipe_dir() -> Path:
    """``recipes/qwen2.5-1.5b`` of the checkout this package sits in (the recipes are not package data)."""
    return Path(__file__).resolve().parents[2] / "recipes" / RECIPE_SET


def preference_weights(algorithm: str) -> dict[str, Any] | None:
    """Weighting kwargs a control or a known-answer run (``linear-w0.6_0.2_0.2``) sets on the Linear recipe."""
    if algorithm in CONTROLS:
        return CONTROLS[algorithm]
    w = parse_linear_name(algorithm)
    return None if w is None else {"weights": w}


def known_algorithm(algorithm: str) -> bool:
    """Whether the lab can run this label: a strategy or control, a reward-design variant, a known-answer run."""
    return algorithm in ALGORITHMS or algorithm in VARIANTS or preference_weights(algorithm) is not None


def recipe_name(algorithm: str) -> str:
    if algorithm in VARIANTS:
        return VARIANTS[algorithm]
    if algorithm not in ALGORITHMS and preference_weights(algorithm) is not None:
        return "linear"
    if algorithm not in ALGORITHMS:
        raise LabRecipeError(f"mo-align lab: unknown algorithm {algorithm!r}; choose from {list(ALGORITHMS)}")
    return ALGORITHMS[algorithm]


@cache
def _read_recipe(path: str) -> dict[str, Any]:
    if not Path(path).is_file():
        raise LabRecipeError(
            f"mo-align lab: the paper recipe {path} is missing; the lab reads recipes/{RECIPE_SET}/*.yaml from the "
            "repository next to the mo_align package, so run it from a source checkout"
        )
    try:
        check_recipe(path)
    except RecipeError as exc:
        raise LabRecipeError(f"mo-align lab: {exc}") from None
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def paper_recipe(algorithm: str) -> dict[str, Any]:
    """The recipe an algorithm of the lab is built from (a fresh copy; :class:`LabRecipeError` if absent)."""
    return copy.deepcopy(_read_recipe(str(recipe_dir() / f"{recipe_name(algorithm)}.yaml")))


def check_recipes(algorithms: list[str], steps: int = 50, eta: str = DEFAULT_ETA) -> None:
    """Read every recipe the algorithms need and check the weighting kwargs the lab will train with (a matched step
    size beyond the weighting's bounds included), before anything is trained: one-line :class:`LabRecipeError`."""
    for algorithm in algorithms:
        settings = lab_settings(algorithm, steps, eta)
        try:
            validate_kwargs(weighting_class(settings["weighting"]), settings["weighting_kwargs"])
        except (TypeError, ValueError) as exc:
            step = matched_step(algorithm, steps) if eta == "matched" else None
            why = ""
            if step is not None:
                u = step["updates"]
                why = f" (--eta matched: the recipe's {step['paper']:g} for {u['paper']} paper vs {u['lab']} lab "
                why += f"{u['per']} updates; run more --steps or --eta paper)"
            raise LabRecipeError(f"mo-align lab: {algorithm}: {exc}{why}") from None


def _sig(value: float) -> float:
    return float(f"{value:.6g}")


def paper_budget(recipe: dict[str, Any]) -> dict[str, int]:
    """The paper's run length from a recipe: prompts per generation batch, generation batches, optimizer steps."""
    per_step = recipe["per_device_train_batch_size"] * recipe["gradient_accumulation_steps"] * PAPER_PROCESSES
    per_generation = recipe["steps_per_generation"] // recipe["gradient_accumulation_steps"]
    prompts = per_step * per_generation // recipe["num_generations"]
    batches = PAPER_TRAIN_PROMPTS // prompts * int(recipe["num_train_epochs"])
    return {
        "prompts_per_generation": prompts,
        "completions_per_step": per_step,
        "steps_per_generation": per_generation,
        "generation_batches": batches,
        "optimizer_steps": batches * per_generation,
    }


def lab_budget(steps: int) -> dict[str, int]:
    """The lab's run length for ``steps`` optimizer steps (a last, half-used generation batch counts)."""
    return {
        "prompts_per_generation": 64 * LAB_OPTIMIZER_STEPS_PER_GENERATION // 8,
        "completions_per_step": 64,
        "steps_per_generation": LAB_OPTIMIZER_STEPS_PER_GENERATION,
        "generation_batches": math.ceil(steps / LAB_OPTIMIZER_STEPS_PER_GENERATION),
        "optimizer_steps": steps,
    }


def matched_step(algorithm: str, steps: int) -> dict[str, Any] | None:
    """The ``--eta matched`` change of an adaptive algorithm: keyword, paper value, matched value, factor, updates
    (paper, lab); None for a method without a step size."""
    spec = STEP_SIZES.get(recipe_name(algorithm))
    if spec is None or spec.kwarg is None or preference_weights(algorithm) is not None:
        return None
    recipe = paper_recipe(algorithm)
    key = "generation_batches" if spec.cadence == GENERATION else "optimizer_steps"
    paper_updates, lab_updates = paper_budget(recipe)[key], lab_budget(steps)[key]
    paper = recipe["weighting_kwargs"][spec.kwarg]
    if spec.law == "inverse_lr":  # matched Σ_t lr_t / μ: μ scales by (lr_lab U_lab) / (lr_paper U_paper)
        factor = (recipe["learning_rate"] * paper_updates) / (LAB_LR * lab_updates)
        matched = _sig(paper / factor)
    else:
        factor = paper_updates / lab_updates
        matched = _sig(paper * factor)
    return {
        "kwarg": spec.kwarg,
        "paper": paper,
        "matched": matched,
        "factor": _sig(factor),
        "updates": {"per": spec.cadence, "paper": paper_updates, "lab": lab_updates},
        "law": spec.law,
        "lr": {"paper": recipe["learning_rate"], "lab": LAB_LR},
    }


def rules_for(algorithm: str, eta: str = DEFAULT_ETA) -> list[Rule]:
    """The rules that change this algorithm's recipe (its control and matched step size included)."""
    name = recipe_name(algorithm)
    rules = [r for r in RULES if r.applies(name)]
    if algorithm in CONTROLS:
        rules.append(CONTROL_RULE)
    elif algorithm in VARIANTS:
        rules.append(CONDITION_RULE)
    elif preference_weights(algorithm) is not None:
        why = "known-answer check: the Linear recipe at the preference its label names"
        rules.append(Rule("weighting_kwargs.weights", PER_RUN, "scale", why, only=("linear",)))
    if eta == "matched":
        spec = STEP_SIZES.get(name)
        if spec is not None and spec.kwarg is not None and preference_weights(algorithm) is None:
            why = f"--eta matched: the paper's step × weight updates ({spec.note})"
            rules.append(Rule(f"weighting_kwargs.{spec.kwarg}", PER_RUN, "scale", why, only=(name,)))
    return rules


def lab_settings(algorithm: str, steps: int, eta: str = DEFAULT_ETA, **run: Any) -> dict[str, Any]:
    """The ``MOGRPOConfig`` keyword arguments of one lab run: the recipe's training fields with :data:`RULES`
    applied. ``run`` gives the per-run values: ``output_dir``, ``seed``, ``eval_steps`` (``run_name`` and
    ``mo_run_label`` default from the algorithm and seed)."""
    if eta not in ETA_MODES:
        raise LabRecipeError(f"mo-align lab: --eta must be one of {list(ETA_MODES)}, got {eta!r}")
    recipe = paper_recipe(algorithm)
    known = {f for f in MOGRPOConfig.__dataclass_fields__ if MOGRPOConfig.__dataclass_fields__[f].init}
    out = {k: v for k, v in recipe.items() if k in known}
    seed = run.get("seed", 0)
    per_run = {
        "max_steps": steps,
        "output_dir": run.get("output_dir", f"{algorithm}-seed{seed}"),
        "run_name": run.get("run_name", f"{algorithm}-seed{seed}"),
        "mo_run_label": algorithm,
        "seed": seed,
        "eval_steps": run.get("eval_steps", 25),
    }
    for rule in rules_for(algorithm, eta):
        if rule.field.startswith("weighting_kwargs."):
            continue
        out[rule.field] = per_run[rule.field] if rule.lab == PER_RUN else copy.deepcopy(rule.lab)
    kwargs = dict(out.get("weighting_kwargs") or {})
    kwargs.update(preference_weights(algorithm) or {})
    step = matched_step(algorithm, steps) if eta == "matched" else None
    if step is not None:
        kwargs[step["kwarg"]] = step["matched"]
    out["weighting_kwargs"] = kwargs
    return out


def lab_config(algorithm: str, steps: int, eta: str = DEFAULT_ETA, **run: Any) -> Any:
    """The ``MOGRPOConfig`` a lab worker trains with (:func:`lab_settings`)."""
    return MOGRPOConfig(**lab_settings(algorithm, steps, eta, **run))
