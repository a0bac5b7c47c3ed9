"""The run summary, ``mo_summary.json``: its one owner (file name, version, fields, writing, reading, rebuilding).

Written by the trainer into every ``output_dir`` (:func:`summary_from_trainer`, :func:`write_summary`); read by
``mo-align report``, the lab, the card and the push (:func:`load_run`), rebuilt from ``trainer_state.json`` for runs
without one (:func:`from_trainer_state`). :class:`RunSummary` declares the fields.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from mo_align.launch import typed_command
from mo_align.redaction import redact
from mo_align.runs.files import TRAINER_STATE_FILE
from mo_align.runs.jsonfile import (
    SummaryError,
    clip,
    finite_float,
    interval,
    law_records,
    read_json,
    text_or_none,
)
from mo_align.runs.trainer_state import trainer_state_fields
from mo_align.stats import CI, interfering, run_preference


if TYPE_CHECKING:
    from mo_align.trainer import MOGRPOTrainer


SUMMARY_FILE = "mo_summary.json"
SUMMARY_VERSION = 1
TRAIN_FALLBACK = "training batches (no evaluation)"
_CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")


class RunSummary(TypedDict, total=False):
    """The fields of ``mo_summary.json`` (version 1). Curves are lists of ``{"step": int, <key>: {objective: x}}``."""

    version: int
    run_name: str
    output_dir: str
    algorithm: str  # the weighting, or the run's label (``mo_run_label``, e.g. the lab's accuracy_only)
    weighting_hyperparameters: dict[str, Any]
    advantage_estimator: str
    objectives: list[str]
    objective_roles: dict[str, str]  # every objective's role (mo_align.objectives.roles): train, monitor or eval
    objective_conditions: dict[str, Any]  # objective -> {"only_if": {...}, "otherwise": ...} (recipe form)
    seed: int | None
    launch_command: str | None  # as typed, secrets redacted
    dataset_name: str | None
    # {"step", "means", "completion_length", "ci", "delta_ci", "scalar_delta_ci"} (CIs: [low, high]), and
    # "unavailable" {objective: reason} where an objective had no reference to score against (no value, no Δ)
    eval: list[dict[str, Any]]
    start: dict[str, float]  # the first evaluation's means
    final: dict[str, float]
    best: dict[str, float]
    delta: dict[str, float]  # final − start
    weights: list[dict[str, Any]]  # {"step", "weights"}
    cov_ema: list[dict[str, Any]]  # {"step", "values"}
    train_reward: list[dict[str, Any]]  # {"step", "means"}
    events: list[dict[str, Any]]  # {"step", "kind", "objective", "message"}
    law: list[dict[str, Any]]  # the covariance law per (eval interval, objective): predicted_cov, realised, held
    preference: dict[str, Any] | None  # the fixed scalar of scalar_delta_ci: {"weights", "source", "objectives"}
    interference: list[str] | None  # run_interference: the objectives that interfere; None = no intervals
    # preference-conditioned training (mo_align.preferences): the recipe block, the objectives, the column the
    # rewards receive, the preference stated at evaluation and an example statement (how to ask the model)
    preference_conditioning: dict[str, Any] | None
    values_from: str  # "eval", or TRAIN_FALLBACK when a run has no evaluation (set when read)
    source: str | None  # the file it was read from (set when read)


def load_runs(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """:func:`load_run` on every path; run names that collide get a ``#2``, ``#3``, … suffix."""
    runs = [load_run(p) for p in paths]
    if not runs:
        raise SummaryError("no run directories given")
    return unique_run_names(runs)


