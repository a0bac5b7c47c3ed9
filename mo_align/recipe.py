"""Recipe files are checked before TRL's parser reads them: size, aliases, tags, syntax; one line per error.

A recipe is a small flat YAML mapping. :func:`check_recipe` refuses, in one line naming the file (and the field
when there is one), within milliseconds:

* a file larger than ``MAX_RECIPE_BYTES`` (a 100 MB quoted value kept PyYAML's reader busy for minutes);
* a value whose aliases expand beyond ``MAX_RECIPE_NODES`` nodes (a "billion laughs" recipe of 10⁹ leaves ran for a
  minute into a MemoryError, or hung writing ``mo_summary.json`` when it sat in ``run_name``), or a recursive alias;
* any tag the safe loader does not construct (``!!python/object/apply:...`` was refused by PyYAML with a 40-line
  traceback);
* a YAML syntax error (file, line and column), a document that is not a mapping;
* given the configuration dataclasses (``mo_align.train`` passes its parser's), a field none of them has (all such
  keys in one line, each with its closest field name), then a value of the wrong type (file, line, field and the
  expected type, derived from the dataclass annotation: ``learning_rate: fast``, ``max_steps: [1, 2]``,
  ``seed: 1.5``, ``null`` for a field that is not optional, a string outside an ``Enum`` field's values).
  A string is accepted wherever the argument parser would convert it (``learning_rate: "1e-4"``, ``bf16: "true"``),
  as a value typed on the command line.

The expansion is counted on the composed node graph, where an alias is a shared node, with one memoised pass: the
bound is checked without expanding anything.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import os
import re
import types
import typing
from collections.abc import Iterable
from typing import Any, Literal

import yaml

from mo_align.redaction import env_secrets, redact
from mo_align.text import excerpt


MAX_RECIPE_BYTES = 1 << 20  # 1 MiB; the largest shipped recipe is about 2 KB
MAX_RECIPE_NODES = 100_000  # nodes of one field's value once every alias is expanded
RECIPE_FILE = "mo_recipe.yaml"  # the recipe a run was launched with, copied into its output_dir (save_recipe)
# `key: value` whose key names a secret, in block style (the rest of the line) and in a flow mapping (up to , or })
_SECRET_KEY = r"[\"']?([\w.-]*?(?:token|secret|password|api_?key))[\"']?[ \t]*:[ \t]*"
_SECRET_BLOCK = re.compile(rf"(?im)^([ \t]*{_SECRET_KEY})(\S.*)$")
_SECRET_FLOW = re.compile(rf"(?i)([{{,][ \t]*{_SECRET_KEY})([^,}}\s][^,}}\n]*)")
_SPECIAL_TOKENS = {f"{name}_token" for name in ("pad", "eos", "bos", "unk", "sep", "cls", "mask")}


class RecipeError(ValueError):
    """A recipe file that is refused before it is parsed into arguments."""


def _where(path: str, mark: Any) -> str:
    return f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else path


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _expanded_size(node: yaml.Node, memo: dict[int, int], field: str, path: str) -> int:
    """Nodes of ``node`` with every alias expanded (shared nodes counted each time they are reached), computed
    once per distinct node; stops as soon as the bound is passed."""
    stack: list[tuple[yaml.Node, bool]] = [(node, False)]
    on_path: set[int] = set()
    while stack:
        current, done = stack.pop()
        key = id(current)
        if done:
            on_path.discard(key)
            memo[key] = 1 + sum(memo[id(c)] for c in _children(current))
            if memo[key] > MAX_RECIPE_NODES:
                raise RecipeError(
                    f"{_where(path, node.start_mark)}: field {excerpt(field, 40)} expands to more than {MAX_RECIPE_NODES:,} "
                    "values through YAML aliases; recipes are refused beyond that (an alias bomb?)"
                )
            continue
        if key in memo:
            continue
        if key in on_path:
            raise RecipeError(
                f"{_where(path, current.start_mark)}: field {excerpt(field, 40)} holds a recursive YAML alias"
            )
        on_path.add(key)
        stack.append((current, True))
        stack.extend((c, False) for c in _children(current) if id(c) not in memo)
    return memo[id(node)]


def _check_tags(node: yaml.Node, field: str, path: str, seen: set[int]) -> None:
    stack = [node]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if current.tag not in yaml.SafeLoader.yaml_constructors:
            tag = current.tag.replace("tag:yaml.org,2002:", "!!")
            raise RecipeError(
                f"{_where(path, current.start_mark)}: field {excerpt(field, 40)} uses the YAML tag {excerpt(tag, 80)}, which "
                "recipes do not allow (plain values, lists and mappings only)"
            )
        stack.extend(_children(current))


def check_recipe(path: str, dataclass_types: Iterable[type] | None = None) -> None:
    """Refuse a recipe file that is too large, an alias bomb, tagged, malformed or not a mapping; with
    ``dataclass_types``, also one with a key that is no field of theirs or a value of the wrong type (one line)."""
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read the recipe ({exc.strerror or exc})") from None
    if size > MAX_RECIPE_BYTES:
        raise RecipeError(f"{path}: the recipe is {size:,} bytes; recipes are at most {MAX_RECIPE_BYTES:,} bytes")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise RecipeError(f"{_where(path, mark)}: invalid YAML: {_one_line(exc.problem or exc.context)}") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: invalid YAML: {_one_line(exc)}") from None
    if not isinstance(root, yaml.MappingNode):
        raise RecipeError(f"{path}: a recipe must be a YAML mapping of field: value")
    memo: dict[int, int] = {}
    seen: set[int] = set()
    for key, value in root.value:
        field = key.value if isinstance(key, yaml.ScalarNode) else "?"
        _check_tags(key, field, path, seen)
        _check_tags(value, field, path, seen)
        _expanded_size(value, memo, field, path)
    try:
        data = yaml.safe_load(
            text
        )  # constructor errors (e.g. an invalid date) now that the graph is known to be small
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise RecipeError(f"{_where(path, mark)}: invalid YAML: {_one_line(exc.problem or exc.context)}") from None
    if dataclass_types is not None:
        marks: dict[str, Any] = {}
        for key, _ in root.value:
            if isinstance(key, yaml.ScalarNode):
                marks.setdefault(key.value, key.start_mark)
        check_fields(path, data, list(dataclass_types), marks)


# ---- fields and their types -----------------------------------------------------------------------------------------
NON_FIELD_KEYS = ("env",)  # TRL's parser reads `env:` (environment variables to set) itself
MAX_LISTED = 3  # unknown keys named in the error line; the rest are counted
_BOOL_STRINGS = ("yes", "true", "t", "y", "1", "no", "false", "f", "n", "0")  # what transformers' parser converts
_NOUNS = {bool: "a boolean (true or false)", int: "an integer", float: "a float", str: "a string", type(None): "null"}
_PLURALS = {bool: "booleans", int: "integers", float: "floats", str: "strings"}
_KINDS = {str: "a string", int: "an integer", float: "a float", list: "a list", dict: "a mapping"}


@dataclasses.dataclass(frozen=True)
class RecipeField:
    """A recipe field as the configuration dataclass declares it: annotation, default and ``choices`` metadata."""

    hint: Any
    default: Any
    choices: tuple | None


def recipe_fields(dataclass_types: Iterable[type]) -> dict[str, RecipeField]:
    """Every field a recipe may set (the ``init`` fields of the dataclasses, first declaration wins)."""
    out: dict[str, RecipeField] = {}
    for dc in dataclass_types:
        hints = typing.get_type_hints(dc)
        for f in dataclasses.fields(dc):
            if f.init and f.name not in out:
                choices = f.metadata.get("choices")
                out[f.name] = RecipeField(hints[f.name], f.default, None if choices is None else tuple(choices))
    return out


def _members(hint: Any) -> list[Any]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return sorted(typing.get_args(hint), key=lambda m: m is type(None))  # null last
    return [hint]


def _enum_in(members: list[Any]) -> type[enum.Enum] | None:
    """The Enum of ``Enum | str``: the parser (and the dataclass) accept only its values as strings."""
    return next((m for m in members if isinstance(m, type) and issubclass(m, enum.Enum)), None)


def _converts(kind: type, text: str) -> bool:
    try:
        kind(text)
    except ValueError:
        return False
    return True


def _accepts(hint: Any, value: Any) -> bool:
    members = _members(hint)
    restrict = _enum_in(members)
    return any(_accepts_one(m, value, restrict) for m in members)


def _accepts_one(hint: Any, value: Any, restrict: type[enum.Enum] | None) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return _accepts(hint, value)
    if origin is Literal:
        return any(type(a) is type(value) and a == value for a in args)
    if origin in (list, tuple) or hint in (list, tuple):
        inner = args[0] if args else Any
        if isinstance(value, str):  # one item, as `--reward_funcs accuracy` on the command line
            return inner is str
        return isinstance(value, list) and all(_accepts(inner, v) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict) and (len(args) < 2 or all(_accepts(args[1], v) for v in value.values()))
    if isinstance(value, bool):
        return hint is bool
    if hint is bool:
        return isinstance(value, str) and value.lower() in _BOOL_STRINGS
    if hint in (int, float):
        return _converts(hint, value) if isinstance(value, str) else isinstance(value, hint | int)
    if hint is str:
        return isinstance(value, str) and (restrict is None or value in {m.value for m in restrict})
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, hint) or (isinstance(value, str) and value in {m.value for m in hint})
    return isinstance(value, hint) if isinstance(hint, type) else True


def _one_of(values: Iterable[Any], limit: int = 6) -> str:
    shown = [repr(v) for v in values]
    rest = f", ... ({len(shown)} values)" if len(shown) > limit + 1 else ""
    return "one of " + ", ".join(shown[: limit if rest else None]) + rest


def _noun(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return "any value"
    if origin is Literal:
        return " or ".join(yaml.safe_dump(a, default_flow_style=True).split("\n")[0] for a in args)
    if origin in (list, tuple) or hint in (list, tuple):
        return f"a list of {_PLURALS.get(args[0], 'values')}" if args else "a list"
    if origin is dict or hint is dict:
        return "a mapping"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _one_of(m.value for m in hint)
    return _NOUNS.get(hint, f"a {getattr(hint, '__name__', hint)}")


def describe(field: RecipeField) -> str:
    """The expected type in words: "a float", "an integer or null", "one of 'no', 'steps', 'epoch'"."""
    members = _members(field.hint)
    restrict = _enum_in(members)
    parts: list[str] = []
    if field.choices:
        parts.append(_one_of(c for c in field.choices if c is not None))
        members = [m for m in members if m is type(None)]
    for m in members:
        text = _noun(m)
        if text not in parts and not (m is str and restrict is not None):
            parts.append(text)
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} or {parts[-1]}"


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    return f"{excerpt(value)} ({_KINDS.get(type(value), type(value).__name__)})"


def _unknown_line(path: str, unknown: list[Any], known: dict[str, RecipeField], marks: dict[str, Any]) -> str:
    names = []
    for key in unknown[:MAX_LISTED]:
        close = difflib.get_close_matches(key, list(known), n=1) if isinstance(key, str) else []
        names.append(excerpt(key, 40) + (f" (did you mean {close[0]!r}?)" if close else ""))
    more = f" and {len(unknown) - MAX_LISTED} more" if len(unknown) > MAX_LISTED else ""
    plural = "s" if len(unknown) > 1 else ""
    return (
        f"{_where(path, marks.get(str(unknown[0])))}: unknown field{plural} {', '.join(names)}{more}; "
        "`mo-align train --help` lists the recipe fields"
    )


def check_fields(path: str, data: dict, dataclass_types: list[type], marks: dict[str, Any] | None = None) -> None:
    """Keys of ``data`` that no dataclass declares (all of them, first), then the first value whose type does not
    match its field's annotation (or ``choices``): a :class:`RecipeError` naming file, line, field and type."""
    marks = marks or {}
    known = recipe_fields(dataclass_types)
    unknown = [k for k in data if not isinstance(k, str) or (k not in known and k not in NON_FIELD_KEYS)]
    if unknown:
        raise RecipeError(_unknown_line(path, unknown, known, marks))
    for name, value in data.items():
        field = known.get(name, RecipeField(dict[str, Any], None, None))  # `env`: a mapping
        if value is None and field.default is None:
            continue
        if _accepts(field.hint, value) and (field.choices is None or value is None or value in field.choices):
            continue
        quote = ""
        if isinstance(value, bool) and _accepts(field.hint, "no"):
            quote = "; YAML reads unquoted yes/no/on/off as booleans: quote the string"
        raise RecipeError(
            f"{_where(path, marks.get(name))}: field {excerpt(name, 40)} expects {describe(field)}, "
            f"got {_shown(value)}{quote}"
        )


