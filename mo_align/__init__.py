"""mo_align — multi-objective RL alignment of LLMs on Hugging Face TRL.

Paper: "Cross-objective interference in multi-objective RL alignment" (arXiv 2602.06869).

Notation used in every docstring and shape comment:

* N — completions in a generation batch (prompts × G), gathered over processes; B — this micro-batch's rows.
* G — ``num_generations``: consecutive rows form one prompt's group.
* K — objectives (one per reward function, in ``reward_funcs`` order).
* r ∈ R^{N×K} — raw rewards (NaN = not applicable).  L ∈ N^N — completion token lengths.
* A ∈ R^{N×K} — per-objective normalised advantages;  s ∈ R^N — the scalarized signal actually optimised.
* w ∈ R^K — objective weights;  g_k — per-objective policy gradient;  Gram_ij = ⟨g_i, g_j⟩.

Layout (one concern per module; the trainer only wires hooks):

=========================  ==========================================================================================
``trainer/``               ``MOGRPOTrainer(trl.GRPOTrainer)``: ``__init__`` the override map; ``scoring`` advantages
                           from a weighting; ``gradient`` per-objective losses, Gram matrices, Σ α_k ∇L_k; ``gram``
                           full-batch Gram accumulation; ``post_update`` CTWA's statistic + the callback; ``state``
                           ``mo_state.pt`` and complete checkpoints; ``evaluation`` per-objective eval;
                           ``trl_compat`` every TRL private name (contract-tested)
``weightings/``            ``Weighting`` (``base``: hooks, ``TrainerNeeds``), one module per algorithm, ``validation``
                           (hyperparameter ranges, the finite-weights guard); ``WEIGHTINGS`` / ``get_weighting``
``advantages.py``          estimators: GRPO group normalisation, REINFORCE++ batch whitening, GDPO
``covariance.py``          within-group covariance of rewards with a signal (the covariance law; CTWA, diagnostics)
``diagnostics.py``         the interference monitor (covariance EMAs, events)
``rewards/``               accuracy (math-verify pool), conciseness, clarity, K-head reward model; output checks
``objectives/``            objective roles (train, monitor, eval) and conditions (only_if / otherwise)
``configs.py``             ``MOGRPOConfig(trl.GRPOConfig)``, ``MOScriptArguments``; ``recipe.py`` safe YAML reading
``train.py`` ``cli.py``    ``python -m mo_align.train`` / ``mo-align train|report|push|lab|data|env``; ``launch.py``
``runs/``                  ``summary`` the one owner of ``mo_summary.json``; ``card`` the model card (from a template);
                           ``report`` fronts, hypervolume, plots
``hub/``                   Hub push (``mo-align push``); ``vllm/`` server-mode client, weight sync, plugin
``lab/``                   the CPU interference lab; ``data/`` MATH-500 preparation, the synthetic task
``checkpoints.py``         completeness markers; ``extras.py`` optional packages; ``testing.py`` the tiny model
=========================  ==========================================================================================
"""

from __future__ import annotations

import importlib
from typing import Any


__version__ = "0.1.0"
__all__ = [
    "REWARDS",
    "WEIGHTINGS",
    "MOGRPOConfig",
    "MOGRPOTrainer",
    "MOScriptArguments",
    "ObjectiveStats",
    "TrainerNeeds",
    "Weighting",
    "__version__",
    "get_reward_funcs",
    "get_weighting",
]

_WHERE = {
    "MOGRPOTrainer": "mo_align.trainer",
    "MOGRPOConfig": "mo_align.configs",
    "MOScriptArguments": "mo_align.configs",
    "ObjectiveStats": "mo_align.weightings",
    "TrainerNeeds": "mo_align.weightings",
    "Weighting": "mo_align.weightings",
    "WEIGHTINGS": "mo_align.weightings",
    "get_weighting": "mo_align.weightings",
    "REWARDS": "mo_align.rewards",
    "get_reward_funcs": "mo_align.rewards",
}


def __getattr__(name: str) -> Any:
    """The public API, imported on first use (``import mo_align`` stays light: no torch/TRL until needed)."""
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'mo_align' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
