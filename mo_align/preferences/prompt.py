"""Stating a preference in a prompt: a system message or a prefix, and the check that the chat template shows it.

* ``system`` (conversational prompts): the statement is the system message, inserted first in the prompt's message
  list, so the tokenizer's chat template renders it as it renders any system message; a prompt that already starts
  with a system message gets the statement on the line before its content (chat templates take one system message,
  first).
* ``prefix``: the statement and a line break before a plain-text prompt, or before the content of a conversation's
  first user message.

The input rows are never modified: a new row (and a new message list) is returned.
"""

from __future__ import annotations

from typing import Any

from mo_align.text import excerpt


def _before(content: Any, text: str) -> Any:
    """``text`` + a line break before a message's content (a string, or a list of typed parts)."""
    if isinstance(content, list):
        return [{"type": "text", "text": text + "\n"}, *content]
    return f"{text}\n{content}"


def state_preference(prompt: Any, text: str, placement: str) -> Any:
    """The prompt with the preference statement ``text`` placed as ``placement`` says (see the module doc)."""
    if isinstance(prompt, str):
        if placement == "system":
            raise ValueError("placement: system needs conversational prompts (lists of messages); use prefix")
        return f"{text}\n{prompt}"
    messages = [dict(m) for m in prompt]
    if placement == "system":
        if messages and messages[0].get("role") == "system":
            messages[0]["content"] = _before(messages[0].get("content", ""), text)
        else:
            messages.insert(0, {"role": "system", "content": text})
        return messages
    first_user = next((i for i, m in enumerate(messages) if m.get("role") == "user"), None)
    if first_user is None:
        raise ValueError("placement: prefix needs a user message in a conversational prompt; none found")
    messages[first_user]["content"] = _before(messages[first_user].get("content", ""), text)
    return messages


def check_prompt_kind(prompt: Any, placement: str, where: str) -> None:
    """A dataset's first prompt can take the placement (one line naming ``where`` otherwise)."""
    if isinstance(prompt, str) and placement == "system":
        raise ValueError(
            f"{where}: placement system needs conversational prompts (lists of messages) but the dataset's prompts "
            "are plain text; use placement: prefix"
        )
    if not isinstance(prompt, str | list):
        raise ValueError(f"{where}: prompts must be text or message lists, got {type(prompt).__name__}")
    state_preference(prompt, "x", placement)  # a conversation without a user message fails here, for prefix


def check_chat_template(tokenizer: Any, prompt: Any, text: str, where: str, **template_kwargs: Any) -> None:
    """The tokenizer's chat template renders the stated prompt and shows the statement (a template that refuses a
    system role, e.g. one raising "System role not supported", or one that drops it, is one line naming it)."""
    if not isinstance(prompt, list) or tokenizer is None:
        return
    stated = state_preference(prompt, text, "system")
    try:
        rendered = tokenizer.apply_chat_template(stated, tokenize=False, add_generation_prompt=True, **template_kwargs)
    except Exception as exc:  # jinja2's TemplateError or a template's raise_exception: the template's own words
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise ValueError(
            f"{where}: the tokenizer's chat template does not take a system message ({reason}); use placement: prefix"
        ) from None
    if text not in str(rendered):
        raise ValueError(
            f"{where}: the tokenizer's chat template drops the system message (the statement {excerpt(text)} is "
            "not in the rendered prompt); use placement: prefix"
        )