def config_path(argv: list[str]) -> str | None:
    """The recipe named by ``--config FILE`` (or ``--config=FILE``) in ``argv``, if any."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def save_recipe(path: str, output_dir: str) -> str:
    """Copy the recipe ``path`` into ``output_dir`` as ``mo_recipe.yaml`` (atomically) and return the copy's path:
    the model card's launch command names this file, and ``mo-align push`` uploads it with the model. The value of
    every key that names a secret (``*token``, ``*secret``, ``*password``, ``*api_key``), anything shaped like a
    Hugging Face token and the tokens set in the environment are replaced by ``***``; comments are kept."""
    with open(path, encoding="utf-8") as f:
        text = f.read()

    def hide(m: re.Match) -> str:  # tokenizer special tokens (pad_token, ...) are not secrets
        return m.group(0) if m.group(2).lower() in _SPECIAL_TOKENS else m.group(1) + "***"

    text = _SECRET_FLOW.sub(hide, _SECRET_BLOCK.sub(hide, text))
    os.makedirs(output_dir, exist_ok=True)
    target = os.path.join(output_dir, RECIPE_FILE)
    with open(target + ".tmp", "w", encoding="utf-8") as f:
        f.write(redact(text, env_secrets(), flag_values=False))
    os.replace(target + ".tmp", target)
    return target
