"""Model cards and Hub uploads for mo_align runs.

* :func:`write_model_card` writes ``README.md`` (YAML front matter + the run's story: algorithm and hyperparameters,
  objectives, per-objective eval table, weight trajectory plot ``mo_weights.png``, interference events, dataset,
  papers, the exact launch command) into a run directory, from the run summary (``mo_summary.json``).
* :func:`trainer_model_card` does the same from a live ``MOGRPOTrainer``; ``MOGRPOTrainer.create_model_card`` calls
  it, so ``push_to_hub: true`` (transformers' own push at save time) uploads mo_align's card instead of TRL's.
* :func:`push_run` uploads a finished run directory (model or adapter, tokenizer, card, plot) with an
  ``HfApi``-like client (injectable, so tests run offline with a fake).
* :func:`main` is ``mo-align push RUN_DIR --repo-id ID [--private] [--token-env HF_TOKEN]``.

Secrets: the token is read from an environment variable, never from the command line, and is never printed,
logged or written: every text this module writes or prints goes through :func:`redact`, and files of the run that
contain the token (e.g. a ``training_args.bin`` pickled with ``hub_token`` set) are left out of the upload.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any


logger = logging.getLogger(__name__)

CARD_FILE = "README.md"
PLOT_FILE = "mo_weights.png"
SUMMARY_FILE = "mo_summary.json"
DEFAULT_COMMIT_MESSAGE = "Upload mo_align run"
# Never uploaded by `mo-align push`: checkpoints (optimizer states), private/temporary files, tracker folders.
IGNORE_PATTERNS = ["checkpoint-*", "_*", "*.tmp", "wandb/*", "trackio/*", "runs/*", ".*"]
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
)

PAPER = ("Cross-objective interference in multi-objective RL alignment", "https://huggingface.co/papers/2602.06869")
GRPO_PAPER = (
    "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models (GRPO)",
    "https://huggingface.co/papers/2402.03300",
)
ALGORITHM_PAPERS: dict[str, list[tuple[str, str]]] = {
    "smooth_tchebycheff": [
        (
            "Smooth Tchebycheff Scalarization for Multi-Objective Optimization",
            "https://huggingface.co/papers/2402.19078",
        )
    ],
    "mgda": [("Multi-Task Learning as Multi-Objective Optimization", "https://huggingface.co/papers/1810.04650")],
    "gradnorm": [
        (
            "GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep Multitask Networks",
            "https://huggingface.co/papers/1711.02257",
        )
    ],
    "dynamic": [("Dynamic reward weighting (Lu et al. 2025)", "https://huggingface.co/papers/2509.11452")],
    "pama": [("PAMA: Pareto multi-objective alignment", "https://huggingface.co/papers/2508.07768")],
}

_TOKEN_RE = re.compile(r"\b(hf_|api_org_)[A-Za-z0-9]{8,}")
_TOKEN_ARG_RE = re.compile(r"(?<!\S)(--?(?:[\w-]*[_-])?token)([= ])(\S+)", re.IGNORECASE)
_TOKEN_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


class PushError(Exception):
    """A problem with the run directory or the arguments, found before anything is uploaded."""


class UploadError(Exception):
    """The Hub client failed; the message is ``<exception type>: <message>`` with every secret redacted."""


# ---- secrets ------------------------------------------------------------------------------------------------------
def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with the given secrets, anything shaped like a Hugging Face token and ``--*token* VALUE`` hidden."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _TOKEN_RE.sub(lambda m: m.group(1) + "***", text)
    return _TOKEN_ARG_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)


def _env_secrets() -> list[str]:
    return [os.environ[name] for name in _TOKEN_ENV_VARS if os.environ.get(name)]


def upload_candidates(folder: str | os.PathLike, ignore_patterns: Sequence[str] = IGNORE_PATTERNS) -> list[str]:
    """Paths (relative, POSIX) of the files under ``folder`` that an upload with ``ignore_patterns`` would send."""
    from huggingface_hub.utils import filter_repo_objects

    root = Path(folder)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return list(filter_repo_objects(files, ignore_patterns=list(ignore_patterns)))


def files_containing(folder: str | os.PathLike, secret: str | None, paths: Iterable[str] | None = None) -> list[str]:
    """Those of ``paths`` (default: every file under ``folder``) whose bytes contain ``secret``."""
    if not secret:
        return []
    needle = secret.encode()
    root = Path(folder)
    if paths is None:
        paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    hits = []
    for rel in paths:
        path = root / rel
        if path.is_file():
            with open(path, "rb") as f:
                tail = b""
                while chunk := f.read(1 << 20):
                    if needle in tail + chunk:
                        hits.append(rel)
                        break
                    tail = chunk[-len(needle) :]
    return hits


# ---- the card -----------------------------------------------------------------------------------------------------
def _fmt(value: Any, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:+.4f}" if signed else f"{value:.4f}"
    return str(value)


def _short(value: Any) -> Any:
    """Floats to 6 significant digits, recursively (float32 weights read back as 0.699999988...)."""
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.6g}")
    if isinstance(value, Mapping):
        return {k: _short(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_short(v) for v in value]
    return value


def _cell(value: Any) -> str:
    """A value rendered for one Markdown table cell (JSON for containers, pipes and newlines escaped)."""
    text = value if isinstance(value, str) else json.dumps(_short(value))
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def algorithm_description(algorithm: str) -> str:
    """The first line of the weighting module's docstring (``""`` for an unknown algorithm)."""
    try:
        from mo_align.weightings import WEIGHTINGS
    except ImportError:  # pragma: no cover - the package always has them
        return ""
    cls = WEIGHTINGS.get(algorithm)
    doc = sys.modules[cls.__module__].__doc__ if cls is not None else None
    if not doc:
        return ""
    first = doc.strip().splitlines()[0].strip()
    return re.sub(r"\s*\([^()]*(REFERENCE_SPEC|PAPER_NOTES)[^()]*\)", "", first)  # internal notes stay internal


