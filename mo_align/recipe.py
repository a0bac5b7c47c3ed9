"""Recipe files are checked before TRL's parser reads them: size, aliases, tags, syntax; one line per error.

A recipe is a small flat YAML mapping. :func:`check_recipe` refuses, in one line naming the file (and the field
when there is one), within milliseconds:

* a file larger than ``MAX_RECIPE_BYTES`` (a 100 MB quoted value kept PyYAML's reader busy for minutes);
* a value whose aliases expand beyond ``MAX_RECIPE_NODES`` nodes (a "billion laughs" recipe of 10⁹ leaves ran for a
  minute into a MemoryError, or hung writing ``mo_summary.json`` when it sat in ``run_name``), or a recursive alias;
* any tag the safe loader does not construct (``!!python/object/apply:...`` was refused by PyYAML with a 40-line
  traceback);
* a YAML syntax error (file, line and column), a document that is not a mapping.

The expansion is counted on the composed node graph, where an alias is a shared node, with one memoised pass: the
bound is checked without expanding anything.
"""

from __future__ import annotations

import os
import re
from typing import Any

import yaml

from mo_align.weightings.validation import excerpt


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


def check_recipe(path: str) -> None:
    """Refuse a recipe file that is too large, an alias bomb, tagged, malformed or not a mapping (one line)."""
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
        yaml.safe_load(text)  # constructor errors (e.g. an invalid date) now that the graph is known to be small
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise RecipeError(f"{_where(path, mark)}: invalid YAML: {_one_line(exc.problem or exc.context)}") from None


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
    from mo_align.hub.redaction import env_secrets, redact

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
