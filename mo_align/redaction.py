"""Secrets: hide Hub tokens in every text mo_align writes or prints, find files that hold one.

A Hub token reaches mo_align through an environment variable (``mo-align push --token-env``, ``HF_TOKEN``) or
``hub_token`` in a recipe. It must never appear in a model card, a log line, an error message or an uploaded file:
:func:`redact` hides it (and anything shaped like a Hugging Face token, and the value after any ``--*token*`` flag),
:func:`files_containing` finds the files of a run that hold it, so that the upload leaves them out. Standard library
only: the run summary, the recipe reader, the model card and the Hub upload all use it (``mo_align.hub.redaction``
re-exports it).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


__all__ = ["TOKEN_ENV_VARS", "env_secrets", "files_containing", "looks_like_token", "redact", "redact_all"]

TOKEN_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
_TOKEN_RE = re.compile(r"\b(hf_|api_org_)[A-Za-z0-9]{8,}")
_TOKEN_ARG_RE = re.compile(r"(?<!\S)(--?(?:[\w-]*[_-])?token)([= ])(\S+)", re.IGNORECASE)


def redact(text: str, secrets: Iterable[str | None] = (), flag_values: bool = True) -> str:
    """``text`` with the given secrets, anything shaped like a Hugging Face token and ``--*token* VALUE`` hidden
    (the last unless ``flag_values`` is false: in Markdown the word after a flag may end in a code span's closing
    backtick, so a model card redacts its user strings before escaping them, and the escaped card with this off)."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _TOKEN_RE.sub(lambda m: m.group(1) + "***", text)
    return _TOKEN_ARG_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text) if flag_values else text


def redact_all(value: Any, secrets: Iterable[str | None] = ()) -> Any:
    """``value`` with every string in it (inside mappings, keys too, lists and tuples) redacted by :func:`redact`."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, Mapping):
        return {redact_all(k, secrets): redact_all(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_all(v, secrets) for v in value]
    return value


def looks_like_token(text: str) -> bool:
    """Whether ``text`` holds something shaped like a Hugging Face token (``hf_...``, ``api_org_...``)."""
    return _TOKEN_RE.search(text) is not None


def env_secrets() -> list[str]:
    """The tokens set in the environment variables huggingface_hub reads (``HF_TOKEN``, ``HUGGING_FACE_HUB_TOKEN``)."""
    return [os.environ[name] for name in TOKEN_ENV_VARS if os.environ.get(name)]


def files_containing(folder: str | os.PathLike, secret: str | None, paths: Iterable[str] | None = None) -> list[str]:
    """Those of ``paths`` (default: every file under ``folder``) whose bytes contain ``secret``."""
    if not secret:
        return []
    needle = secret.encode()
    root = Path(folder)
    if paths is None:
        paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return [rel for rel in paths if (root / rel).is_file() and _file_holds(root / rel, needle)]


def _file_holds(path: Path, needle: bytes) -> bool:
    """Whether the file's bytes contain ``needle``, read in 1 MiB chunks (a match may straddle two chunks)."""
    with open(path, "rb") as f:
        tail = b""
        while chunk := f.read(1 << 20):
            if needle in tail + chunk:
                return True
            tail = chunk[-len(needle) :]
    return False
