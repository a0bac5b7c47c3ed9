"""The model card's "Asking for a preference" section, for a preference-conditioned run (``mo_align.preferences``).

It says how the model was trained to read a preference (the template, where the statement goes, how preferences
were drawn) and how to ask for one: a Python snippet that states a preference with the run's template, the
objectives' names and the template as Python string literals (``json.dumps``), inside a fence longer than any
backtick run in it; the template and an example statement are shown in code blocks with such fences. Every value
has been redacted with the rest of the summary before it gets here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mo_align.runs import markdown as md
from mo_align.runs.card_parts import Code, cell_rows


PLACEMENT_WORDS = {
    "system": "as the system message (the first message of the conversation; the chat template renders it)",
    "prefix": "on its own line before the prompt (a plain-text prompt, or the first user message's content)",
}
SAMPLER_PARAMETERS = ("alpha", "preferences", "points_per_axis")


def _snippet(template: str, objectives: list[str], example: list[float], placement: str) -> str:
    weights = ", ".join(f"{json.dumps(o)}: {w:.4g}" for o, w in zip(objectives, example, strict=True))
    lines = [
        'question = "..."  # your prompt',
        f"TEMPLATE = {json.dumps(template)}",
        f"preference = {{{weights}}}  # non-negative, summing to 1",
        "statement = TEMPLATE.format(*preference.values(), **preference)",
    ]
    if placement == "system":
        lines.append('messages = [{"role": "system", "content": statement}, {"role": "user", "content": question}]')
        lines.append(
            "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors='pt')"
        )
    else:
        lines.append('messages = [{"role": "user", "content": statement + "\\n" + question}]')
    return "\n".join(lines)


def conditioning_section(summary: Mapping[str, Any]) -> dict[str, Any] | None:
    """The template's variables of the section, or None for a run trained without preference conditioning."""
    block = summary.get("preference_conditioning")
    if not isinstance(block, Mapping) or not isinstance(block.get("template"), str):
        return None
    template = block["template"]
    objectives = [str(o) for o in block.get("objectives") or summary.get("objectives") or []]
    placement = "system" if block.get("placement") == "system" else "prefix"
    example = block.get("example") if isinstance(block.get("example"), Mapping) else {}
    statement = str(example.get("statement") or "")
    weights = list(block.get("eval_preference") or [])
    if len(weights) != len(objectives) or not all(isinstance(w, int | float) for w in weights):
        weights = [1.0 / max(1, len(objectives))] * len(objectives)
    snippet = _snippet(template, objectives, weights, placement)
    settings = [("sampler", str(block.get("sampler", "")))]
    settings += [(Code(key), block[key]) for key in SAMPLER_PARAMETERS if block.get(key) is not None]
    settings += [(Code("seed"), block.get("seed")), ("preference at the run's evaluations", weights)]
    settings += [("column the reward functions receive", Code(str(block.get("column") or "")))]
    return {
        "placement": PLACEMENT_WORDS[placement],
        "template": template,
        "template_fence": md.fence(template),
        "statement": statement,
        "statement_fence": md.fence(statement),
        "snippet": snippet,
        "snippet_fence": md.fence(snippet),
        "objectives": ", ".join(md.code(o) for o in objectives),
        "settings": cell_rows(settings),
    }
