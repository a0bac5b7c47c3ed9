"""Hyperparameter validation and the runtime guard on weights (used by ``get_weighting`` and the trainer).

A subclass's typed ``__init__(self, num_objectives, *, ...)`` *is* its hyperparameter schema: recipes splat
``weighting_kwargs`` into it through :func:`mo_align.weightings.get_weighting`, which rejects unknown or ill-typed
keys before any model is loaded (:func:`validate_kwargs`). The class's ``ranges`` (``Weighting.ranges``) add the
admissible interval of each numeric hyperparameter; bounds are wide enough for every recipe and paper setting, narrow
enough that no value overflows a float32 weight within a run. Any number without a range must still be finite and at
most ``MAX_MAGNITUDE`` in size, so no NaN, inf or 1e308 reaches a strategy's state. :func:`check_finite_weights` stops a
run whose weights overflowed, naming the state.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from typing import TYPE_CHECKING, Any, Literal

import torch

from mo_align.text import excerpt as excerpt  # re-exported: its home was here


if TYPE_CHECKING:
    from mo_align.weightings.base import Weighting


# ---- hyperparameter validation ----------------------------------------------------------------------------------
MAX_MAGNITUDE = 1e6  # default bound |x| of a numeric hyperparameter without a declared range


def _interval(spec: str) -> tuple[float, float, bool, bool]:
    """``"(0, 1]"`` -> (0.0, 1.0, lower open, upper open)."""
    lo, hi = (float(x) for x in spec[1:-1].split(","))
    return lo, hi, spec[0] == "(", spec[-1] == ")"


def check_number(value: Any, where: str, spec: str | None = None) -> None:
    """Raise ``ValueError`` ("``where`` must be finite and ..., got x") unless ``value`` (a number, or a list of
    numbers) is finite and inside ``spec`` (interval notation; default ``[-MAX_MAGNITUDE, MAX_MAGNITUDE]``).
    Values of other types are left to the type check."""
    lo, hi, lo_open, hi_open = _interval(spec or f"[-{MAX_MAGNITUDE}, {MAX_MAGNITUDE}]")
    many = isinstance(value, list | tuple)
    for v in value if many else [value]:
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if math.isfinite(v) and (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi):
            continue
        lower = (
            ("non-negative" if many else ">= 0") if (lo == 0 and not lo_open) else f"{'>' if lo_open else '>='} {lo:g}"
        )
        upper = f"{'<' if hi_open else '<='} {hi:g}"
        rule = f"finite, {lower} and {upper}" if lower == "non-negative" else f"finite and {lower} and {upper}"
        raise ValueError(f"{where} must be {rule}, got {excerpt(v)}")


def _matches(value: Any, annotation: Any) -> bool:
    """Loose runtime check of a YAML/JSON value against a constructor annotation."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(annotation))
    if origin is Literal:
        return value in typing.get_args(annotation)
    if origin in (list, tuple, typing.Sequence):
        if not isinstance(value, list | tuple):
            return False
        inner = typing.get_args(annotation)
        return not inner or all(_matches(v, inner[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def validate_kwargs(cls: type[Weighting], kwargs: dict[str, Any]) -> None:
    """Raise ``TypeError`` naming the field for an unknown, ill-typed or missing (no default) weighting kwarg,
    ``ValueError`` for a number that is not finite or outside its interval in ``cls.ranges``."""
    sig = inspect.signature(cls.__init__)
    hints = typing.get_type_hints(cls.__init__)
    allowed = [p for p in sig.parameters if p not in ("self", "num_objectives")]
    ranges = cls.ranges
    for key in allowed:
        if sig.parameters[key].default is inspect.Parameter.empty and key not in kwargs:
            raise TypeError(f"weighting '{cls.name}' needs the kwarg {key!r} (weighting_kwargs: {{{key}: ...}})")
    for key, value in kwargs.items():
        if key not in allowed:
            raise TypeError(f"weighting '{cls.name}' got an unknown kwarg {excerpt(key)}; valid kwargs: {allowed}")
        if not _matches(value, hints.get(key, Any)):
            raise TypeError(
                f"weighting '{cls.name}' kwarg {key!r} must be {hints.get(key)}, got {excerpt(value)} "
                f"({type(value).__name__})"
            )
        check_number(value, f"{cls.name}: {key}", ranges.get(key))


# ---- runtime guard ------------------------------------------------------------------------------------------------
def _state_entries(value: Any, prefix: str = "") -> list[tuple[str, torch.Tensor]]:
    """(dotted name, float tensor) for every float tensor or float in a (nested) state dict."""
    if isinstance(value, torch.Tensor):
        return [(prefix, value.detach().double().reshape(-1))] if value.is_floating_point() else []
    if isinstance(value, float):
        return [(prefix, torch.tensor([value], dtype=torch.float64))]
    if isinstance(value, dict):
        return [e for k, v in value.items() for e in _state_entries(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(value, list | tuple):
        return [e for i, v in enumerate(value) for e in _state_entries(v, f"{prefix}[{i}]")]
    return []


def check_finite_weights(weighting: Weighting, step: int) -> None:
    """Stop the run when a strategy's weights are no longer finite, naming the strategy and the state that
    overflowed (entries holding NaN or +inf; else the finite entry of largest magnitude, e.g. a log-weight whose
    exponential overflows). Without this, inf/NaN weights become all-zero advantages and the run exits 0."""
    w = weighting.weights()
    if torch.isfinite(w).all():
        return
    entries = [(n, t) for n, t in _state_entries(weighting.state_dict()) if t.numel()]
    bad = [n for n, t in entries if (torch.isnan(t) | (t == math.inf)).any()]
    if bad:
        culprit = "non-finite state: " + ", ".join(bad)
    elif entries:
        name, t = max(entries, key=lambda e: float(e[1].nan_to_num(0.0, 0.0, 0.0).abs().max()))
        culprit = f"state {name} reached |x| = {float(t.abs().max()):.3g}"
    else:
        culprit = "no state (weights() itself)"
    raise FloatingPointError(
        f"{weighting.name}: non-finite weights {[round(x, 4) for x in w.tolist()]} at step {step} ({culprit}); "
        "the run stops here instead of training on garbage: lower the strategy's step size or bound its weights"
    )
