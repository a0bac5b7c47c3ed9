"""What the lab prints after its tables about its own fidelity, and ``python -m mo_align.lab --known-answer``.

* :func:`fidelity_lines` (every lab run, :func:`mo_align.lab.run.main`): from the runs' per-sample answer styles
  (``lab_eval_scores.json``), the warm start's style profiles, the known-answer check of every Linear run
  (:mod:`mo_align.lab.known_answer`) and the split of each configuration's Δ accuracy into between- and within-style
  parts (:mod:`mo_align.lab.decompose`); the numbers go to ``fidelity.json``.
* :func:`run_known_answer`: measures the warm start's style profiles on fresh samples (:func:`probe_profiles`: the
  held-out prompts × 4 at T = 1, scored by the lab's rewards with the fixed conciseness reference, as the lab's
  step-0 evaluation), places one Linear preference on each side of the predicted boundary
  (:func:`~mo_align.lab.known_answer.place_preferences`), runs them through the lab (:func:`run_lab`, the same
  workers), then prints :func:`fidelity_lines`.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mo_align.lab import sft
from mo_align.lab.decompose import decompose_runs, format_decomposition, load_styles, write_json
from mo_align.lab.evidence import EVAL_SCORES_FILE
from mo_align.lab.jobs import warm_start_threads
from mo_align.lab.known_answer import (
    MIN_STYLE_SAMPLES,
    SEGMENT,
    check_rows,
    format_check,
    format_profiles,
    linear_name,
    place_preferences,
)
from mo_align.lab.scaling import VARIANTS, known_algorithm, paper_recipe, preference_weights, rules_for
from mo_align.lab.styles import style_of, style_profiles
from mo_align.lab.task import get_regime, prompt_text, split_problems
from mo_align.objectives.conditions import apply_conditions, parse_conditions
from mo_align.rewards import get_reward_funcs


FIDELITY_FILE = "fidelity.json"
_SEED = re.compile(r"-seed\d+$")


def lab_reward_funcs(reference_length: float) -> list:
    """The lab's three objectives (every worker, :func:`mo_align.lab.run.train_one`, and the profile sampling)."""
    return get_reward_funcs(
        ["accuracy", "conciseness", "clarity"],
        {
            "accuracy": {"mode": "reference"},
            "conciseness": {"eval_reference_length": reference_length},
            "clarity": {"strict": True},
        },
    )


def _weights(run: str) -> list[float] | None:
    """A Linear run's weights: its recipe's (linear, accuracy_only) or a :func:`~.known_answer.linear_name`'s."""
    algo = _SEED.sub("", run)
    own = preference_weights(algo)
    if own is not None:
        return list(own["weights"])
    recipe = paper_recipe(algo) if known_algorithm(algo) else {}
    return list(recipe["weighting_kwargs"]["weights"]) if recipe.get("weighting") == "linear" else None


def variant_profiles(labels: Any, rewards: Any, objectives: Sequence[str], variant: str) -> dict[str, Any]:
    """The warm start's style profiles under a reward-design variant's objective conditions (the per-sample rewards
    as that run's weighting sees them: ``linear_conditioned``'s conciseness is 0 where accuracy < 1)."""
    given = next(r.lab for r in rules_for(variant) if r.field == "objective_conditions")
    conditions = parse_conditions(given, list(objectives), "objective_conditions")
    conditioned, _ = apply_conditions(torch.as_tensor(rewards, dtype=torch.float64), list(objectives), conditions)
    return style_profiles(labels, conditioned.numpy(), MIN_STYLE_SAMPLES)


