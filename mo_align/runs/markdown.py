"""User strings in a model card are shown as text, never read as Markdown or HTML.

A run name, a dataset, a reward's name, a weighting kwarg or a launch command can hold any character. The card
shows each one in one of three ways (CommonMark 0.31, https://spec.commonmark.org/0.31.2/, with GitHub's tables):

* :func:`text` — inline text on one line: line breaks become spaces (no line of it can start a heading, a list or
  a fence), ``& < >`` become HTML entities (no raw HTML), and every character that opens Markdown syntax (code
  span, emphasis, link or image, strikethrough, math, table cell, heading) is backslash-escaped;
* :func:`code` — an inline code span on one line, delimited by a backtick run longer than any in the content
  (its content is shown literally: HTML and Markdown inside are text);
* :func:`fence` — the fence of a code block: backticks, one more than the longest run in the content and at least
  three, so no line of the content can close the block.

In a table row ``|`` splits the row even inside a code span, where a backslash cannot be escaped: a value for a
code span in a table that holds ``|`` or ``\\`` is shown as text instead (``code(value, table=True)``).
"""

from __future__ import annotations

import html
import re


__all__ = ["code", "fence", "longest_backtick_run", "one_line", "text"]

# backslash-escaped in inline text: code span, emphasis, link/image, strikethrough, math, table pipe, heading
_SYNTAX = re.compile(r"([\\`*\[\]~$|#])")
_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")  # intraword `_` never starts emphasis


def one_line(value: object) -> str:
    """``value`` as a string with every run of whitespace (line breaks included) one space."""
    return " ".join(str(value).split())


def text(value: object) -> str:
    """``value`` as inline Markdown text that renders as exactly these characters (on one line)."""
    escaped = _UNDERSCORE.sub(r"\\_", _SYNTAX.sub(r"\\\1", one_line(value)))
    return html.escape(escaped, quote=False)


def longest_backtick_run(content: str) -> int:
    return max((len(run) for run in re.findall(r"`+", content)), default=0)


def code(value: object, table: bool = False) -> str:
    """``value`` as an inline code span on one line (an empty value gives ``""``; in a table, one holding ``|`` or
    a backslash gives :func:`text`)."""
    content = one_line(value)
    if not content:
        return ""
    if table and ("|" in content or "\\" in content):
        return text(content)
    ticks = "`" * (longest_backtick_run(content) + 1)
    pad = " " if content[0] == "`" or content[-1] == "`" else ""  # one space each side is stripped when rendered
    return f"{ticks}{pad}{content}{pad}{ticks}"


def fence(content: str) -> str:
    """The backtick fence of a code block holding ``content``: no line of it can close the block."""
    return "`" * max(3, longest_backtick_run(content) + 1)
