"""Reading a run's JSON files (``mo_summary.json``, ``trainer_state.json``) as untrusted input.

Every failure is a :class:`~mo_align.runs.summary.SummaryError` of one line naming the file: a file over
:data:`MAX_JSON_BYTES` (refused before it is read), bytes that are not UTF-8, text that is not JSON (or nested too
deeply to parse). With ``finite=True`` (the summaries) a number that is not finite is refused too, naming the field:
Python's ``json`` accepts the non-standard literals ``NaN``, ``Infinity`` and ``-Infinity`` (RFC 8259 has none of
them) and reads ``1e999`` as infinity, so they are caught while parsing (``parse_constant``, ``parse_float``,
``parse_int``) and the first one's path (``eval[1].means.accuracy``) is named. A summary writes a missing value as
``null``.

The field checks (:func:`interval`, :func:`law_records`, :func:`text_or_none`) refuse, naming the field, the values
the report would otherwise fail on after it had started writing: a CI that is not ``[low, high]``, a law record that
is not an object, a launch command that is not a string.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


__all__ = [
    "MAX_JSON_BYTES",
    "SummaryError",
    "clip",
    "finite_float",
    "interval",
    "law_records",
    "read_json",
    "text_or_none",
]

MAX_JSON_BYTES = 256 * 2**20  # far above a long run's summary or trainer_state.json (a few MB)


class SummaryError(ValueError):
    """A run's summary cannot be read or rebuilt; the message names the offending path or value."""


def clip(text: Any, limit: int) -> str:
    """``text`` on one line of at most ``limit`` characters; a longer one keeps its end (a path's distinct part)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


class _NonFinite:
    """A number of the file that is not a finite float, as written there."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _float(text: str) -> float | _NonFinite:
    value = float(text)
    return value if math.isfinite(value) else _NonFinite(text)


def _int(text: str) -> int | _NonFinite:
    value = int(text)
    try:
        float(value)
    except OverflowError:  # beyond every float: no objective value or step is that large
        return _NonFinite(text if len(text) <= 24 else text[:20] + "…")
    return value


def _first_non_finite(value: Any) -> tuple[str, str] | None:
    """The path (``a.b[2].c``) and literal of the first non-finite number in parse order; iterative (no depth limit)."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, _NonFinite):
            return path or "the top-level value", item.text
        if isinstance(item, dict):
            children = [(f"{path}.{k}" if path else str(k), v) for k, v in item.items()]
        elif isinstance(item, list):
            children = [(f"{path}[{i}]", v) for i, v in enumerate(item)]
        else:
            continue
        stack.extend(reversed(children))
    return None


def read_json(path: Path, finite: bool = False) -> Any:
    """The JSON value of ``path`` (see the module docstring); ``finite`` refuses NaN / ±Infinity, naming the field."""
    where = clip(path, 150)
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise SummaryError(f"{where}: {size} bytes, over the {MAX_JSON_BYTES}-byte limit for a run's JSON")
        with open(path, "rb") as f:
            data = f.read(MAX_JSON_BYTES + 1)
    except OSError as e:
        raise SummaryError(f"{where}: cannot be read ({clip(e, 120)})") from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SummaryError(
            f"{where}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); a run's summary is JSON"
        ) from e
    hooks = {"parse_constant": _NonFinite, "parse_float": _float, "parse_int": _int} if finite else {}
    try:
        value = json.loads(text, **hooks)
    except json.JSONDecodeError as e:
        raise SummaryError(f"{where}: not valid JSON ({clip(e, 120)})") from e
    except (ValueError, RecursionError) as e:  # an integer of over 4300 digits, nesting deeper than the parser goes
        raise SummaryError(f"{where}: not valid JSON ({clip(e, 120) or type(e).__name__})") from e
    found = _first_non_finite(value) if finite else None
    if found is not None:
        field, literal = found
        raise SummaryError(
            f"{where}: {clip(field, 80)} is {literal}, not a finite number (NaN and Infinity are not JSON; "
            "a missing value is null)"
        )
    return value


def finite_float(value: Any) -> float:
    """A float; NaN (a missing value) for None / missing / non-numeric strings / ±Infinity (numeric strings count)."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def _number(value: Any) -> float:
    """A finite float, NaN for anything else (the summary's missing value): :func:`finite_float` without its
    numeric strings."""
    return math.nan if isinstance(value, str | bytes) else finite_float(value)


def interval(value: Any, field: str) -> list[float]:
    """A ``[low, high]`` pair of numbers (a missing bound is NaN); anything else is a ``ValueError`` naming ``field``."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(f"{field}: expected [low, high], got {clip(repr(value), 40)}")
    return [_number(value[0]), _number(value[1])]


def law_records(value: Any) -> list[dict[str, Any]]:
    """The summary's covariance-law records: objects, with ``predicted_cov`` / ``delta`` numbers and ``ci`` a pair
    where present (a null or non-numeric number is left out, so the record is counted but not shown)."""
    if not isinstance(value, list | tuple):
        raise ValueError(f"law: expected a list of records, got {type(value).__name__}")
    out = []
    for i, record in enumerate(value):
        if not isinstance(record, dict):
            raise ValueError(f"law[{i}]: expected an object, got {clip(repr(record), 40)}")
        record = dict(record)
        for key in ("predicted_cov", "delta"):
            if key in record and math.isnan(number := _number(record[key])):
                del record[key]
            elif key in record:
                record[key] = number
        if record.get("ci") is not None:
            record["ci"] = interval(record["ci"], f"law[{i}].ci")
            if any(math.isnan(x) for x in record["ci"]):
                del record["ci"]
        out.append(record)
    return out


def text_or_none(value: Any, field: str) -> str | None:
    """A string field that may be missing (``null``); any other JSON value is a ``ValueError`` naming ``field``."""
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{field}: expected a string or null, got {type(value).__name__}")
    return value
