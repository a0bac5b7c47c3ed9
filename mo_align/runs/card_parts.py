"""Pieces of a model card: table cells, the algorithm's description and papers (links and BibTeX), the launch command.

Every user string that reaches a cell is escaped here (:mod:`mo_align.runs.markdown`); the papers are the run's
weighting class's own (its ``papers``, :mod:`mo_align.weightings.papers`), after the paper every run cites.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mo_align.objectives.conditions import parse_condition
from mo_align.runs import markdown as md
from mo_align.weightings import registered_class
from mo_align.weightings.papers import INTERFERENCE, Paper


__all__ = [
    "GRPO_PAPER",
    "PAPER",
    "Code",
    "algorithm_description",
    "algorithm_papers",
    "cell_rows",
    "citation",
    "launch_with_recipe",
    "objective_lines",
    "paper_links",
]

PAPER = (INTERFERENCE.title, INTERFERENCE.url)
GRPO_PAPER = (
    "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models (GRPO)",
    "https://huggingface.co/papers/2402.03300",
)


# ---- cells ---------------------------------------------------------------------------------------------------------
def fmt(value: Any, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:+.4f}" if signed else f"{value:.4f}"
    return str(value)


def short(value: Any) -> Any:
    """Floats to 6 significant digits, recursively (float32 weights read back as 0.699999988...)."""
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.6g}")
    if isinstance(value, Mapping):
        return {k: short(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [short(v) for v in value]
    return value


class Code(str):
    """A table cell shown as a code span (a name: objective, hyperparameter)."""


_PLAIN_JSON = re.compile(r"[A-Za-z0-9 .,+\-\[\]]*")  # numbers, booleans, null and lists of them


def cell(value: Any) -> str:
    """A value rendered for one Markdown table cell: a string as text, JSON of numbers as is, other JSON (which
    may hold strings) as a code span; one line, pipes escaped."""
    if isinstance(value, Code):
        return md.code(value, table=True)
    if isinstance(value, str):
        return md.text(value)
    dumped = json.dumps(short(value))
    return dumped if _PLAIN_JSON.fullmatch(dumped) else md.code(dumped, table=True)


def cell_rows(values: Iterable[Sequence[Any]]) -> list[list[str]]:
    return [[cell(c) for c in row] for row in values]


# ---- objectives: roles and conditions -------------------------------------------------------------------------------
ROLE_TEXT = {
    "train": "train (combined by the weighting)",
    "monitor": "monitor (scored, logged, evaluated and watched; not weighted)",
    "eval": "eval (scored at evaluation only)",
}


def objective_lines(summary: Mapping[str, Any], objectives: Sequence[str]) -> list[str]:
    """The card's objective list: each objective with its role and its condition when the run recorded them
    (``objective_roles``, ``objective_conditions`` of the run summary), escaped."""
    roles = summary.get("objective_roles") or {}
    conditions = summary.get("objective_conditions") or {}
    lines = []
    for name in objectives:
        line = md.code(name)
        if roles:
            role = str(roles.get(name, "train"))
            line += f": {md.text(ROLE_TEXT.get(role, role))}"
        if name in conditions:
            try:
                words = parse_condition(name, conditions[name], "objective_conditions").describe()
            except ValueError:  # a summary is an untrusted file: show what it holds
                words = f"condition {json.dumps(conditions[name], default=str)}"
            line += f"; {md.text(words)}"
        lines.append(line)
    return lines


# ---- the algorithm and its papers ----------------------------------------------------------------------------------
def _weighting_class(algorithm: str) -> Any:
    """The registered class of a name read from a run's files (a registry key or ``jd:<Name>``), else ``None``; a
    name read from a file never imports anything (no dotted path is resolved here)."""
    return registered_class(algorithm)


def algorithm_description(algorithm: str) -> str:
    """The first line of the weighting module's docstring (``""`` for an unknown algorithm)."""
    cls = _weighting_class(algorithm)
    doc = sys.modules[cls.__module__].__doc__ if cls is not None else None
    if not doc:
        return ""
    return doc.strip().splitlines()[0].strip()


def algorithm_papers(algorithm: str, hyperparameters: Mapping[str, Any] | None = None) -> list[Paper]:
    """The papers of a run: arXiv 2602.06869 (always), the weighting class's ``papers`` and, for a strategy that
    wraps another (CTWA's ``base``), the wrapped one's; each once."""
    papers = [INTERFERENCE]
    cls = _weighting_class(algorithm)
    papers += list(getattr(cls, "papers", ()))
    base = (hyperparameters or {}).get("base")
    inner = _weighting_class(base) if isinstance(base, str) and base != algorithm else None
    papers += list(getattr(inner, "papers", ()))
    return list(dict.fromkeys(papers))


def paper_links(algorithm: str, hyperparameters: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    """(title, url) of the papers behind a run: :func:`algorithm_papers` (those with a page), then GRPO's."""
    links = [(p.label, p.url) for p in algorithm_papers(algorithm, hyperparameters) if p.url]
    return [*links, GRPO_PAPER]


def citation(algorithm: str, hyperparameters: Mapping[str, Any] | None = None) -> str:
    """The BibTeX entries of :func:`algorithm_papers`, one after another."""
    return "\n\n".join(p.bibtex() for p in algorithm_papers(algorithm, hyperparameters))


# ---- the launch command --------------------------------------------------------------------------------------------
_CONFIG_VALUE = re.compile(r"(?<!\S)(--config(?:=|\s+))(\"[^\"]*\"|'[^']*'|\S+)")


def launch_with_recipe(command: str | None, recipe_file: str | None) -> str | None:
    """``command`` with the value of its ``--config`` replaced by ``recipe_file`` (the copy uploaded with the
    model), so the command runs from a download of the repository; unchanged without a recipe file."""
    if not command or not recipe_file:
        return command
    return _CONFIG_VALUE.sub(lambda m: m.group(1) + recipe_file, command, count=1)