def load_run(path: str | Path) -> dict[str, Any]:
    """One run as a summary dict (the ``mo_summary.json`` schema, version 1), every field present.

    ``path`` is a run's ``output_dir`` (or directly a ``mo_summary.json`` / ``trainer_state.json`` file). A
    directory uses its ``mo_summary.json`` when there is one, else reconstructs the summary from
    ``trainer_state.json`` in the directory or in its latest ``checkpoint-*`` subdirectory.

    Raises:
        SummaryError: the path does not exist, holds neither file, or the file is not a valid summary/state.
    """
    p = Path(path)
    if p.is_file():
        if p.name == TRAINER_STATE_FILE:
            run_dir = p.parent.parent if _CHECKPOINT_DIR.match(p.parent.name) else p.parent
            return from_trainer_state(p, run_dir)
        return _load_summary_file(p)
    if p.is_dir():
        summary = p / SUMMARY_FILE
        if summary.is_file():
            return _load_summary_file(summary)
        state = _find_trainer_state(p)
        if state is not None:
            return from_trainer_state(state, p)
        raise SummaryError(
            f"{p}: neither {SUMMARY_FILE} nor {TRAINER_STATE_FILE} (in the directory or a checkpoint-* "
            "subdirectory) found; is this a training output_dir?"
        )
    raise SummaryError(f"{p}: no such file or directory")


def from_trainer_state(state_path: Path, run_dir: Path) -> dict[str, Any]:
    """The summary of a run without ``mo_summary.json``, rebuilt from its ``trainer_state.json`` at ``state_path``
    (:func:`mo_align.runs.trainer_state.trainer_state_fields` reads the fields, this module normalises them)."""
    run = normalize_summary(trainer_state_fields(state_path, run_dir))
    run["source"] = str(state_path.resolve())
    return run


def _find_trainer_state(run_dir: Path) -> Path | None:
    direct = run_dir / TRAINER_STATE_FILE
    if direct.is_file():
        return direct
    checkpoints = []
    for child in run_dir.iterdir():
        m = _CHECKPOINT_DIR.match(child.name)
        if m and (child / TRAINER_STATE_FILE).is_file():
            checkpoints.append((int(m.group(1)), child / TRAINER_STATE_FILE))
    return max(checkpoints)[1] if checkpoints else None


def _load_summary_file(path: Path) -> dict[str, Any]:
    raw = read_json(path, finite=True)  # NaN / Infinity in a summary: refused, naming the field
    if not isinstance(raw, dict):
        raise SummaryError(f"{path}: expected a JSON object (the {SUMMARY_FILE} schema), got {type(raw).__name__}")
    version = raw.get("version", SUMMARY_VERSION)
    if version != SUMMARY_VERSION:
        raise SummaryError(
            f"{path}: summary version {clip(repr(version), 40)}; this reader understands version {SUMMARY_VERSION}"
        )
    try:
        run = normalize_summary(raw, default_dir=path.parent)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise SummaryError(f"{path}: malformed summary ({clip(f'{type(e).__name__}: {e}', 120)})") from e
    run["source"] = str(path.resolve())
    return run


def _means(mapping: Any) -> dict[str, float]:
    if not mapping:
        return {}
    return {str(k): finite_float(v) for k, v in dict(mapping).items()}


def _series(entries: Any, value_key: str, field: str = "") -> list[dict[str, Any]]:
    out = []
    for i, entry in enumerate(entries or []):
        out.append({"step": int(entry["step"]), value_key: _means(entry.get(value_key))})
        if "completion_length" in entry:
            out[-1]["completion_length"] = finite_float(entry["completion_length"])
        for key in ("ci", "delta_ci"):  # {objective: [low, high]}
            if entry.get(key):
                out[-1][key] = {str(k): interval(v, f"{field}[{i}].{key}.{k}") for k, v in dict(entry[key]).items()}
        if entry.get("scalar_delta_ci") is not None:
            out[-1]["scalar_delta_ci"] = interval(entry["scalar_delta_ci"], f"{field}[{i}].scalar_delta_ci")
        if entry.get("unavailable"):  # {objective: why it has no value here}
            out[-1]["unavailable"] = {str(k): str(v) for k, v in dict(entry["unavailable"]).items()}
    out.sort(key=lambda e: e["step"])
    return out


def _best_of(evals: list[dict[str, Any]]) -> dict[str, float]:
    best: dict[str, float] = {}
    for entry in evals:
        for name, value in entry["means"].items():
            if not math.isnan(value) and (name not in best or value > best[name]):
                best[name] = value
    return best


