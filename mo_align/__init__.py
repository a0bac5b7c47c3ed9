"""mo_align — multi-objective RL alignment of LLMs on Hugging Face TRL.

Notation used in every docstring and shape comment:

* N — completions in a generation batch (prompts × G), gathered over processes; B — this micro-batch's rows.
* G — ``num_generations``: consecutive rows form one prompt's group.
* K — objectives (one per reward function, in ``reward_funcs`` order).
* r ∈ R^{N×K} — raw rewards (NaN = not applicable).  L ∈ N^N — completion token lengths.
* A ∈ R^{N×K} — per-objective normalised advantages;  s ∈ R^N — the scalarized signal actually optimised.
* w ∈ R^K — objective weights;  g_k — per-objective policy gradient;  Gram_ij = ⟨g_i, g_j⟩.

Paper: "Cross-objective interference in multi-objective RL alignment" (arXiv 2602.06869).
"""

__version__ = "0.1.0"
