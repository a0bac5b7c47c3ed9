"""Rebuild a run summary from transformers' ``trainer_state.json`` (runs without ``mo_summary.json``).

:func:`trainer_state_fields` reads the ``log_history`` the trainer logged (per-objective eval means, weights,
covariance EMAs, training rewards, events) into the fields of :class:`mo_align.runs.summary.RunSummary`; the summary
module stays the one owner of the schema: :func:`mo_align.runs.summary.from_trainer_state` normalises them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mo_align.runs.jsonfile import SummaryError, finite_float, read_json


# ``mo/<segment>/...`` segments the trainer logs for every weighting; any other segment is the weighting's own name
_GENERIC = ("weight", "reward", "scalar", "adv", "grad_weight", "grad_norm", "cov_ema", "events")
_GENERIC_MO_SEGMENTS = frozenset(_GENERIC)
_SERIES_KEYS = ("eval", "weights", "cov_ema", "train_reward")


def _eval_objective(key: str) -> str | None:
    """The objective of a per-objective eval mean: ``eval_<objective>/mean`` (or ``eval/<objective>/mean``, the
    name before mo_align 0.1's transformers-style metrics); None for any other key, including TRL's own
    ``eval_rewards/<name>/mean`` and ``eval_mo/...``."""
    for prefix in ("eval_", "eval/"):
        if key.startswith(prefix) and key.endswith("/mean"):
            name = key[len(prefix) : -len("/mean")]
            return name if name and "/" not in name else None
    return None


def trainer_state_fields(state_path: Path, run_dir: Path) -> dict[str, Any]:
    """The summary fields (not yet normalised) rebuilt from ``log_history``: ``eval_<objective>/mean``,
    ``mo/weight/<objective>``, ``mo/cov_ema/<objective>`` (else the strategy's own ``mo/<name>/<cov_ema_metric><objective>``, CTWA's ema/),
    TRL's ``rewards/<objective>/mean`` (else ``mo/reward/<objective>/mean``, the same mean as older versions logged) and
    ``mo/events/<kind>/<objective>`` (fired when > 0). The algorithm is the one ``mo/<name>/...`` namespace the
    weighting logged under, else ``"unknown"``."""
    state = read_json(state_path)  # transformers writes NaN losses here; non-finite values: missing (finite_float)
    history = state.get("log_history") if isinstance(state, dict) else None
    if not isinstance(history, list):
        raise SummaryError(f"{state_path}: no log_history list; not a transformers trainer_state.json")
    parsed = _HistoryParser()
    for entry in history:
        if isinstance(entry, dict) and entry.get("step") is not None:
            parsed.add(int(entry["step"]), entry)
    series, objectives = parsed.series, parsed.objectives
    for kind in ("weights", "train_reward", "cov_ema"):
        for step in sorted(series[kind]):
            objectives += [n for n in series[kind][step] if n not in objectives]
    cov = series["cov_ema"] or series["strategy_cov_ema"]
    evals = []
    for step in sorted(series["eval"]):
        evals.append({"step": step, "means": series["eval"][step]})
        if step in parsed.eval_lengths:
            evals[-1]["completion_length"] = parsed.eval_lengths[step]
    raw = {
        "run_name": run_dir.resolve().name,
        "output_dir": str(run_dir.resolve()),
        "algorithm": parsed.algorithms[0] if len(parsed.algorithms) == 1 else "unknown",
        "objectives": objectives,
        "eval": evals,
        "weights": [{"step": s, "weights": series["weights"][s]} for s in sorted(series["weights"])],
        "cov_ema": [{"step": s, "values": cov[s]} for s in sorted(cov)],
        "train_reward": [{"step": s, "means": series["train_reward"][s]} for s in sorted(series["train_reward"])],
        "events": parsed.events,
    }
    return raw


class _HistoryParser:
    """Collects the summary's series from ``log_history`` entries (see :func:`trainer_state_fields`)."""

    def __init__(self) -> None:
        self.series: dict[str, dict[int, dict[str, float]]] = {k: {} for k in (*_SERIES_KEYS, "strategy_cov_ema")}
        self.eval_lengths: dict[int, float] = {}
        self.events: list[dict[str, Any]] = []
        self.algorithms: list[str] = []
        self.objectives: list[str] = []

    def put(self, kind: str, step: int, name: str, value: Any) -> None:
        self.series[kind].setdefault(step, {})[name] = finite_float(value)
        if kind == "eval" and name not in self.objectives:
            self.objectives.append(name)

    def add(self, step: int, entry: Mapping[str, Any]) -> None:
        for key, value in entry.items():
            name = _eval_objective(key)
            if name == "completion_length":
                self.eval_lengths[step] = finite_float(value)
            elif name is not None:
                self.put("eval", step, name, value)
            elif key.startswith("rewards/") and key.endswith("/mean"):
                self.put("train_reward", step, key[len("rewards/") : -len("/mean")], value)
            elif key.startswith("mo/"):
                segment, _, rest = key[len("mo/") :].partition("/")
                if rest:
                    self._mo(step, entry, key, segment, rest, value)

    def _mo(self, step: int, entry: Mapping[str, Any], key: str, segment: str, rest: str, value: Any) -> None:
        if segment == "weight":
            self.put("weights", step, rest, value)
        elif segment == "cov_ema":
            self.put("cov_ema", step, rest, value)
        elif segment == "reward" and rest.endswith("/mean"):  # older logs; TRL's rewards/<name>/mean wins
            name = rest[: -len("/mean")]
            if f"rewards/{name}/mean" not in entry:
                self.put("train_reward", step, name, value)
        elif segment == "events":
            kind, _, objective = rest.partition("/")
            if finite_float(value) > 0:
                message = f"{kind} on {objective or 'the run'} at step {step} (from {key})"
                self.events.append({"step": step, "kind": kind, "objective": objective or None, "message": message})
        elif segment not in _GENERIC_MO_SEGMENTS:
            if segment not in self.algorithms:
                self.algorithms.append(segment)
            # lazy: the weightings (torch) load only for a strategy's own covariance EMA (Weighting.cov_ema_metric);
            # mo-align report reads summaries without torch
            from mo_align.weightings import REGISTRY

            prefix = getattr(REGISTRY.get(segment), "cov_ema_metric", None)
            if prefix and rest.startswith(prefix):
                self.put("strategy_cov_ema", step, rest[len(prefix) :], value)