def normalize_summary(raw: Mapping[str, Any], default_dir: str | Path | None = None) -> dict[str, Any]:
    """A summary dict with every schema field present and typed; start/final/best/delta are filled from the eval
    curve when missing, and ``delta`` from final − start. Idempotent."""
    output_dir = raw.get("output_dir") or (str(Path(default_dir).resolve()) if default_dir is not None else "")
    run_name = raw.get("run_name") or (Path(output_dir).name if output_dir else "run")
    evals = _series(raw.get("eval"), "means", "eval")
    start, final, best = _means(raw.get("start")), _means(raw.get("final")), _means(raw.get("best"))
    if evals:
        start = start or dict(evals[0]["means"])
        final = final or dict(evals[-1]["means"])
        best = best or _best_of(evals)
    train = _series(raw.get("train_reward"), "means", "train_reward")
    values_from = str(raw.get("values_from") or "eval")
    if not evals and not final and train:
        # a run without evaluation: its first / last / best training-batch means, labelled as such everywhere
        start, final, best = dict(train[0]["means"]), dict(train[-1]["means"]), _best_of(train)
        values_from = TRAIN_FALLBACK
    delta = _means(raw.get("delta")) or {k: final[k] - start[k] for k in final if k in start}
    if not isinstance(raw.get("objectives") or [], list | tuple):
        raise ValueError(f"objectives: expected a list of names, got {type(raw['objectives']).__name__}")
    objectives = [str(o) for o in raw.get("objectives") or []]
    for source in (final, start, *(e["means"] for e in evals)):
        objectives += [k for k in source if k not in objectives]
    run = {
        "version": SUMMARY_VERSION,
        "run_name": str(run_name),
        "output_dir": str(output_dir),
        "algorithm": str(raw.get("algorithm") or "unknown"),
        "weighting_hyperparameters": dict(raw.get("weighting_hyperparameters") or {}),
        "objectives": objectives,
        "objective_roles": {str(k): str(v) for k, v in dict(raw.get("objective_roles") or {}).items()},
        "objective_conditions": dict(raw.get("objective_conditions") or {}),  # checked where used (the card)
        "seed": raw.get("seed"),
        "launch_command": text_or_none(raw.get("launch_command"), "launch_command"),
        "dataset_name": text_or_none(raw.get("dataset_name"), "dataset_name"),
        "eval": evals,
        "start": start,
        "final": final,
        "best": best,
        "delta": delta,
        "weights": _series(raw.get("weights"), "weights", "weights"),
        "cov_ema": _series(raw.get("cov_ema"), "values", "cov_ema"),
        "train_reward": train,
        "values_from": values_from,
        "events": _events(raw.get("events")),
        "law": law_records(raw.get("law") or []),
        "preference": _preference(raw.get("preference")),
        "preference_conditioning": _conditioning(raw.get("preference_conditioning")),
        "source": raw.get("source"),
    }
    run["interference"] = run_interference(run)  # derived: the stored verdict is recomputed from its inputs
    return run


def _events(entries: Any) -> list[dict[str, Any]]:
    events = [
        {
            "step": int(ev["step"]),
            "kind": str(ev.get("kind", "event")),
            "objective": None if ev.get("objective") is None else str(ev["objective"]),
            "message": str(ev.get("message") or ""),
        }
        for ev in entries or []
    ]
    return sorted(events, key=lambda e: e["step"])


def _preference(value: Any) -> dict[str, Any] | None:
    if not value:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("weights"), list):
        raise ValueError(f"preference: expected {{weights, source, objectives}}, got {clip(repr(value), 40)}")
    names = [str(o) for o in value.get("objectives") or []]
    return {
        "weights": [finite_float(w) for w in value["weights"]],
        "source": str(value.get("source", "")),
        "objectives": names,
    }


def _conditioning(value: Any) -> dict[str, Any] | None:
    if not value:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("template"), str):
        raise ValueError(
            f"preference_conditioning: expected {{template, placement, ...}}, got {clip(repr(value), 40)}"
        )
    return dict(value)


