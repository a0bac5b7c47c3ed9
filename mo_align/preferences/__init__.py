"""Preference-conditioned training: one policy for the whole Pareto front, asked for a preference in its prompt.

For every prompt of a training batch a preference w ∈ Δ^K is drawn (the G completions of the prompt share it),
stated in the prompt with the recipe's template, and the prompt's group is scored with its own w
(``Weighting.combine_rows``). The policy learns to follow the stated preference, as in Rewards-in-Context
(arXiv 2402.10207), Panacea (arXiv 2402.02030) and Conditional Language Policy (arXiv 2407.15762), which state or
embed the preference in the model's input and sample it per prompt during training.

* :mod:`~mo_align.preferences.spec`: the recipe block ``preference_conditioning:``, checked before anything loads;
* :mod:`~mo_align.preferences.sampler`: the draws, a pure function of (seed, batch index): resumes exactly;
* :mod:`~mo_align.preferences.prompt`: the statement as a system message or a prefix, and the chat-template check;
* :mod:`mo_align.trainer.conditioning`: the trainer's side (prompts stated before generation, rows scored);
* :mod:`~mo_align.preferences.evaluate`: ``mo-align evaluate-preferences``, a trained model's front over a grid.
"""

from __future__ import annotations

from typing import Any

from mo_align.preferences.prompt import check_prompt_kind, state_preference
from mo_align.preferences.sampler import PreferenceSampler
from mo_align.preferences.spec import NAME, check_objectives, parse_block, render


__all__ = ["PreferenceSampler", "check_objectives", "check_run", "parse_block", "render", "state_preference"]


def check_run(spec: dict[str, Any] | None, reward_funcs: list, dataset: Any) -> None:
    """``mo_align.train``'s check before the model loads: the block against the objectives (named as TRL names the
    reward functions) and against the training split's first prompt (the placement it can take)."""
    if not spec:
        return
    check_objectives(spec, [getattr(fn, "__name__", type(fn).__name__) for fn in reward_funcs])
    if dataset is not None and hasattr(dataset, "__len__") and len(dataset):  # a streaming split: checked in training
        check_prompt_kind(dataset[0]["prompt"], spec["placement"], f"{NAME}.placement")
