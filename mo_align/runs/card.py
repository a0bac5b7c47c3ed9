"""The model card of a mo_align run, rendered from ``model_card.md`` with ``huggingface_hub.ModelCard.from_template``.

The template (``mo_align/hub/model_card.md``) holds the card's layout and prose; this module computes what goes into it from
the run summary (``mo_summary.json``): the front matter (:class:`huggingface_hub.ModelCardData`), the algorithm and
its hyperparameters, the per-objective eval table, the weights of the first and last batch, interference events,
dataset, launch command, papers and package versions. Every user string (run name, dataset, model ids, objectives,
weighting kwargs, events, launch command, tags) is redacted, then escaped here (:mod:`mo_align.runs.markdown`: inline
text, code spans, code-block fences; the front matter is plain strings dumped as YAML), so the template only lays
them out. Every card goes through :func:`~mo_align.redaction.redact` again before it is returned.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from mo_align.recipe import RECIPE_FILE
from mo_align.redaction import env_secrets, redact, redact_all
from mo_align.runs import markdown as md
from mo_align.runs.card_conditioning import conditioning_section
from mo_align.runs.card_parts import (
    GRPO_PAPER,
    PAPER,
    Code,
    algorithm_description,
    cell_rows,
    citation,
    fmt,
    launch_with_recipe,
    objective_lines,
    paper_links,
)
from mo_align.runs.files import ADAPTER_CONFIG
from mo_align.runs.plotting import plot_run_weights  # one weight plot, shared with the run report
from mo_align.runs.summary import SUMMARY_FILE  # the summary has one owner


if TYPE_CHECKING:
    from mo_align.trainer import MOGRPOTrainer


__all__ = [
    "CARD_FILE",
    "GRPO_PAPER",
    "PAPER",
    "PLOT_FILE",
    "RECIPE_FILE",
    "SUMMARY_FILE",
    "TEMPLATE",
    "algorithm_description",
    "hub_id",
    "paper_links",
    "render_model_card",
    "trainer_model_card",
    "write_model_card",
]

CARD_FILE = "README.md"
PLOT_FILE = "mo_weights.png"
# the template ships in mo_align/hub/ (package data of mo_align.hub), where the card lived before the trainer needed it
TEMPLATE = Path(__file__).resolve().parents[1] / "hub" / "model_card.md"


# ---- what the card says --------------------------------------------------------------------------------------------
def hub_id(name: str | None) -> str | None:
    """``name`` when it reads as a Hub repo id (``huggingface_hub.utils.validate_repo_id``), not a local path."""
    if not name or os.path.isdir(name) or name.startswith((".", "/", "~")):
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def _versions(packages: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for name in packages:
        try:
            out.append((name, version(name)))
        except PackageNotFoundError:
            continue
    return out


def _algorithm_section(summary: Mapping[str, Any], algorithm: str) -> dict[str, Any]:
    settings = [("weighting", algorithm)]
    settings += [
        (key, summary[key]) for key in ("advantage_estimator", "seed", "run_name") if summary.get(key) is not None
    ]
    hyper = summary.get("weighting_hyperparameters") or {}
    return {
        "description": algorithm_description(algorithm),
        "settings": cell_rows(settings),
        "hyperparameters": cell_rows((Code(k), v) for k, v in hyper.items()),
    }


def _eval_section(summary: Mapping[str, Any], objectives: Sequence[str]) -> dict[str, Any] | None:
    """The per-objective table of start, final, best and delta (None when nothing was evaluated)."""
    evals = [e for e in summary.get("eval") or [] if isinstance(e, Mapping)]
    if not evals:
        return None
    start, final = summary.get("start") or {}, summary.get("final") or {}
    best, delta = summary.get("best") or {}, summary.get("delta") or {}
    rows = [
        (Code(o), fmt(start.get(o)), fmt(final.get(o)), fmt(best.get(o)), fmt(delta.get(o), signed=True))
        for o in objectives
    ]
    first, last = evals[0].get("completion_length"), evals[-1].get("completion_length")
    if first is not None and last is not None:
        rows.append(("completion length (tokens)", fmt(first), fmt(last), "", fmt(last - first, signed=True)))
    steps = {"first": md.text(evals[0].get("step")), "last": md.text(evals[-1].get("step"))}
    return {"count": len(evals), **steps, "rows": cell_rows(rows)}


def _weights_section(summary: Mapping[str, Any], objectives: Sequence[str]) -> dict[str, Any] | None:
    """The weights of the first and last batch (None when no trajectory was recorded)."""
    weights = [w for w in summary.get("weights") or [] if isinstance(w, Mapping) and w.get("weights")]
    if not weights:
        return None
    first, last = weights[0], weights[-1]
    rows = [(Code(o), fmt(first["weights"].get(o)), fmt(last["weights"].get(o))) for o in objectives]
    return {"first": md.text(first.get("step")), "last": md.text(last.get("step")), "rows": cell_rows(rows)}


def _trained(summary: Mapping[str, Any], objectives: Sequence[str]) -> list[str]:
    """The objectives the weighting combined (role ``train``; every objective of a run that records no roles)."""
    roles = summary.get("objective_roles") or {}
    return [o for o in objectives if roles.get(o, "train") == "train"]


def _verdict(summary: Mapping[str, Any]) -> str:
    """The run summary's interference verdict (``mo_align.runs.summary.run_interference``), as text."""
    flagged = summary.get("interference")
    if not isinstance(flagged, list):
        return "not recorded (no intervals in the run summary)"
    return ", ".join(md.code(o) for o in flagged) if flagged else "none"


