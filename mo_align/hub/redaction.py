"""Secrets in mo_align's Hub code: :mod:`mo_align.redaction`, re-exported here (its home before the run summary and
the recipe reader, which must not import the hub, needed it too)."""

from __future__ import annotations

from mo_align.redaction import (
    TOKEN_ENV_VARS,
    env_secrets,
    files_containing,
    looks_like_token,
    redact,
    redact_all,
)


__all__ = ["TOKEN_ENV_VARS", "env_secrets", "files_containing", "looks_like_token", "redact", "redact_all"]
