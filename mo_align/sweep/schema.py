"""Read a mapping of a sweep file into a dataclass, checked by the dataclass's declaration: one generic checker.

A schema is a dataclass whose fields are the mapping's keys (in the order its messages list them). :func:`parse`
refuses a value that is not a mapping, unknown keys, a missing required field, and a value that does not have its
field's type (``int`` and ``float`` never take a bool; ``X | None`` takes ``null``, which then means the default)
or fails the field's :func:`checked` rule. Each mistake is one :class:`SweepError` line ``PATH: WHERE: MESSAGE``,
worded by the schema's ``UNKNOWN`` / ``NOT_MAPPING`` templates or the field's rule.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import MISSING, field, fields
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from mo_align.text import excerpt


T = TypeVar("T")
UNKNOWN = ("{where}", "unknown key(s) {bad}; keys: {keys}")  # (where, message) for unknown keys, by default
NOT_MAPPING = "expected a mapping; keys: {keys}"


class SweepError(ValueError):
    """A sweep file that cannot run (one line naming the file and the field)."""


def fail(path: str, where: str, message: str) -> SweepError:
    return SweepError(f"{path}: {where}: {message}")


def checked(expect: str, ok: Callable[[Any], bool] | None = None, show: Any = excerpt, default: Any = MISSING,
            at_parent: bool = False) -> Any:  # fmt: skip
    """A schema field: its value must also pass ``ok``; else the mistake is ``SHOW: EXPECT`` (``show`` quotes the
    value; ``None``: ``EXPECT`` alone), said of the field or, ``at_parent``, of the mapping holding it."""
    return field(default=default, metadata={"expect": expect, "ok": ok, "show": show, "at_parent": at_parent})


def is_a(value: Any, kind: Any) -> bool:
    """``value`` has the annotated type ``kind`` (a list's items too; a mapping's are left to the caller)."""
    origin, args = get_origin(kind), get_args(kind)
    if kind is Any or isinstance(kind, types.UnionType):
        return kind is Any or any(is_a(value, arg) for arg in args)
    if origin is not None:
        return isinstance(value, origin) and (origin is not list or all(is_a(v, args[0]) for v in value))
    if isinstance(value, bool):
        return kind is bool
    return isinstance(value, int | float) if kind is float else isinstance(value, kind)


def parse(schema: type[T], raw: Any, path: str, where: str = "") -> T:
    """``raw`` as a ``schema`` instance, or its first mistake as a SweepError naming ``path`` and the field."""
    names = ", ".join(f.name for f in fields(schema))  # type: ignore[arg-type]
    if not isinstance(raw, dict):
        raise fail(path, where, getattr(schema, "NOT_MAPPING", NOT_MAPPING).format(value=raw, keys=names))
    unknown = sorted(set(raw) - {f.name for f in fields(schema)}, key=str)  # type: ignore[arg-type]
    if unknown:
        at, message = getattr(schema, "UNKNOWN", UNKNOWN)
        raise fail(path, at.format(where=where, key=unknown[0]), message.format(bad=excerpt(unknown), keys=names))
    values, kinds = {}, get_type_hints(schema)
    for f in fields(schema):  # type: ignore[arg-type]
        value, rule, kind = raw.get(f.name, f.default), f.metadata or {"ok": None}, kinds[f.name]
        default = value is None and type(None) in get_args(kind)  # null where the field is optional
        if value is not MISSING and is_a(value, kind) and (default or rule["ok"] is None or rule["ok"](value)):
            values[f.name] = value
            continue
        shown = f"{rule['show'](None if value is MISSING else value)}: " if rule["show"] else ""
        raise fail(path, where if rule["at_parent"] else f"{where}.{f.name}".lstrip("."), shown + rule["expect"])
    return schema(**values)