def _events(summary: Mapping[str, Any]) -> list[list[str]]:
    events = [e for e in summary.get("events") or [] if isinstance(e, Mapping)]
    return cell_rows((e.get("step"), e.get("kind"), e.get("objective"), e.get("message") or "") for e in events)


def _card_data(
    algorithm: str,
    library_name: str,
    extra_tags: Sequence[str],
    license: str | None,
    base_model: str | None,
    hub_dataset: str | None,
) -> Any:
    """The front matter: ``mo_align, trl, grpo, multi-objective, <algorithm>`` (+ ``lora``) and the extra tags."""
    tags = ["mo_align", "trl", "grpo", "multi-objective", md.one_line(algorithm)]
    tags += ["lora"] if library_name == "peft" else []
    tags += [t for t in dict.fromkeys(md.one_line(t) for t in extra_tags) if t and t not in tags]
    return ModelCardData(  # plain one-line strings only: the YAML dump quotes what needs it, nothing else is tagged
        license=md.one_line(license) if license else None,
        base_model=base_model or None,
        datasets=[hub_dataset] if hub_dataset else None,
        library_name=library_name,
        pipeline_tag="text-generation",
        tags=tags,
    )


# ---- rendering and writing -----------------------------------------------------------------------------------------
def render_model_card(
    summary: Mapping[str, Any],
    repo_id: str,
    *,
    dataset: str | None = None,
    base_model: str | None = None,
    library_name: str = "transformers",
    tags: Sequence[str] = (),
    license: str | None = None,
    plot: str | None = PLOT_FILE,
    secrets: Iterable[str | None] = (),
    recipe_file: str | None = None,
) -> str:
    """The model card (Markdown with YAML front matter) of a run summary; pure, writes nothing.

    Args:
        summary: the run summary (``MOGRPOTrainer.summary()`` / ``mo_summary.json``); ``{}`` gives a minimal card.
        repo_id: the Hub repository the card describes (title and usage snippet).
        dataset: training data (a Hub dataset id goes into the front matter, a local path only into the text).
        base_model: the Hub id of the model the run started from (omitted when it was a local directory).
        library_name: ``transformers`` for a full model, ``peft`` for an adapter.
        tags: extra tags; ``mo_align, trl, grpo, multi-objective, <algorithm>`` are always there.
        license: the license of the weights (usually the base model's); omitted when not given.
        plot: relative path of the weight trajectory PNG next to the card, or None when there is none.
        secrets: strings to redact (tokens); Hugging Face token shapes are redacted anyway.
        recipe_file: the recipe uploaded with the model (``mo_recipe.yaml``), named by the launch command's
            ``--config``; None when there is none (the command is shown as typed).
    """
    hide = [*secrets, *env_secrets()]
    summary, dataset, base_model, tags, license = redact_all(
        [summary, dataset or summary.get("dataset_name"), base_model, list(tags), license], hide
    )
    algorithm = str(summary.get("algorithm") or "unknown")
    objectives = [str(o) for o in summary.get("objectives") or []]
    hub_dataset = dataset if dataset and dataset != "synthetic" and hub_id(dataset) is not None else None
    packages = ["mo_align", "trl", "transformers", "torch", *(["peft"] if library_name == "peft" else [])]
    card = ModelCard.from_template(
        _card_data(algorithm, library_name, tags, license, hub_id(base_model), hub_dataset),
        template_path=str(TEMPLATE),
        adapter=library_name == "peft",
        has_summary=bool(summary),
        summary_file=SUMMARY_FILE,
        evaluation=_eval_section(summary, objectives),
        weights=_weights_section(summary, _trained(summary, objectives)),
        trained=len(_trained(summary, objectives)),
        conditioning=conditioning_section(summary),  # a preference-conditioned run: how to ask for a preference
        plot=plot,
        events=_events(summary),
        interference=_verdict(summary),
        papers=paper_links(algorithm, hyper := summary.get("weighting_hyperparameters")),
        citation=(bibtex := citation(algorithm, hyper)),
        citation_fence=md.fence(bibtex),
        versions=_versions(packages),
        **_algorithm_section(summary, algorithm),
        **_text_fields(summary, redact(repo_id, hide), algorithm, objectives, base_model, (dataset, hub_dataset)),
        **_launch(summary.get("launch_command"), recipe_file),
    )
    return redact(str(card), hide, flag_values=False)  # user strings were redacted before they were escaped


