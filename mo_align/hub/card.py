"""The model card of a mo_align run: :mod:`mo_align.runs.card`, re-exported here.

The trainer writes the card at every checkpoint (``MOGRPOTrainer.create_model_card``), so the card is part of the
run's own files (:mod:`mo_align.runs`); its template stays in this package (``model_card.md``).
"""

from __future__ import annotations

from mo_align.runs.card import (
    CARD_FILE,
    GRPO_PAPER,
    PAPER,
    PLOT_FILE,
    RECIPE_FILE,
    SUMMARY_FILE,
    TEMPLATE,
    algorithm_description,
    hub_id,
    paper_links,
    render_model_card,
    trainer_model_card,
    write_model_card,
)


__all__ = [
    "CARD_FILE",
    "GRPO_PAPER",
    "PAPER",
    "PLOT_FILE",
    "RECIPE_FILE",
    "SUMMARY_FILE",
    "TEMPLATE",
    "algorithm_description",
    "hub_id",
    "paper_links",
    "render_model_card",
    "trainer_model_card",
    "write_model_card",
]