def paper_links(algorithm: str) -> list[tuple[str, str]]:
    """(title, url) of the papers behind a run: the mo_align paper, the algorithm's own papers, GRPO."""
    return [PAPER, *ALGORITHM_PAPERS.get(algorithm, []), GRPO_PAPER]


def _versions(packages: Sequence[str]) -> list[tuple[str, str]]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in packages:
        try:
            out.append((name, version(name)))
        except PackageNotFoundError:
            continue
    return out


def plot_weights(summary: Mapping[str, Any], path: str | os.PathLike) -> bool:
    """Write the weight trajectory (and the eval curve when there are two evaluations or more) as a PNG.

    Returns False (and writes nothing) when the summary has no weight history. Uses matplotlib's Agg canvas
    directly, so the process-wide pyplot backend is left alone.
    """
    weights = [w for w in summary.get("weights") or [] if isinstance(w, Mapping) and w.get("weights")]
    if not weights:
        return False
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    objectives = list(summary.get("objectives") or weights[0]["weights"])
    evals = [e for e in summary.get("eval") or [] if isinstance(e, Mapping) and e.get("means")]
    panels = 2 if len(evals) >= 2 else 1
    fig = Figure(figsize=(5.2 * panels, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    steps = [w.get("step") for w in weights]
    for name in objectives:
        values = [w["weights"].get(name) for w in weights]
        axes[0].plot(steps, [math.nan if v is None else v for v in values], marker=".", label=name)
    axes[0].set_title(f"objective weights ({summary.get('algorithm', '?')})")
    axes[0].set_xlabel("optimizer step")
    axes[0].set_ylabel("weight")
    axes[0].grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    if panels == 2:
        eval_steps = [e.get("step") for e in evals]
        for name in objectives:
            values = [e["means"].get(name) for e in evals]
            axes[1].plot(eval_steps, [math.nan if v is None else v for v in values], marker="o", label=name)
        axes[1].set_title("evaluation mean per objective")
        axes[1].set_xlabel("optimizer step")
        axes[1].grid(alpha=0.3)
        axes[1].legend(fontsize=8)
        axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
    return True


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
    """
    from huggingface_hub import ModelCardData

    algorithm = str(summary.get("algorithm") or "unknown")
    objectives = [str(o) for o in summary.get("objectives") or []]
    dataset = dataset or summary.get("dataset")
    all_tags = ["mo_align", "trl", "grpo", "multi-objective", algorithm]
    if library_name == "peft":
        all_tags.append("lora")
    for tag in tags:
        if tag and tag not in all_tags:
            all_tags.append(tag)
    hub_dataset = bool(dataset) and dataset != "synthetic" and _hub_id(dataset) is not None
    front = ModelCardData(
        license=license,
        base_model=base_model or None,
        datasets=[dataset] if hub_dataset else None,
        library_name=library_name,
        pipeline_tag="text-generation",
        tags=all_tags,
    ).to_yaml()

    name = repo_id.split("/")[-1]
    lines = ["---", front, "---", "", f"# {name}", ""]
    started = f"[{base_model}](https://huggingface.co/{base_model})" if base_model else "a base model"
    lines += [
        f"This model was fine-tuned from {started} with **multi-objective GRPO** "
        f"(mo_align's `MOGRPOTrainer`, built on [TRL](https://github.com/huggingface/trl)'s `GRPOTrainer`), "
        f"optimising {len(objectives)} objectives with the "
        f"**{algorithm}** weighting.",
        "",
    ]
    if library_name == "peft":
        lines += ["The repository holds a LoRA adapter; load it with PEFT (see *Usage*).", ""]
    if not summary:
        lines += [f"> No `{SUMMARY_FILE}` was found for this run: the sections below are incomplete.", ""]

    # -- algorithm --
    description = algorithm_description(algorithm)
    lines += ["## Algorithm", "", f"**{algorithm}**" + (f": {description}" if description else ""), ""]
    rows = [("weighting", algorithm)]
    for key in ("advantage_estimator", "seed", "run_name"):
        if summary.get(key) is not None:
            rows.append((key, summary[key]))
    lines += _table(["setting", "value"], rows)
    hyper = summary.get("weighting_hyperparameters") or {}
    if hyper:
        lines += ["Weighting hyperparameters (`weighting_kwargs`, defaults included):", ""]
        lines += _table(["hyperparameter", "value"], [(f"`{k}`", v) for k, v in hyper.items()])

    # -- objectives and evaluation --
    lines += ["## Objectives", ""]
    lines += [f"{i}. `{o}`" for i, o in enumerate(objectives, 1)] or ["(not recorded)"]
    lines += [""]
    evals = [e for e in summary.get("eval") or [] if isinstance(e, Mapping)]
    lines += ["## Evaluation", ""]
    start, final = summary.get("start") or {}, summary.get("final") or {}
    best, delta = summary.get("best") or {}, summary.get("delta") or {}
    if evals:
        first_step, last_step = evals[0].get("step"), evals[-1].get("step")
        lines += [
            f"Mean reward per objective on the evaluation split ({len(evals)} evaluations; start = step "
            f"{first_step}, final = step {last_step}; delta = final - start).",
            "",
        ]
        rows = [
            (f"`{o}`", _fmt(start.get(o)), _fmt(final.get(o)), _fmt(best.get(o)), _fmt(delta.get(o), signed=True))
            for o in objectives
        ]
        lengths = [e.get("completion_length") for e in evals]
        if lengths[0] is not None and lengths[-1] is not None:
            rows.append(
                (
                    "completion length (tokens)",
                    _fmt(lengths[0]),
                    _fmt(lengths[-1]),
                    "",
                    _fmt(lengths[-1] - lengths[0], True),
                )
            )
        lines += _table(["objective", "start", "final", "best", "delta"], rows)
    else:
        lines += ["No evaluation was recorded for this run (set `eval_strategy` and `dataset_test_split`).", ""]

    # -- weights --
    weights = [w for w in summary.get("weights") or [] if isinstance(w, Mapping) and w.get("weights")]
    lines += ["## Objective weights", ""]
    if weights:
        if plot:
            lines += [f"![objective weight trajectory]({plot})", ""]
        first, last = weights[0], weights[-1]
        lines += [
            f"Weights used on the first (step {first.get('step')}) and last (step {last.get('step')}) batch:",
            "",
        ]
        rows = [(f"`{o}`", _fmt(first["weights"].get(o)), _fmt(last["weights"].get(o))) for o in objectives]
        lines += _table(["objective", "first", "last"], rows)
    else:
        lines += ["No weight trajectory was recorded.", ""]

    # -- interference --
    events = [e for e in summary.get("events") or [] if isinstance(e, Mapping)]
    lines += ["## Interference events", ""]
    if events:
        rows = [(e.get("step"), e.get("kind"), e.get("objective"), e.get("message") or "") for e in events]
        lines += _table(["step", "kind", "objective", "message"], rows)
    else:
        lines += ["None recorded by the interference monitor.", ""]

    # -- data, command, usage, papers --
    lines += ["## Dataset", ""]
    if hub_dataset:
        lines += [f"[{dataset}](https://huggingface.co/datasets/{dataset})", ""]
    elif dataset:
        lines += [f"`{dataset}`", ""]
    else:
        lines += ["Not recorded.", ""]
    command = summary.get("launch_command")
    lines += ["## Launch command", ""]
    lines += (["```bash", str(command), "```", ""]) if command else ["Not recorded.", ""]
    lines += ["## Usage", "", "```python"]
    if library_name == "peft":
        lines += [
            "from peft import AutoPeftModelForCausalLM",
            "",
            f'model = AutoPeftModelForCausalLM.from_pretrained("{repo_id}")',
            "model = model.merge_and_unload()  # optional: a plain transformers model",
        ]
    else:
        lines += [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
            f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")',
        ]
    lines += ["```", "", "## Papers", ""]
    lines += [f"- {title}: {url}" for title, url in paper_links(algorithm)]
    packages = ["mo_align", "trl", "transformers", "torch", *(["peft"] if library_name == "peft" else [])]
    lines += ["", "## Framework versions", ""]
    lines += [f"- {pkg}: {ver}" for pkg, ver in _versions(packages)]
    return redact("\n".join(lines) + "\n", [*secrets, *_env_secrets()])


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
) -> str:
    """Write ``README.md`` and ``mo_weights.png`` into ``run_dir``; return the card's text.

    ``library_name`` defaults to ``peft`` when the directory holds an adapter, else ``transformers``.
    """
    root = Path(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    if library_name is None:
        library_name = "peft" if (root / "adapter_config.json").exists() else "transformers"
    has_plot = plot_weights(summary, root / PLOT_FILE)
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
    )
    tmp = root / (CARD_FILE + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, root / CARD_FILE)
    return text


def _hub_id(name: str | None) -> str | None:
    """``name`` when it reads as a Hub model id (not a local directory), else None."""
    if not name or os.path.isdir(name) or name.startswith((".", "/", "~")):
        return None
    return name if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) else None


def trainer_model_card(
    trainer: Any, model_name: str | None = None, dataset_name: str | None = None, tags: Any = None
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
        base = getattr(getattr(model, "config", None), "_name_or_path", None)
    dataset_name = dataset_name or getattr(trainer.args, "mo_dataset_name", None)
    extra = [tags] if isinstance(tags, str) else list(tags or [])
    extra += [t for t in getattr(trainer, "_tag_names", []) if t not in extra]
    summary = trainer.summary()
    return write_model_card(
        args.output_dir,
        summary,
        repo_id,
        dataset=dataset_name or summary.get("dataset"),
        base_model=_hub_id(base),
        library_name=library_name,
        tags=extra,
        secrets=[args.hub_token],
    )


# ---- pushing a finished run ---------------------------------------------------------------------------------------
def load_summary(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run's ``mo_summary.json`` ({} when it has none)."""
    path = Path(run_dir) / SUMMARY_FILE
    if not path.exists():
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise PushError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise PushError(f"{path} does not hold a JSON object")
    return data


def _base_model_of(run_dir: Path) -> str | None:
    for name, key in (("adapter_config.json", "base_model_name_or_path"), ("config.json", "_name_or_path")):
        path = run_dir / name
        if path.exists():
            try:
                with open(path, encoding="utf-8") as f:
                    value = json.load(f).get(key)
            except (OSError, json.JSONDecodeError, AttributeError):
                continue
            if _hub_id(value):
                return value
    return None


def push_run(
    run_dir: str | os.PathLike,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    api: Any = None,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    *,
    dataset: str | None = None,
    base_model: str | None = None,
    license: str | None = None,
) -> Any:
    """Upload a finished run (model or LoRA adapter, tokenizer, card, plot) to ``repo_id``; return the commit info.

    Writes ``README.md`` and ``mo_weights.png`` into ``run_dir`` first and touches no other local file. Leaves out
    checkpoints, private/temporary files, tracker folders and any file containing ``token``.

    Raises:
        PushError: ``run_dir`` is not a finished run (no model weights) or its summary cannot be read.
        UploadError: the client failed (message redacted); every local file is still in place.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise PushError(f"{run_dir} is not a directory")
    if not any((root / name).exists() for name in WEIGHT_FILES):
        raise PushError(
            f"{run_dir} holds no model weights ({', '.join(WEIGHT_FILES[::2])}); push a finished run: the model is "
            "saved at the end of training"
        )
    if not re.fullmatch(r"[\w.-]+/[\w.-]+|[\w.-]+", repo_id):
        raise PushError(f"invalid repo id {repo_id!r}: expected 'namespace/name'")
    summary = load_summary(root)
    write_model_card(
        root,
        summary,
        repo_id,
        dataset=dataset,
        base_model=base_model or _base_model_of(root),
        license=license,
        secrets=[token],
    )
    ignore = list(IGNORE_PATTERNS)
    for path in files_containing(root, token, upload_candidates(root, ignore)):
        logger.warning("not uploading %s: it contains the Hub token", path)
        ignore.append(path)
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    try:
        api.create_repo(repo_id, token=token, private=private, exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=str(root),
            commit_message=commit_message,
            token=token,
            ignore_patterns=ignore,
        )
    except Exception as exc:  # any client/network/auth failure: report it redacted, keep every local file
        message = redact(f"{type(exc).__name__}: {exc}", [token, *_env_secrets()])
        raise UploadError(message) from None


PUSH_DESCRIPTION = """\
Upload a finished mo_align run to the Hugging Face Hub.

Writes a model card (README.md, with the algorithm and its hyperparameters, the objectives, the per-objective eval
table, the weight trajectory plot mo_weights.png, interference events, dataset, papers and the launch command) into
RUN_DIR from its mo_summary.json, then uploads RUN_DIR: the model (or LoRA adapter), tokenizer, card and plot.
Checkpoints (checkpoint-*) and files holding the token are not uploaded. Nothing local is deleted.

The token is read from the environment variable named by --token-env (default HF_TOKEN); without it the saved
`hf auth login` token is used. It is never printed.
"""


class _Parser(argparse.ArgumentParser):
    """argparse whose error messages (which echo the offending arguments) never show a token."""

    def error(self, message: str):
        super().error(redact(message))


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mo-align push",
        description=PUSH_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # `--token VALUE` must not be taken for `--token-env`
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished training output_dir")
    parser.add_argument("--repo-id", required=True, help="target model repository, 'namespace/name'")
    parser.add_argument("--private", action="store_true", help="create the repository private (if it is new)")
    parser.add_argument(
        "--token-env", default="HF_TOKEN", metavar="VAR", help="environment variable holding the token (HF_TOKEN)"
    )
    parser.add_argument("--commit-message", default=DEFAULT_COMMIT_MESSAGE)
    parser.add_argument("--dataset", default=None, help="training dataset named in the card (Hub id or description)")
    parser.add_argument("--base-model", default=None, help="Hub id of the base model (default: read from the run)")
    parser.add_argument("--license", default=None, help="license of the weights for the card (e.g. apache-2.0)")
    return parser


def main(argv: Sequence[str] | None = None, api: Any = None) -> int:
    """``mo-align push``: 0 uploaded, 1 the upload failed, 2 a usage or run-directory error (one line on stderr)."""
    try:
        args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed)
        return exc.code if isinstance(exc.code, int) else 2
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", args.token_env) or _TOKEN_RE.search(args.token_env):
        sys.stderr.write("mo-align push: error: --token-env takes the NAME of an environment variable (HF_TOKEN)\n")
        return 2
    token = os.environ.get(args.token_env) or None
    if token is None:
        sys.stdout.write(f"mo-align push: ${args.token_env} is not set; using the saved Hugging Face login\n")
    try:
        info = push_run(
            args.run_dir,
            args.repo_id,
            token=token,
            private=args.private,
            api=api,
            commit_message=args.commit_message,
            dataset=args.dataset,
            base_model=args.base_model,
            license=args.license,
        )
    except PushError as exc:
        sys.stderr.write(redact(f"mo-align push: error: {exc}\n", [token]))
        return 2
    except UploadError as exc:
        sys.stderr.write(
            f"mo-align push: upload failed: {exc} (nothing local was deleted; {args.run_dir} is intact, rerun to "
            "retry)\n"
        )
        return 1
    url = getattr(info, "commit_url", None) or f"https://huggingface.co/{args.repo_id}"
    sys.stdout.write(redact(f"pushed {args.run_dir} to {args.repo_id}: {url}\n", [token]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