def _text_fields(
    summary: Mapping[str, Any],
    repo_id: str,
    algorithm: str,
    objectives: Sequence[str],
    base_model: str | None,
    datasets: tuple[str | None, str | None],
) -> dict[str, Any]:
    """The template's user strings, escaped (:mod:`mo_align.runs.markdown`): links only to valid Hub ids."""
    dataset, hub_dataset = datasets
    repo_literal = json.dumps(repo_id)  # a Python string literal in the usage snippet
    if hub_id(base_model):
        base = f"[{md.text(base_model)}](https://huggingface.co/{base_model})"
    else:
        base = md.code(base_model) if base_model else "a base model"
    link = f"[{md.text(hub_dataset)}](https://huggingface.co/datasets/{hub_dataset})" if hub_dataset else None
    return {
        "model_name": md.text(repo_id.split("/")[-1]),
        "repo_literal": repo_literal,
        "usage_fence": md.fence(repo_literal),
        "base_model": base,
        "algorithm": md.text(algorithm),
        "objectives": objective_lines(summary, objectives),
        "dataset": md.code(dataset) if dataset else None,
        "dataset_link": link,
    }


def _launch(command: Any, recipe_file: str | None) -> dict[str, Any]:
    """The launch command (its ``--config`` naming the uploaded recipe when there is one) and its fence."""
    command = launch_with_recipe(str(command), recipe_file) if command else None
    return {
        "launch_command": command,
        "launch_fence": md.fence(command or ""),
        "recipe_file": md.code(recipe_file) if command and recipe_file else None,
    }


def write_model_card(
    run_dir: str | os.PathLike,
    summary: Mapping[str, Any],
    repo_id: str,
    dataset: str | None = None,
    *,
    base_model: str | None = None,
    library_name: str | None = None,
    tags: Sequence[str] = (),
    license: str | None = None,
    secrets: Iterable[str | None] = (),
    recipe_file: str | None = RECIPE_FILE,
) -> str:
    """Write ``README.md`` and ``mo_weights.png`` into ``run_dir``; return the card's text.

    ``library_name`` defaults to ``peft`` when the directory holds an adapter, else ``transformers``;
    ``recipe_file`` is named by the card's launch command when ``run_dir`` holds it (the recipe the run was launched
    with, copied there by ``mo_align.train``; None: never).
    """
    root = Path(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    if library_name is None:
        library_name = "peft" if (root / ADAPTER_CONFIG).exists() else "transformers"
    has_plot = plot_run_weights(summary, root / PLOT_FILE)
    text = render_model_card(
        summary,
        repo_id,
        dataset=dataset,
        base_model=base_model,
        library_name=library_name,
        tags=tags,
        license=license,
        plot=PLOT_FILE if has_plot else None,
        secrets=secrets,
        recipe_file=recipe_file if recipe_file and (root / recipe_file).is_file() else None,
    )
    tmp = root / (CARD_FILE + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, root / CARD_FILE)
    return text


def trainer_model_card(
    trainer: MOGRPOTrainer, model_name: str | None = None, dataset_name: str | None = None, tags: Any = None
) -> str | None:
    """``MOGRPOTrainer.create_model_card``: mo_align's card in ``args.output_dir`` (main process; None elsewhere)."""
    if not trainer.is_world_process_zero():
        return None
    args = trainer.args
    repo_id = getattr(trainer, "hub_model_id", None) or args.hub_model_id or model_name
    repo_id = repo_id or Path(args.output_dir).name
    model = trainer.model
    peft_config = getattr(model, "peft_config", None)
    if peft_config:
        library_name = "peft"
        base = getattr(next(iter(peft_config.values())), "base_model_name_or_path", None)
    else:
        library_name = "transformers"
        base = getattr(getattr(model, "config", None), "name_or_path", None)
    dataset_name = dataset_name or getattr(trainer.args, "mo_dataset_name", None)
    extra = [tags] if isinstance(tags, str) else list(tags or [])
    # the tags TRL put on the model (GRPOTrainer.__init__: add_model_tags); transformers' push_to_hub passes them too
    extra += [t for t in getattr(model, "model_tags", None) or [] if t not in extra]
    summary = trainer.summary()
    return write_model_card(
        args.output_dir,
        summary,
        repo_id,
        dataset=dataset_name or summary.get("dataset_name"),
        base_model=hub_id(base),
        library_name=library_name,
        tags=extra,
        secrets=[args.hub_token],
    )
