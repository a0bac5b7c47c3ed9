"""The lab's scaling rule (:mod:`mo_align.lab.scaling`) written out: as JSON for the lab's output files
(:func:`record`; each run's effective settings: :func:`write_settings`), as the lines every lab run prints first
(:func:`describe`) and as the markdown of ``docs/lab_protocol.md``, the paper's protocol beside the lab's
(:func:`protocol_markdown`, ``python -m mo_align.lab --print-protocol``).
"""

from __future__ import annotations

import json
import os
from typing import Any

from mo_align.configs import MOGRPOConfig
from mo_align.lab import scaling
from mo_align.lab.scaling import ALGORITHMS, PER_RUN, RULES, STEP_SIZES, TASK


DOC_STEPS = 50  # make lab's run length: the one docs/lab_protocol.md is written for
SETTINGS_FILE = "lab_settings.json"  # a run's effective MOGRPOConfig keyword arguments


def record(algorithms: list[str], steps: int, eta: str, eval_steps: int | None = None) -> dict[str, Any]:
    """The rule as JSON: every changed field with its paper and lab values and reason (per algorithm), the fields
    each algorithm changes, the run lengths and the step sizes (paper, matched, and the one used)."""
    fields: dict[str, Any] = {}
    for algorithm in algorithms:
        recipe = scaling.paper_recipe(algorithm)
        for rule in scaling.rules_for(algorithm, eta):
            entry = fields.setdefault(rule.field, {"kind": rule.kind, "reason": rule.reason, "paper": {}, "lab": {}})
            entry["paper"][algorithm] = _recipe_value(recipe, rule.field)
            entry["lab"][algorithm] = _lab_value(algorithm, rule, steps, eval_steps)
    step_sizes = {}
    for algorithm in algorithms:
        step = scaling.matched_step(algorithm, steps)
        if step is not None:
            step_sizes[algorithm] = {**step, "used": step["matched"] if eta == "matched" else step["paper"]}
    return {
        "recipes": f"recipes/{scaling.RECIPE_SET}",
        "eta": eta,
        "steps": steps,
        "paper_budget": {a: scaling.paper_budget(scaling.paper_recipe(a)) for a in algorithms},
        "lab_budget": scaling.lab_budget(steps),
        "fields": fields,
        "changed": {a: [r.field for r in scaling.rules_for(a, eta)] for a in algorithms},
        "step_sizes": step_sizes,
        "task": [{"item": item, "paper": paper, "lab": lab} for item, paper, lab in TASK],
    }


def write_settings(run_dir: str, settings: dict[str, Any]) -> None:
    """Record a run's effective settings (``lab_settings.json``): what it trained with, and what a resumed sweep
    compares before reusing it."""
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, SETTINGS_FILE), "w") as f:
        json.dump(settings, f, indent=1)


def same_settings(run_dir: str, settings: dict[str, Any]) -> bool:
    """Whether ``run_dir`` recorded these settings (its ``output_dir`` aside: a moved sweep keeps its runs)."""
    path = os.path.join(run_dir, SETTINGS_FILE)
    if not os.path.exists(path):
        return False
    with open(path) as f:
        recorded = json.load(f)
    strip = {"output_dir": None}
    return {**recorded, **strip} == json.loads(json.dumps({**settings, **strip}))


def _recipe_value(recipe: dict[str, Any], field: str) -> Any:
    if field.startswith("weighting_kwargs."):
        return (recipe.get("weighting_kwargs") or {}).get(field.split(".", 1)[1])
    if field == "max_steps":
        return f"{recipe['num_train_epochs']} epochs"
    if field in recipe:
        return recipe[field]

    default = MOGRPOConfig.__dataclass_fields__[field].default  # not in the recipe: MOGRPOConfig's default
    return getattr(default, "value", default)  # an enum default as its string


def _lab_value(algorithm: str, rule: scaling.Rule, steps: int, eval_steps: int | None = None) -> Any:
    if rule.field == "max_steps":
        return steps
    if rule.field == "eval_steps" and eval_steps is not None:
        return eval_steps
    if rule.field.startswith("weighting_kwargs.") and rule.lab == PER_RUN:
        step = scaling.matched_step(algorithm, steps)
        return None if step is None else step["matched"]
    return rule.lab


def _step_line(algorithm: str, step: dict[str, Any], eta: str) -> str:
    u, lr = step["updates"], step["lr"]
    per = _plural(u["per"])
    if step["law"] == "inverse_lr":
        why = f"(lr {lr['paper']:g} × {u['paper']}) / (lr {lr['lab']:g} × {u['lab']}) {per}, applied to 1/μ"
    else:
        why = f"{u['paper']} / {u['lab']} {per}"
    return (
        f"  --eta {eta}: {algorithm} {step['kwarg']} {step['used']:g} (paper {step['paper']:g}; matched "
        f"{step['matched']:g}, factor {step['factor']:g} = {why})"
    )


