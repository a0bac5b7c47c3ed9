"""Objective roles: which objectives the weighting combines, which are only watched, which only evaluated.

``objective_roles: {clarity: monitor}`` in a recipe (``MOGRPOConfig.objective_roles``) gives an objective one of:

* ``train`` (the default): scored on every training batch and combined by the weighting;
* ``monitor``: scored on every training batch, logged (TRL's ``rewards/<objective>/mean``), evaluated and watched by
  the interference monitor, but left out of the weighting, which sees the ``train`` objectives only (its
  ``weights`` and other per-objective lists have one entry per ``train`` objective);
* ``eval``: not scored on training batches at all (its reward function is never called on them), scored at every
  evaluation and watched there (``eval_drop`` events).

At least one objective must be ``train``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mo_align.text import excerpt


ROLES = ("train", "monitor", "eval")
DEFAULT_ROLE = "train"
ROLES_FIELD = "objective_roles"


def parse_roles(value: Any, field: str = ROLES_FIELD) -> dict[str, str]:
    """The roles as given (objective -> role): a mapping whose values are in :data:`ROLES` (one line naming the
    field otherwise). Objective names are checked against ``reward_funcs`` by :func:`resolve_roles`."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{field} must be a mapping of objective -> role ({', '.join(ROLES)}), got {excerpt(value)}")
    for name, role in value.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"{field}: objective names must be non-empty strings, got {excerpt(name)}")
        if not isinstance(role, str) or role not in ROLES:
            raise ValueError(f"{field}[{name}]: unknown role {excerpt(role)}; choose from {', '.join(ROLES)}")
    return dict(value)


def resolve_roles(names: Sequence[str], roles: Any, field: str = ROLES_FIELD) -> dict[str, str]:
    """Every objective's role, in ``names`` order (``train`` unless given); an objective that is not in ``names``,
    or no ``train`` objective left, is one line naming the field."""
    given = parse_roles(roles, field)
    unknown = [n for n in given if n not in names]
    if unknown:
        raise ValueError(f"{field}[{unknown[0]}]: not an objective of this run (reward_funcs: {list(names)})")
    full = {n: given.get(n, DEFAULT_ROLE) for n in names}
    if DEFAULT_ROLE not in full.values():
        raise ValueError(
            f"{field}: at least one objective must have role train (the weighting combines those); "
            f"got {', '.join(f'{n}: {r}' for n, r in full.items())}"
        )
    return full
