"""Small text helpers shared by every layer (no dependency beyond the standard library).

:func:`excerpt` cuts a value for an error message, so a one-line error never prints a whole recipe value; the recipe
reader, the configs, the rewards, the weightings and the sweep all report bad values through it.
"""

from __future__ import annotations

from typing import Any


def excerpt(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (error messages never print a whole recipe value)."""
    text = repr(value) if len(str(value)) < 10 * limit else repr(str(value)[: 2 * limit])
    return text if len(text) <= limit else f"{text[: limit - 14]}... ({len(str(value))} chars)"