def describe(algorithms: list[str], steps: int, eta: str, eval_steps: int | None = None) -> list[str]:
    """The lines the lab prints before training: what it changes in the recipes, and the step sizes it uses."""
    rec = record(algorithms, steps, eta, eval_steps)
    lines = [f"lab scaling: {rec['recipes']}/<algorithm>.yaml, except (field: paper -> lab; reason):"]
    for field, entry in rec["fields"].items():
        if entry["kind"] != "harness":
            lines.append(f"  {field}: {_collapse(entry['paper'])} -> {_collapse(entry['lab'])}; {entry['reason']}")
    harness = [f for f, e in rec["fields"].items() if e["kind"] == "harness"]
    lines.append(f"  and the run's own {', '.join(harness)}")
    lines += [_step_line(algorithm, step, eta) for algorithm, step in rec["step_sizes"].items()]
    return lines


def _plural(cadence: str) -> str:
    return cadence[:-5] + "batches" if cadence.endswith("batch") else cadence + "s"


def _collapse(values: dict[str, Any]) -> str:
    distinct = {repr(v) for v in values.values()}
    if len(distinct) == 1:
        return str(next(iter(values.values())))
    return ", ".join(f"{a} {v}" for a, v in values.items())


# ---- docs/lab_protocol.md ------------------------------------------------------------------------------------------
def _recipes() -> dict[str, dict[str, Any]]:
    """Every recipe the lab builds from, by recipe name (the controls share their recipe)."""
    return {name: scaling.paper_recipe(name) for name in dict.fromkeys(ALGORITHMS.values())}


def _grouped(values: dict[str, Any]) -> str:
    """``v`` when every recipe agrees, else the most common value then ``other: recipes`` for the rest."""
    groups: dict[str, list[str]] = {}
    for name, value in values.items():
        groups.setdefault(_fmt(value), []).append(name)
    ordered = sorted(groups.items(), key=lambda item: -len(item[1]))
    if len(ordered) == 1:
        return ordered[0][0]
    if len(ordered) == len(values) > 2:  # a value of its own for every recipe (output_dir)
        return f"per recipe ({ordered[0][0]}, ...)"
    return ordered[0][0] + "; " + "; ".join(f"{v} ({', '.join(names)})" for v, names in ordered[1:])


def _cell(text: str) -> str:
    """Text in a markdown table cell (a ``|`` of a regex would end the cell)."""
    return text.replace("|", "\\|")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def _setting_rows(steps: int) -> list[tuple[str, str, str]]:
    recipes = _recipes()
    budgets = {n: scaling.paper_budget(r) for n, r in recipes.items()}
    lab = scaling.lab_budget(steps)

    def paper(key: str) -> str:
        return _grouped({n: b[key] for n, b in budgets.items()})

    def field(name: str) -> str:
        return _grouped({n: r.get(name) for n, r in recipes.items()})

    per_generation = {
        n: f"{b['prompts_per_generation']} × {recipes[n]['num_generations']}" for n, b in budgets.items()
    }
    pace = {n: recipes[n]["learning_rate"] * b["optimizer_steps"] for n, b in budgets.items()}
    same = "as the paper"
    rows = [(item, p, lab_text) for item, p, lab_text in TASK]
    rows += [
        ("generation batches", paper("generation_batches"), str(lab["generation_batches"])),
        ("optimizer steps", paper("optimizer_steps"), str(lab["optimizer_steps"])),
        ("optimizer steps per generation batch", paper("steps_per_generation"), str(lab["steps_per_generation"])),
        (
            "prompts × completions per generation batch",
            _grouped(per_generation),
            f"{lab['prompts_per_generation']} × 8",
        ),
        ("completions per optimizer step", paper("completions_per_step"), str(lab["completions_per_step"])),
        ("max completion tokens", field("max_completion_length"), "64"),
        ("learning rate", field("learning_rate"), f"{scaling.LAB_LR:g}"),
        ("lr × optimizer steps", _grouped(pace), f"{scaling.LAB_LR * steps:g}"),
        ("LR schedule", field("lr_scheduler_type"), same),
        ("KL β", field("beta"), same),
        ("advantage estimator", field("advantage_estimator"), same),
        ("clipping ε", field("epsilon"), same),
        ("loss type", field("loss_type"), same),
        ("weight decay", field("weight_decay"), same),
        ("CTWA gate obj_targets", _fmt(recipes["ctwa"]["weighting_kwargs"].get("obj_targets")), same),
        ("CTWA covariance targets", _fmt(recipes["ctwa"]["weighting_kwargs"].get("cov_targets")), same),
    ]
    return rows


