"""Weighting strategies: one file per strategy, everything about it on its class.

A strategy registers itself when its class is defined, ``class X(Weighting, key="x")`` (:class:`Weighting`: its
papers, hyperparameter ranges, contract flags and config checks are class attributes too). ``WEIGHTINGS`` holds the
built-in ones, key -> class (module name = key = recipe name = make target; the TorchJD adapter module ``jd``
declares several keys: upgrad, dualproj, cagrad, imtlg, aligned_mtl, pcgrad, and every other TorchJD Gramian
weighting as ``jd:<Name>``, ``jd.METHODS``). ``REGISTRY`` also holds the keys of a user's strategies once imported.
``weighting_class(name)`` resolves a key, ``jd:<Name>`` or a dotted path ``pkg.module.ClassName`` to a
:class:`Weighting` subclass in a user's own file (the path imports it); ``get_weighting(name, num_objectives,
**kwargs)`` validates the name and the kwargs before building it. ``python -m mo_align.weightings`` prints the
built-in keys.
"""

from __future__ import annotations

import importlib
from typing import Any

from mo_align.weightings.base import REGISTRY, ObjectiveStats, Paper, TrainerNeeds, Weighting
from mo_align.weightings.ctwa import CTWAWeighting
from mo_align.weightings.dynamic import DynamicWeighting
from mo_align.weightings.gradnorm import GradNormWeighting
from mo_align.weightings.jd import PREFIX as JD_PREFIX
from mo_align.weightings.jd import JDWeighting, method_class
from mo_align.weightings.lagrangian import LagrangianWeighting
from mo_align.weightings.linear import LinearWeighting
from mo_align.weightings.mgda import MGDAWeighting
from mo_align.weightings.pama import PAMAWeighting
from mo_align.weightings.smooth_tchebycheff import SmoothTchebycheffWeighting
from mo_align.weightings.tchebycheff import TchebycheffWeighting
from mo_align.weightings.validation import validate_kwargs


WEIGHTINGS: dict[str, type[Weighting]] = dict(REGISTRY)  # the built-in strategies (the classes above registered)


def _dotted_class(path: str) -> type[Weighting]:
    """The :class:`Weighting` subclass at ``pkg.module.ClassName`` (its module imported, which registers its key)."""
    module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"weighting {path!r}: cannot import module {module_name!r} ({exc})") from exc
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Weighting)):
        raise ValueError(f"weighting {path!r}: {module_name} has no Weighting subclass named {attr!r}")
    return cls


def registered_class(name: str) -> type[Weighting] | None:
    """The class of a registry key or ``jd:<Name>``, else ``None``; never imports a module (for names read from
    files: a run summary's algorithm)."""
    if name in REGISTRY:
        return REGISTRY[name]
    if isinstance(name, str) and name.startswith(JD_PREFIX):
        try:
            return method_class(name[len(JD_PREFIX) :])
        except ValueError:
            return None
    return None


def weighting_class(name: str) -> type[Weighting]:
    """The class behind a recipe's ``weighting:``: a registry key, ``jd:<Name>`` for any TorchJD Gramian weighting
    (``mo_align.weightings.jd``), or a dotted path ``pkg.module.ClassName`` to a :class:`Weighting` subclass.
    Raises ``ValueError`` naming the valid names."""
    if name in REGISTRY:
        return REGISTRY[name]
    if isinstance(name, str) and name.startswith(JD_PREFIX):
        return method_class(name[len(JD_PREFIX) :])
    if isinstance(name, str) and "." in name.strip("."):
        return _dotted_class(name)
    raise ValueError(
        f"unknown weighting {name!r}; choose from {sorted(WEIGHTINGS)} or '{JD_PREFIX}<Name>' (TorchJD), or the "
        "dotted path pkg.module.ClassName of your own Weighting subclass"
    )


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
    "REGISTRY",
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
    "Paper",
    "SmoothTchebycheffWeighting",
    "TchebycheffWeighting",
    "TrainerNeeds",
    "Weighting",
    "get_weighting",
    "registered_class",
    "validate_kwargs",
    "weighting_class",
]
