"""The model card's "Asking for a preference" section: :mod:`mo_align.runs.card_conditioning`, re-exported here (the
card moved under :mod:`mo_align.runs`, which the trainer writes without importing the hub)."""

from __future__ import annotations

from mo_align.runs.card_conditioning import PLACEMENT_WORDS, SAMPLER_PARAMETERS, conditioning_section


__all__ = ["PLACEMENT_WORDS", "SAMPLER_PARAMETERS", "conditioning_section"]
