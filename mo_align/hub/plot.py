"""The weight trajectory plot of a model card (``mo_weights.png``).

The run report (:mod:`mo_align.report`) draws its own weight plot; the two are to become one, shared by both.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any


__all__ = ["plot_weights"]


def plot_weights(summary: Mapping[str, Any], path: str | os.PathLike) -> bool:
    """Write the weight trajectory (and the eval curve when there are two evaluations or more) as a PNG.

    Returns False (and writes nothing) when the summary has no weight history. Uses matplotlib's Agg canvas
    directly, so the process-wide pyplot backend is left alone.
    """
    weights = [w for w in summary.get("weights") or [] if isinstance(w, Mapping) and w.get("weights")]
    if not weights:
        return False
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    objectives = list(summary.get("objectives") or weights[0]["weights"])
    evals = [e for e in summary.get("eval") or [] if isinstance(e, Mapping) and e.get("means")]
    panels = 2 if len(evals) >= 2 else 1
    fig = Figure(figsize=(5.2 * panels, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    steps = [w.get("step") for w in weights]
    for name in objectives:
        values = [w["weights"].get(name) for w in weights]
        axes[0].plot(steps, [math.nan if v is None else v for v in values], marker=".", label=name)
    axes[0].set_title(f"objective weights ({summary.get('algorithm', '?')})")
    axes[0].set_xlabel("optimizer step")
    axes[0].set_ylabel("weight")
    axes[0].grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    if panels == 2:
        eval_steps = [e.get("step") for e in evals]
        for name in objectives:
            values = [e["means"].get(name) for e in evals]
            axes[1].plot(eval_steps, [math.nan if v is None else v for v in values], marker="o", label=name)
        axes[1].set_title("evaluation mean per objective")
        axes[1].set_xlabel("optimizer step")
        axes[1].grid(alpha=0.3)
        axes[1].legend(fontsize=8)
        axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
    return True