def run_interference(run: Mapping[str, Any]) -> list[str] | None:
    """A run's interference verdict: :func:`mo_align.stats.interfering` (the one rule) on its last evaluation's
    paired CIs of Δ vs the start, each objective's and the fixed scalar's (``scalar_delta_ci``, with the run's
    ``preference``). The objectives that interfere, ``[]`` for none; ``None`` when the run recorded no such
    intervals (no evaluation, a summary rebuilt from ``trainer_state.json`` or written before them)."""
    evals = run.get("eval") or []
    last = evals[-1] if evals and run.get("values_from", "eval") == "eval" else {}
    scalar, deltas = last.get("scalar_delta_ci"), last.get("delta_ci")
    if scalar is None or not deltas:
        return None
    return interfering({n: CI(math.nan, *pair) for n, pair in deltas.items()}, CI(math.nan, *scalar))


def unique_run_names(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, int] = {}
    out = []
    for run in runs:
        name = run["run_name"]
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            run = {**run, "run_name": f"{name}#{seen[name]}"}
        out.append(run)
    return out


# ---- writing ------------------------------------------------------------------------------------------------------
def summary_from_trainer(trainer: MOGRPOTrainer) -> RunSummary:
    """The summary of a running ``MOGRPOTrainer``: eval curve, weights, covariance EMAs, events, final/best/delta."""
    t, mo = trainer, trainer.mo
    hist = mo.history
    evals = hist["eval"]
    start = {k: v for k, v in (mo.eval_start or {}).items() if k != "__scalar__"}
    final = dict(evals[-1]["means"]) if evals else {}
    finite = {n: [e["means"][n] for e in evals if math.isfinite(e["means"][n])] for n in mo.objective_names}
    best = {n: max(v, default=math.nan) for n, v in finite.items()} if evals else {}
    return RunSummary(
        version=SUMMARY_VERSION,
        run_name=t.args.run_name or os.path.basename(os.path.normpath(t.args.output_dir)),
        output_dir=os.path.abspath(t.args.output_dir),
        algorithm=getattr(t.args, "mo_run_label", None) or mo.weighting.name,
        weighting_hyperparameters=json_safe(mo.weighting.hyperparameters()),
        advantage_estimator=t.args.advantage_estimator,
        objectives=list(mo.objective_names),
        **(mo.plan.record() if mo.plan is not None else {}),  # objective_roles, objective_conditions
        seed=t.args.seed,
        launch_command=redact(typed_command()),
        dataset_name=getattr(t.args, "mo_dataset_name", None),
        eval=evals,
        start=start,
        final=final,
        best=best,
        delta={n: final[n] - start[n] for n in final if n in start},
        weights=hist["weights"],
        cov_ema=hist["cov_ema"],
        train_reward=hist["train_reward"],
        events=list(mo.monitor.events) if mo.monitor is not None else [],
        law=list(mo.monitor.law) if mo.monitor is not None else [],
        preference=_run_preference(t, start),
        interference=run_interference({"eval": evals}),
        preference_conditioning=mo.conditioning.record() if mo.conditioning is not None else None,
    )


def _run_preference(trainer: MOGRPOTrainer, start: Mapping[str, float]) -> dict[str, Any]:
    """The fixed scalar of the trainer's ``scalar_delta_ci``: weights, where they came from, the objectives in it
    (those the first evaluation scored)."""
    trained = trainer.mo.weighted_names  # the fixed scalar is over the objectives the weighting combines
    weights, source = run_preference(trainer.weighting.hyperparameters(), len(trained))
    names = [n for n in trained if math.isfinite(start.get(n, math.nan))]
    return {"weights": weights, "source": source, "objectives": names}


def write_summary(summary: Mapping[str, Any], output_dir: str | os.PathLike) -> str:
    """Write ``<output_dir>/mo_summary.json`` atomically (a reader never sees half a file); returns its path."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, SUMMARY_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(json_safe(dict(summary)), f, indent=1)
    os.replace(path + ".tmp", path)
    return path


def json_safe(value: Any) -> Any:
    """Tensors and tuples to lists, non-finite floats to None, recursively (JSON has no NaN)."""
    if hasattr(value, "tolist") and callable(value.tolist):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def law_tally(law: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """A run's covariance-law checks counted: held / failed (significant changes), not significant (no verdict)."""
    v = [x.get("held") for x in law]
    return {"held": v.count(True), "failed": v.count(False), "not_significant": v.count(None)}