def _check(profiles: dict[str, Any], runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return check_rows({s: p for s, p in profiles.items() if s != "other"}, runs) if runs else []


def fidelity_lines(run_dirs: Sequence[str], out_root: str | None = None, n_boot: int = 2000) -> list[str]:
    """The known-answer table and the Δ-accuracy decomposition of runs from one warm start (module docstring); one
    line saying why when the runs recorded no answer styles."""
    try:  # after a long lab run, a run's unreadable file is one line here, not a crash
        loaded = {
            os.path.basename(os.path.normpath(d)): load_styles(os.path.join(d, EVAL_SCORES_FILE)) for d in run_dirs
        }
    except ValueError as exc:
        return [f"known-answer check and Δ-accuracy decomposition skipped: {exc}"]
    missing = [name for name, data in loaded.items() if data is None]
    if missing or not loaded:
        return [f"known-answer check and Δ-accuracy decomposition skipped: no answer styles recorded in {missing}"]
    first = next(iter(loaded.values()))
    labels = np.concatenate([d["start"]["labels"] for d in loaded.values()])
    rewards = np.concatenate([d["start"]["rewards"] for d in loaded.values()])
    profiles = style_profiles(labels, rewards, MIN_STYLE_SAMPLES)
    lines = format_profiles(profiles, first["objectives"])
    linear = {
        name: {"run": name, "weights": w, "start_labels": d["start"]["labels"], "final_labels": d["final"]["labels"]}
        for name, d in loaded.items()
        if (w := _weights(name)) is not None
    }
    rows = _check(profiles, [r for name, r in linear.items() if _SEED.sub("", name) not in VARIANTS])
    for variant in VARIANTS:  # predicted from the profiles its conditions give
        runs = [r for name, r in linear.items() if _SEED.sub("", name) == variant]
        if runs:
            shaped = variant_profiles(labels, rewards, first["objectives"], variant)
            head, *styles = format_profiles(shaped, first["objectives"])
            lines += ["", f"{variant}: {head} (its objective conditions)", *styles]
            rows += _check(shaped, runs)
    lines += [""] + (format_check(rows) if rows else ["known-answer check: no Linear run among these"])
    entries = [
        {"run": name, "configuration": _SEED.sub("", name), "warm_start": "", "start": d["start"], "final": d["final"]}
        for name, d in loaded.items()
    ]
    split = decompose_runs(entries, n_boot=n_boot)
    lines += ["", *format_decomposition(split)]
    if out_root is not None:
        path = os.path.join(out_root, FIDELITY_FILE)
        write_json({"profiles": profiles, "known_answer": rows, "decomposition": split}, path)
        lines.append(f"numbers: {path}")
    return lines


def probe_profiles(sft_dir: str, reference_length: float, samples: int = 4, seed: int = 0) -> dict[str, Any]:
    """The warm start's style profiles (:func:`~mo_align.lab.styles.style_profiles`) from ``samples`` fresh samples
    of each held-out prompt, scored as the lab's evaluation scores them (conciseness against the fixed reference)."""
    # lazy: TRL (the trainer's evaluation) loads for --known-answer only; the lab's parent never trains
    from mo_align.trainer.evaluation import fixed_reference_columns, score_rewards

    tok = AutoTokenizer.from_pretrained(sft_dir)
    model = AutoModelForCausalLM.from_pretrained(sft_dir, dtype=torch.float32).eval()
    _, held_out = split_problems()
    rows = [
        {"prompt": [{"role": "user", "content": prompt_text(p)}], "answer": str(p[5])}
        for p in held_out
        for _ in range(samples)
    ]
    torch.manual_seed(seed)
    texts = [tok.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in rows]
    ids = sft.sample_ids(model, tok, texts)
    decoded = tok.batch_decode(ids, skip_special_tokens=True)
    funcs = lab_reward_funcs(reference_length)
    scores = score_rewards(
        SimpleNamespace(reward_funcs=funcs, state=None),
        rows,
        [[{"role": "assistant", "content": t}] for t in decoded],
        ids,
    ).numpy()
    for j, k in enumerate(fixed_reference_columns(funcs)):  # the evaluation's conciseness: the fixed reference
        scores[:, k] = scores[:, len(funcs) + j]
    rewards = scores[:, : len(funcs)].reshape(len(held_out), samples, len(funcs))
    labels = np.asarray([style_of(t) for t in decoded], dtype=object).reshape(len(held_out), samples)
    return style_profiles(labels, rewards, MIN_STYLE_SAMPLES)


def run_known_answer(
    run_lab: Callable[..., dict[str, Any]],
    seeds: list[int],
    steps: int,
    eval_steps: int,
    out: str,
    jobs: int,
    sft_steps: int | None,
    cache: str,
    task: str,
    regime: Any,
    sft_threads: int,
) -> list[str]:
    """``--known-answer`` (module docstring): returns the lines :func:`fidelity_lines` prints."""

    def say(msg: str) -> None:
        sys.stdout.write(f"[known-answer] {msg}\n")
        sys.stdout.flush()

    regime = regime or get_regime(task)
    torch.set_num_threads(sft_threads if sft_threads > 0 else warm_start_threads())
    sft_dir, meta = sft.warm_start(
        cache, steps=sft_steps or regime.warm_start_steps, log=say, regime=regime, task=task
    )
    profiles = {s: p for s, p in probe_profiles(sft_dir, meta["reference_length"]).items() if s != "other"}
    for line in format_profiles(profiles, ["accuracy", "conciseness", "clarity"]):
        say(line)
    crossing, prefs = place_preferences(profiles, SEGMENT)
    where = "no crossing" if crossing is None else f"{crossing.before} → {crossing.after} at t = {crossing.t:.3f}"
    say(f"segment w(t) = (1 − t)·{SEGMENT[0]} + t·(1/3, 1/3, 1/3): {where}")
    for p in prefs:
        say(f"preference t = {p.t:.3f}, w = {p.weights}: predicted {p.predicted} (lead {p.gap:+.3f})")
    algorithms = list(dict.fromkeys(linear_name(p.weights) for p in prefs))
    result = run_lab(algorithms, seeds, steps, eval_steps, out, jobs, sft_steps, cache, task, regime, sft_threads)
    return fidelity_lines([r["output_dir"] for r in result["runs"].values()], out)


def known_answer_main(run_lab: Callable[..., dict[str, Any]], a: Any, task: str, regime: Any) -> None:
    """``python -m mo_align.lab --known-answer`` from the lab's parsed arguments: one seed (``--seeds``), 50 steps
    (``--steps``), ``outputs/lab-known-answer`` (``--out``) by default."""
    out = a.out or os.path.join("outputs", "lab-known-answer")
    args = (a.seeds or [0], a.steps or 50, a.eval_steps or 25, out, a.jobs, a.sft_steps, a.cache, task, regime)
    sys.stdout.write("\n" + "\n".join(run_known_answer(run_lab, *args, a.sft_threads)) + "\n")
