"""Which built-in strategies the interference lab runs and the benchmarks time (the lab's strategies), in which
order, as which configurations: read from the classes (``lab_order``, ``step_size``, ``bench_variants`` on
:class:`~mo_align.weightings.Weighting`), so a new strategy needs no edit in the lab (:mod:`mo_align.lab.scaling`),
``bench/run.py`` or ``scripts/gpu_check.py``.

* :func:`lab_strategies`: the built-in registry keys (:data:`~mo_align.weightings.WEIGHTINGS`) whose class has a
  ``lab_order``, by it (ties, and the default: after the others, in registry order);
* :func:`step_sizes`: their :class:`StepSize`, by the step-size table's ``row`` (ties: the lab's order);
* :func:`timed_configs`: the configurations the benchmarks time against linear: each strategy's ``bench_variants``
  in lab order, those that read the post-update log-probs after the rest; then the Gram strategies in both Gram
  spaces (``parameters``, then ``logprobs``), mo_align's own before TorchJD's adapters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mo_align.weightings import WEIGHTINGS
from mo_align.weightings.base import StepSize, TrainerNeeds
from mo_align.weightings.jd import JDWeighting


GRAM_SPACES = ("parameters", "logprobs")  # MOGRPOConfig.gramian_space, in the benchmarks' order


@dataclass(frozen=True)
class Timed:
    """One timed configuration: ``name`` (``<key>[ <variant>][ (<gram space>)]``), the weighting and its kwargs,
    the Gram space, what it needs from the trainer, and whether it is a TorchJD adapter."""

    name: str
    weighting: str
    kwargs: dict[str, Any]
    space: str
    needs: TrainerNeeds
    torchjd: bool


def lab_strategies() -> list[str]:
    """The keys of the built-in strategies the lab runs, in the lab's report order."""
    ranked = [(cls.lab_order, i, key) for i, (key, cls) in enumerate(WEIGHTINGS.items()) if cls.lab_order is not None]
    return [key for _, _, key in sorted(ranked)]


def step_sizes() -> dict[str, StepSize]:
    """key -> step size of every strategy the lab runs, in the order of the lab protocol's step-size table."""
    keys = lab_strategies()
    return {key: WEIGHTINGS[key].step_size for key in sorted(keys, key=lambda k: WEIGHTINGS[k].step_size.row)}


def timed_configs(baseline: str = "linear") -> list[Timed]:
    """Every configuration the benchmarks time besides the ``baseline`` strategy (see the module docstring)."""
    plain, gram = [], []
    for key in lab_strategies():
        if key == baseline:
            continue
        cls = WEIGHTINGS[key]
        for variant, kwargs in cls.bench_variants.items():
            needs = cls.declared_needs(kwargs)
            name = f"{key} {variant}".strip()
            torchjd = issubclass(cls, JDWeighting)
            if needs.gram is None:
                plain.append(Timed(name, key, kwargs, GRAM_SPACES[0], needs, torchjd))
            else:
                gram += [Timed(f"{name} ({space})", key, kwargs, space, needs, torchjd) for space in GRAM_SPACES]
    plain.sort(key=lambda t: t.needs.post_update_logps)  # stable: lab order within each
    gram.sort(key=lambda t: (t.torchjd, GRAM_SPACES.index(t.space)))
    return plain + gram
