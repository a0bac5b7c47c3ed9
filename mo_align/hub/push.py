"""``mo-align push RUN_DIR --repo-id ID``: upload a finished run (model or adapter, tokenizer, card, plot).

The upload goes through an ``HfApi``-like client (injectable, so tests run offline with a fake). The token is read
from an environment variable, never from the command line; files of the run that contain it are left out and every
message goes through :func:`~mo_align.redaction.redact`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi
from huggingface_hub.utils import HFValidationError, filter_repo_objects, validate_repo_id

from mo_align.cli import CommandParser, run_module
from mo_align.redaction import env_secrets, files_containing, looks_like_token, redact
from mo_align.runs.card import RECIPE_FILE, SUMMARY_FILE, hub_id, write_model_card
from mo_align.runs.files import ADAPTER_CONFIG, ADAPTER_WEIGHTS, CONFIG_FILE, MODEL_WEIGHTS, MODEL_WEIGHTS_INDEX


__all__ = [
    "DEFAULT_COMMIT_MESSAGE",
    "IGNORE_PATTERNS",
    "PUSH_DESCRIPTION",
    "WEIGHT_FILES",
    "PushError",
    "UploadError",
    "add_parser",
    "load_summary",
    "main",
    "push_run",
    "run",
    "upload_candidates",
]

logger = logging.getLogger("mo_align.hub")

DEFAULT_COMMIT_MESSAGE = "Upload mo_align run"
# Never uploaded by `mo-align push`: checkpoints (optimizer states), private/temporary files, tracker folders.
IGNORE_PATTERNS = ["checkpoint-*", "_*", "*.tmp", "wandb/*", "trackio/*", "runs/*", ".*"]
WEIGHT_FILES = (
    MODEL_WEIGHTS,
    MODEL_WEIGHTS_INDEX,
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    ADAPTER_WEIGHTS,
    "adapter_model.bin",
)


class PushError(Exception):
    """A problem with the run directory or the arguments, found before anything is uploaded."""


class UploadError(Exception):
    """The Hub client failed; the message is ``<exception type>: <message>`` with every secret redacted."""


def upload_candidates(folder: str | os.PathLike, ignore_patterns: Sequence[str] = IGNORE_PATTERNS) -> list[str]:
    """Paths (relative, POSIX) of the files under ``folder`` that an upload with ``ignore_patterns`` would send."""
    root = Path(folder)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return list(filter_repo_objects(files, ignore_patterns=list(ignore_patterns)))


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
    for name, key in ((ADAPTER_CONFIG, "base_model_name_or_path"), (CONFIG_FILE, "_name_or_path")):
        path = run_dir / name
        if path.exists():
            try:
                with open(path, encoding="utf-8") as f:
                    value = json.load(f).get(key)
            except (OSError, json.JSONDecodeError, AttributeError):
                continue
            if hub_id(value):
                return value
    return None


def _check_push(run_dir: str | os.PathLike, repo_id: str) -> Path:
    """``run_dir`` as a Path once it is a finished run and ``repo_id`` a valid Hub id; PushError otherwise."""
    root = Path(run_dir)
    if not root.is_dir():
        raise PushError(f"{run_dir} is not a directory")
    if not any((root / name).exists() for name in WEIGHT_FILES):
        raise PushError(
            f"{run_dir} holds no model weights ({', '.join(WEIGHT_FILES[::2])}); push a finished run: the model is "
            "saved at the end of training"
        )
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise PushError(f"invalid repo id {repo_id!r}: expected 'namespace/name' ({exc})") from None
    return root


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
    """Upload a finished run (model or LoRA adapter, tokenizer, card, plot, the recipe it was launched with) to
    ``repo_id``; return the commit info.

    Writes ``README.md`` and ``mo_weights.png`` into ``run_dir`` first and touches no other local file. Leaves out
    checkpoints, private/temporary files, tracker folders and any file containing ``token``.

    Raises:
        PushError: ``run_dir`` is not a finished run (no model weights), ``repo_id`` is not a valid Hub id
            (``huggingface_hub.utils.validate_repo_id``) or the summary cannot be read.
        UploadError: the client failed (message redacted); every local file is still in place.
    """
    root = _check_push(run_dir, repo_id)
    base_model = base_model or _base_model_of(root)
    recipe = None if files_containing(root, token, [RECIPE_FILE]) else RECIPE_FILE  # left out below: not named
    card = {
        "dataset": dataset,
        "base_model": base_model,
        "license": license,
        "secrets": [token],
        "recipe_file": recipe,
    }
    write_model_card(root, load_summary(root), repo_id, **card)
    ignore = list(IGNORE_PATTERNS)
    for path in files_containing(root, token, upload_candidates(root, ignore)):
        logger.warning("not uploading %s: it contains the Hub token", path)
        ignore.append(path)
    if api is None:
        api = HfApi()
    try:
        api.create_repo(repo_id, token=token, private=private, exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id, folder_path=str(root), commit_message=commit_message, token=token, ignore_patterns=ignore
        )
    except Exception as exc:  # any client/network/auth failure: report it redacted, keep every local file
        raise UploadError(redact(f"{type(exc).__name__}: {exc}", [token, *env_secrets()])) from None


PUSH_DESCRIPTION = """\
Upload a finished mo_align run to the Hugging Face Hub.

Writes a model card (README.md, with the algorithm and its hyperparameters, the objectives, the per-objective eval
table, the weight trajectory plot mo_weights.png, interference events, dataset, papers with BibTeX and the launch
command) into RUN_DIR from its mo_summary.json, then uploads RUN_DIR: the model (or LoRA adapter), tokenizer, card,
plot and mo_recipe.yaml, the recipe the run was launched with (which the card's launch command names).
Checkpoints (checkpoint-*) and files holding the token are not uploaded. Nothing local is deleted.

The token is read from the environment variable named by --token-env (default HF_TOKEN); without it the saved
`hf auth login` token is used. It is never printed.
"""


def add_parser(subparsers: Any) -> CommandParser:
    """``mo-align push`` (and ``python -m mo_align.hub``): error messages, which echo the offending arguments, never
    show a token; no abbreviations (``--token VALUE`` must not be taken for ``--token-env``)."""
    parser = subparsers.add_parser(
        "push",
        description=PUSH_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        error_filter=redact,
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
    return run_module(add_parser, partial(run, api=api), argv, "mo-align push")


def run(args: argparse.Namespace, api: Any = None) -> int:
    """``mo-align push`` with parsed arguments; ``api``: an ``HfApi``-like client (default: ``huggingface_hub``'s)."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", args.token_env) or looks_like_token(args.token_env):
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
