"""Committed lab results: the files behind every lab number the docs quote, and those numbers recomputed from them.

A lab run leaves three small files beside its output (``mo_summary.json``: the evaluation means, weights and
covariance records; ``lab_eval_scores.json``: every evaluation's per-sample rewards and answer styles;
``lab_settings.json``: the configuration it trained with). :func:`archive` copies them, gzip-compressed and otherwise
byte for byte, into one directory with an index; :func:`tables` recomputes from such a directory the text the docs
print — the seed-level tables (Δ vs the warm start and each algorithm − Linear, paired by seed, t intervals over
seeds, Holm-adjusted; :mod:`mo_align.runs.report.seeds`), the known-answer check (:mod:`mo_align.lab.known_answer`)
and the Δ-accuracy split (:mod:`mo_align.lab.decompose`) — so anyone can check a published number without rerunning
the lab::

    python -m mo_align.lab --tables docs/results/lab/tradeoff-paper

Runs of one algorithm under another step-size rule (``--eta matched``) are archived under a **label**: the run
``ctwa-seed0`` archived with label ``ctwa@matched`` becomes the row ``ctwa@matched`` (its summary's run name is the
only field the index changes, when the tables read it; the stored file is the original).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

from mo_align.cli import UsageError
from mo_align.lab.evidence import EVAL_SCORES_FILE
from mo_align.lab.fidelity import fidelity_lines
from mo_align.lab.horizon import horizon_lines, horizon_rows
from mo_align.lab.protocol import SETTINGS_FILE
from mo_align.lab.scaling import paper_recipe
from mo_align.runs.report.analysis import analyse
from mo_align.runs.report.law import PREDICTORS
from mo_align.runs.report.render import columns
from mo_align.runs.report.seeds import seed_tables
from mo_align.runs.summary import SUMMARY_FILE, load_runs


INDEX_FILE = "index.json"
RUN_FILES = (SUMMARY_FILE, EVAL_SCORES_FILE, SETTINGS_FILE)
_SEED = re.compile(r"-seed(\d+)$")
_LABEL = re.compile(r"^[A-Za-z0-9_.@-]+$")
ALGORITHM_FIELD = "{algorithm}"  # in an --archive label: the run's algorithm
_LAW_KEYS = (
    *(f"{p}_{k}" for p in PREDICTORS for k in ("hits", "n")),
    "records",
    "not_significant",
    "undetermined",
    "forced_intervals",
    "judged_intervals",
)


class ResultsError(ValueError):
    """An archive that cannot be written or read (one line naming the file)."""


def run_label(run_name: str, label: str | None) -> str | None:
    """The label of one run: ``label`` with ``{algorithm}`` replaced by the run's algorithm (its name without
    ``-seed<N>``), so that one ``--label '{algorithm}@matched'`` names the rows of several algorithms."""
    return None if label is None else label.replace(ALGORITHM_FIELD, _SEED.sub("", run_name))


def archived_name(run_name: str, label: str | None) -> str:
    """``ctwa-seed0`` under label ``ctwa@matched`` (or ``{algorithm}@matched``) → ``ctwa@matched-seed0``; no label
    keeps the name."""
    if label is None:
        return run_name
    seed = _SEED.search(run_name)
    if seed is None:
        raise ResultsError(f"archive: run {run_name!r} has no -seed<N> suffix to keep under label {label!r}")
    return f"{run_label(run_name, label)}-seed{seed.group(1)}"


def archive(run_dirs: Sequence[str], dest: str, label: str | None = None, note: str | None = None) -> list[str]:
    """Copy each run's :data:`RUN_FILES` (gzip) into ``dest/<name>/`` and record it in ``dest/index.json``; returns
    the archived names. An existing index is extended (a name already archived is refused: results are not
    overwritten)."""
    if label is not None and not _LABEL.match(label.replace(ALGORITHM_FIELD, "a")):
        raise ResultsError(f"archive: label {label!r} may hold letters, digits and _ . @ - only")
    index_path = os.path.join(dest, INDEX_FILE)
    index = _read_index(dest) if os.path.exists(index_path) else {"runs": {}}
    names = []
    for run_dir in run_dirs:
        source = os.path.basename(os.path.normpath(run_dir))
        name = archived_name(source, label)
        if name in index["runs"]:
            raise ResultsError(f"archive: {name!r} is already in {index_path}; archive into a new directory")
        missing = [f for f in RUN_FILES if not os.path.isfile(os.path.join(run_dir, f))]
        if missing:
            raise ResultsError(f"archive: {run_dir} lacks {missing} (not a finished lab run)")
        os.makedirs(os.path.join(dest, name), exist_ok=True)
        for f in RUN_FILES:
            with (
                open(os.path.join(run_dir, f), "rb") as src,
                gzip.open(os.path.join(dest, name, f + ".gz"), "wb") as out,
            ):
                shutil.copyfileobj(src, out)
        index["runs"][name] = {"source": source, "label": run_label(source, label), "note": note}
        names.append(name)
    with open(index_path, "w") as f:
        json.dump(index, f, indent=1, sort_keys=True)
        f.write("\n")
    return names


def _read_index(src: str) -> dict[str, Any]:
    path = os.path.join(src, INDEX_FILE)
    try:
        with open(path) as f:
            index = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: not a readable lab results index ({exc})") from None
    runs = index.get("runs") if isinstance(index, dict) else None
    if not isinstance(runs, dict) or not all(isinstance(k, str) and _LABEL.match(k) for k in runs):
        raise ResultsError(f"{path}: expected {{'runs': {{name: ...}}}} with plain run names")
    return index


def unpack(src: str, dest: str) -> list[str]:
    """The archive ``src`` as run directories under ``dest`` (each summary's run name set to its archived name);
    returns them in the index's order."""
    dirs = []
    for name in _read_index(src)["runs"]:
        run_dir = os.path.join(dest, name)
        os.makedirs(run_dir, exist_ok=True)
        for f in RUN_FILES:
            path = os.path.join(src, name, f + ".gz")
            try:
                with gzip.open(path, "rb") as g:
                    data = g.read()
            except OSError as exc:
                raise ResultsError(f"{path}: cannot read ({exc})") from None
            if f == SUMMARY_FILE:
                summary = json.loads(data)
                if not isinstance(summary, dict):
                    raise ResultsError(f"{path}: a run summary must be a JSON object")
                summary["run_name"] = name
                data = json.dumps(summary).encode()
            with open(os.path.join(run_dir, f), "wb") as out:
                out.write(data)
        dirs.append(run_dir)
    return dirs


def seed_level_lines(run_dirs: Sequence[str], preference: Sequence[float]) -> list[str]:
    """The seed-level tables of these runs, as the lab prints them."""
    result = analyse(load_runs(run_dirs), preference=preference)
    lines: list[str] = []
    for t in seed_tables(result["seed_level"]):
        lines += [f"seed level: {t['title']}", *columns(t["headers"], t["rows"]), t["note"], ""]
    return lines + law_lines(result)


def law_lines(result: dict[str, Any]) -> list[str]:
    """The covariance law per configuration, pooled over its seeds: the law's hit rate beside the two baselines', the
    checks without a verdict, and how many intervals fixed the law's prediction by construction."""
    totals: dict[str, dict[str, int]] = {}
    for name, run in result["runs"].items():
        scores = run.get("law_scores") or {}
        t = totals.setdefault(_SEED.sub("", name), dict.fromkeys(_LAW_KEYS, 0))
        for p in PREDICTORS:
            t[f"{p}_hits"] += ((scores.get("hit_rates") or {}).get(p) or {}).get("hits", 0)
            t[f"{p}_n"] += ((scores.get("hit_rates") or {}).get(p) or {}).get("n", 0)
        for k in ("records", "not_significant", "undetermined", "forced_intervals", "judged_intervals"):
            t[k] += scores.get(k, 0)
    if not any(t["records"] for t in totals.values()):
        return []

    def rate(t: dict[str, int], p: str) -> str:
        hits, n = t[f"{p}_hits"], t[f"{p}_n"]
        return f"{hits}/{n}" + (f" ({hits / n:.0%})" if n else "")

    head = ["configuration", "checks", "law", "largest weight rises", "previous change's sign", "no verdict", "forced"]
    rows = [
        [
            c,
            str(t["records"]),
            *(rate(t, p) for p in PREDICTORS),
            f"{t['not_significant']} + {t['undetermined']}",
            f"{t['forced_intervals']}/{t['judged_intervals']}",
        ]
        for c, t in sorted(totals.items())
    ]
    return [
        "covariance law per configuration, seeds pooled: hits / significant changes each predictor called",
        *columns(head, rows),
        "no verdict = changes not significant + covariance signs undetermined; forced = intervals where weights >= 0 "
        "and the rewards' within-group covariance make every Cov(r_k, s) > 0 (the law then predicts that every "
        "objective rises: it cannot fail there by construction)",
        "",
    ]


def fixed_preference(preference: Sequence[float] | None = None) -> Sequence[float]:
    """The lab's one fixed scalar: ``preference``, or the Linear recipe's weights."""
    return preference if preference is not None else paper_recipe("linear")["weighting_kwargs"]["weights"]


@contextlib.contextmanager
def archived_runs(src: str) -> Iterator[list[str]]:
    """An archive's runs unpacked into a temporary directory, removed afterwards (one line when it holds none)."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dirs = unpack(src, tmp)
        if not run_dirs:
            raise ResultsError(f"{os.path.join(src, INDEX_FILE)}: no runs archived")
        yield run_dirs


def tables(src: str, preference: Sequence[float] | None = None) -> str:
    """The docs' text for the archive ``src`` (module docstring); ``preference`` defaults to the Linear recipe's
    weights, the lab's one fixed scalar."""
    with archived_runs(src) as run_dirs:
        lines = seed_level_lines(run_dirs, fixed_preference(preference)) + fidelity_lines(run_dirs)
    return "\n".join(line.rstrip() for line in lines).strip() + "\n"


def summary(src: str, preference: Sequence[float] | None = None, shown: str | None = None) -> str:
    """``--summary ARCHIVE``: the paired table of :func:`tables` cut to accuracy and the fixed scalar, "not
    significant" written n.s. (the README's lab summary); its intervals are the full table's, Holm-adjusted over
    the full table's family. ``shown``: the archive's name in the text (default ``src``)."""
    with archived_runs(src) as run_dirs:
        result = analyse(load_runs(run_dirs), preference=fixed_preference(preference))
    level, paired = result["seed_level"], seed_tables(result["seed_level"])[1]
    seeds = sorted({row[1] for row in paired["rows"]})
    rows = [[row[0], *(c.replace(" not significant", " n.s.") for c in (row[2], row[-1]))] for row in paired["rows"]]
    lines = [
        f"each algorithm − linear, paired by seed ({' or '.join(seeds)} seeds)",
        *columns(["algorithm", "accuracy", "fixed scalar"], rows),
        f"Holm-adjusted over {level['vs_reference']['tests']} tests (family level {1 - level['alpha']:.0%}); n.s. = "
        "not significant",
        f"full table: python -m mo_align.lab --tables {shown or src}",
    ]
    return "\n".join(line.rstrip() for line in lines).strip() + "\n"


def finished_runs(out: str) -> list[str]:
    """The run directories of a lab output directory (those with a run summary), sorted by name."""
    return sorted(e.path for e in os.scandir(out) if os.path.isfile(os.path.join(e.path, SUMMARY_FILE)))


def _run_dirs(src: str, tmp: str) -> list[str]:
    """An archive's runs unpacked under ``tmp``, or a lab output directory's finished runs; sorted by name."""
    if os.path.isfile(os.path.join(src, INDEX_FILE)):
        return sorted(unpack(src, tmp))
    return finished_runs(src)


def horizon_text(long_src: str, short_src: str, root: str = "") -> str:
    """``--horizon LONG SHORT`` (:mod:`mo_align.lab.horizon`) on run directories or archives (paths relative to
    ``root``, printed as given), long first."""
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, src, sub in (
            ("long horizon, paper η", long_src, "long"),
            ("lab horizon, matched η", short_src, "short"),
        ):
            dirs = _run_dirs(os.path.join(root, src), os.path.join(tmp, sub))
            lines += [f"{label}: {src}", *horizon_lines(horizon_rows(dirs)), ""]
    return "\n".join(line.rstrip() for line in lines).strip() + "\n"


_BLOCK = re.compile(r"<!-- lab-(results|horizon|summary): ([^>]+?) -->\n```text\n(.*?)```", re.S)
_FLAGS = {"results": "--tables", "horizon": "--horizon", "summary": "--summary"}  # marker -> the command's flag


def docs_blocks(text: str) -> list[tuple[str, str]]:
    """The ``(command, block)`` pairs a docs page quotes: a fenced block right after a line ``<!-- lab-results:
    <archive dir> -->`` (``--tables``), ``<!-- lab-summary: <archive dir> -->`` (``--summary``) or ``<!--
    lab-horizon: <long> <short> -->`` (``--horizon``)."""
    return [(f"{_FLAGS[m.group(1)]} {m.group(2)}", m.group(3)) for m in _BLOCK.finditer(text)]


def recompute(command: str, root: str) -> str:
    """The text of a docs block's command (:func:`docs_blocks`), its paths relative to ``root``."""
    flag, *paths = command.split()
    if flag == "--tables" and len(paths) == 1:
        return tables(os.path.join(root, paths[0]))
    if flag == "--summary" and len(paths) == 1:
        return summary(os.path.join(root, paths[0]), shown=paths[0])
    if flag == "--horizon" and len(paths) == 2:
        return horizon_text(*paths, root=root)
    raise ResultsError(f"docs block: cannot recompute {command!r}")


def check_docs(path: str, root: str) -> list[str]:
    """One line per block of the docs page ``path`` that its archive (relative to ``root``) no longer gives."""
    with open(path, encoding="utf-8") as f:
        blocks = docs_blocks(f.read())
    return [
        f"{path}: the block differs from `python -m mo_align.lab {command}`"
        for command, block in blocks
        if recompute(command, root) != block
    ]


def add_results_arguments(p: argparse.ArgumentParser) -> None:
    """The lab command's flags that read finished runs (:func:`results_command`)."""
    p.add_argument(
        "--tables",
        metavar="ARCHIVE",
        default=None,
        help="print the tables of committed results (mo_align.lab.results)",
    )
    p.add_argument(
        "--summary",
        metavar="ARCHIVE",
        default=None,
        help="the paired table cut to accuracy and the fixed scalar (the README's lab summary)",
    )
    p.add_argument(
        "--archive",
        nargs=2,
        metavar=("OUT", "ARCHIVE"),
        default=None,
        help="copy the finished runs of the lab output OUT into ARCHIVE (gzip, with an index), under --label",
    )
    p.add_argument(
        "--label",
        default=None,
        help="with --archive: the row name of these runs (e.g. ctwa@matched, or {algorithm}@matched)",
    )
    p.add_argument(
        "--horizon",
        nargs=2,
        metavar=("LONG", "SHORT"),
        default=None,
        help="weights in relative time: long paper-eta runs (LONG) beside matched-eta lab runs (SHORT)",
    )


def results_command(a: argparse.Namespace) -> bool:
    """``--tables``, ``--summary``, ``--archive`` and ``--horizon`` (:mod:`mo_align.lab.results`,
    :mod:`mo_align.lab.horizon`): read finished runs, train nothing; ``False`` when none was given."""
    try:
        if a.tables is not None:
            sys.stdout.write(tables(a.tables))
        elif a.summary is not None:
            sys.stdout.write(summary(a.summary))
        elif a.archive is not None:
            out, dest = a.archive
            names = archive(finished_runs(out), dest, label=a.label)
            sys.stdout.write(f"archived {len(names)} runs into {dest}: {', '.join(names)}\n")
        elif a.horizon is not None:
            sys.stdout.write(horizon_text(*a.horizon))
        else:
            return False
    except (ResultsError, OSError) as exc:
        raise UsageError(str(exc), usage=False) from None
    return True
