"""Weighting strategies: one module per algorithm, one literal registry.

``WEIGHTINGS`` maps the registry key (= module name = recipe name = make target) to the class; the one exception is
the TorchJD adapter module ``jd``, which provides several keys (``jd.REGISTERED``: upgrad, dualproj, cagrad, imtlg,
aligned_mtl, pcgrad) and every other TorchJD Gramian weighting as ``jd:<Name>`` (``jd.METHODS``).
``weighting_class(name)`` resolves either form; ``get_weighting(name, num_objectives, **kwargs)`` validates the name
and the kwargs before building it.
"""

from __future__ import annotations

from typing import Any

from mo_align.weightings.base import ObjectiveStats, TrainerNeeds, Weighting
from mo_align.weightings.ctwa import CTWAWeighting
from mo_align.weightings.dynamic import DynamicWeighting
from mo_align.weightings.gradnorm import GradNormWeighting
from mo_align.weightings.jd import PREFIX as JD_PREFIX
from mo_align.weightings.jd import REGISTERED as JD_REGISTERED
from mo_align.weightings.jd import JDWeighting, method_class
from mo_align.weightings.lagrangian import LagrangianWeighting
from mo_align.weightings.linear import LinearWeighting
from mo_align.weightings.mgda import MGDAWeighting
from mo_align.weightings.pama import PAMAWeighting
from mo_align.weightings.smooth_tchebycheff import SmoothTchebycheffWeighting
from mo_align.weightings.tchebycheff import TchebycheffWeighting
from mo_align.weightings.validation import validate_kwargs


WEIGHTINGS: dict[str, type[Weighting]] = {
    "linear": LinearWeighting,
    "tchebycheff": TchebycheffWeighting,
    "smooth_tchebycheff": SmoothTchebycheffWeighting,
    "lagrangian": LagrangianWeighting,
    "mgda": MGDAWeighting,
    "gradnorm": GradNormWeighting,
    "dynamic": DynamicWeighting,
    "pama": PAMAWeighting,
    "ctwa": CTWAWeighting,
    **JD_REGISTERED,
}


def weighting_class(name: str) -> type[Weighting]:
    """The class behind a recipe's ``weighting:``: a registry key, or ``jd:<Name>`` for any TorchJD Gramian
    weighting (``mo_align.weightings.jd``). Raises ``ValueError`` naming the valid names."""
    if name in WEIGHTINGS:
        return WEIGHTINGS[name]
    if isinstance(name, str) and name.startswith(JD_PREFIX):
        return method_class(name[len(JD_PREFIX) :])
    raise ValueError(f"unknown weighting {name!r}; choose from {sorted(WEIGHTINGS)} or '{JD_PREFIX}<Name>' (TorchJD)")


def get_weighting(name: str, num_objectives: int, **kwargs: Any) -> Weighting:
    """Build the weighting ``name`` for K = ``num_objectives`` objectives.

    Raises:
        ValueError: unknown name (the message lists the valid ones) or an invalid hyperparameter value.
        TypeError: an unknown, ill-typed or missing kwarg (the message names it).
    """
    cls = weighting_class(name)
    validate_kwargs(cls, kwargs)
    return cls(num_objectives, **kwargs)


__all__ = [
    "WEIGHTINGS",
    "CTWAWeighting",
    "DynamicWeighting",
    "GradNormWeighting",
    "JDWeighting",
    "LagrangianWeighting",
    "LinearWeighting",
    "MGDAWeighting",
    "ObjectiveStats",
    "PAMAWeighting",
    "SmoothTchebycheffWeighting",
    "TchebycheffWeighting",
    "TrainerNeeds",
    "Weighting",
    "get_weighting",
    "validate_kwargs",
    "weighting_class",
]