def _step_rows(steps: int) -> list[str]:
    rows = []
    for name, spec in STEP_SIZES.items():
        step = scaling.matched_step(name, steps)
        if step is None:
            rows.append(f"| {name} | — | {spec.cadence or '—'} | — | — | — | — | {spec.note} |")
            continue
        u = step["updates"]
        factor = f"×{step['factor']:g}"
        if step["law"] == "inverse_lr":
            lr = step["lr"]
            factor += (
                f" on lr/μ: ({lr['paper']:g} × {u['paper']}) / ({lr['lab']:g} × {u['lab']}); μ ÷ {step['factor']:g}"
            )
        else:
            factor += f": {u['paper']} / {u['lab']}"
        rows.append(
            f"| {name} | {step['kwarg']} | {u['per']} | {step['paper']:g} × {u['paper']} | {step['paper']:g} × "
            f"{u['lab']} | {step['matched']:g} × {u['lab']} | {factor} | {spec.note} |"
        )
    return rows


def _field_rows(steps: int) -> list[str]:
    recipes = _recipes()
    rows = []
    labelled = (scaling.CONTROL_RULE, scaling.CONDITION_RULE)  # set on a lab label built from the Linear recipe
    for rule in [*RULES, *labelled]:
        names = [n for n in recipes if rule.applies(n)] if rule not in labelled else [scaling.CONTROL_RECIPE]
        paper = _grouped({n: _recipe_value(recipes[n], rule.field) for n in names})
        lab = {"max_steps": f"--steps ({steps})"}.get(rule.field, _fmt(rule.lab))
        where = ", ".join(rule.only) if rule.only else "all"
        rows.append(f"| {rule.field} | {_cell(paper)} | {_cell(lab)} | {where} | {rule.kind} | {_cell(rule.reason)} |")
    kwargs = [f"weighting_kwargs.{s.kwarg}" for s in STEP_SIZES.values() if s.kwarg]
    rows.append(
        f"| {', '.join(kwargs)} | the recipe's | matched value (table above) | --eta matched | scale | the paper's "
        "step × weight updates |"
    )
    return rows


def protocol_markdown(steps: int = DOC_STEPS) -> str:
    """``docs/lab_protocol.md``: the paper's protocol beside the lab's, the adaptive step sizes (paper and matched)
    and every field the lab changes, all from :mod:`mo_align.lab.scaling` and the recipes."""
    lines = [
        "# The lab's protocol beside the paper's",
        "",
        "Generated by `python -m mo_align.lab --print-protocol` from the lab's scaling rule (`mo_align/lab/scaling.py`) "
        "and the recipes; a test checks that this file is its output. Every lab run (`make lab`, `make demo`, "
        f"`make lab-sweep`, `make lab-front`) is `recipes/{scaling.RECIPE_SET}/<algorithm>.yaml` with only the fields "
        "of the last table changed; the lab prints them first and writes them into `lab_result.json` and "
        "`interference.json` (`make lab-front`: `lab_scaling.json`), and each run its effective settings into "
        "`lab_settings.json`. `accuracy_only` is the Linear recipe with weights [1, 0, 0].",
        "",
        f"## Setting (paper recipes; lab at `make lab`'s {steps} steps)",
        "",
        "| | paper | lab |",
        "|---|---|---|",
        *[f"| {item} | {paper} | {lab} |" for item, paper, lab in _setting_rows(steps)],
        "",
        "Where recipes differ, the first value is the most common one and the others name their recipes. The paper's "
        f"run lengths assume its {scaling.PAPER_PROCESSES} processes and {scaling.PAPER_TRAIN_PROMPTS} training "
        "prompts per epoch.",
        "",
        "## Step sizes of the adaptive methods (step × weight updates)",
        "",
        f"`--eta {scaling.DEFAULT_ETA}` (the default) keeps the recipes' step sizes; `--eta matched` multiplies each by "
        "(paper weight updates) / (lab weight updates), so the weights can travel as far as in the paper. Factors for "
        f"{steps} steps (`make lab` and `make demo`); every run prints its own.",
        "",
        "| method | step size | updates per | paper | lab, --eta paper | lab, --eta matched | matched factor | how it scales |",
        "|---|---|---|---|---|---|---|---|",
        *_step_rows(steps),
        "",
        "## Fields the lab changes",
        "",
        "| field | paper | lab | recipes | kind | reason |",
        "|---|---|---|---|---|---|",
        *_field_rows(steps),
        "",
        "Derived from them by transformers / TRL: "
        + "; ".join(f"{k} (from {', '.join(v)})" for k, v in scaling.DERIVED.items())
        + ". Every other field is the recipe's.",
        "",
    ]
    return "\n".join(lines)
