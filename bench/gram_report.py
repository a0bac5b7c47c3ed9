"""Tables and recommendation of ``make bench-gram`` (bench/gram_fidelity.py) from its per-batch records."""

from __future__ import annotations

import math
import statistics
from typing import Any

from mo_align.stats import t_test


FULL = "parameters (all)"


def machine() -> str:
    from run import machine as bench_machine  # bench/run.py's line: CPU, cores, library versions, date

    return bench_machine()


def interval(values: list[float], lo: float = -math.inf, hi: float = math.inf) -> dict[str, float]:
    """Mean and 95 % t interval over batches, cut to the metric's range [lo, hi] (non-finite values left out; ``n``
    counts the finite ones)."""
    t = t_test(values)
    low, high = (t.low, t.high) if math.isnan(t.low) else (max(lo, t.low), min(hi, t.high))
    return {"mean": t.estimate, "low": low, "high": high, "n": t.n, "of": len(values)}


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """A model's records -> per space and per strategy x space: intervals over batches, s/step and ratios."""
    batches, time_s = result["batches"], result.get("time_s", {})
    k = len(batches[0]["losses"])
    gen = statistics.median(result["generate_s"])
    linear_runs = [time_s.get("linear", math.nan), time_s.get("linear (again)", math.nan)]
    linear = statistics.mean(linear_runs)
    spaces = {}
    for n, info in result["spaces"].items():
        coords = statistics.mean(b["coords"][n] for b in batches)
        spaces[n] = {**info, "coords": coords, "rows_mb": k * coords * 4 / 2**20,
                     "corr_delta": interval([b["spaces"][n]["corr_delta"] for b in batches], 0.0),
                     "norm_share_delta": interval([b["spaces"][n]["norm_share_delta"] for b in batches], 0.0),
                     }  # fmt: skip
    rows = []
    strategies = [s for s in batches[0] if s not in ("reward_mean", "reward_std", "losses", "coords", "spaces")]
    for s in strategies:
        for n in result["spaces"]:
            per = [b[s][n] for b in batches]
            row = {"strategy": s, "space": n, "cos": interval([p["cos"] for p in per], -1.0, 1.0),
                   "alpha_maxabs": interval([p["alpha_maxabs"] for p in per], 0.0),
                   "alpha_mean": [statistics.mean(p["alpha"][i] for p in per) for i in range(k)]}  # fmt: skip
            if "cos_weight_step" in per[0]:
                row["cos_weight_step"] = interval([p["cos_weight_step"] for p in per], -1.0, 1.0)
                row["weight_step_ratio"] = interval([p["weight_step_ratio"] for p in per], 0.0)
            t = time_s.get(f"{s} | {n}", math.nan)
            row.update(time_s=t, x_linear_train=t / linear, x_linear_step=(gen + t) / (gen + linear))
            rows.append(row)
    reward_std = [statistics.mean(b["reward_std"][i] for b in batches) for i in range(k)]
    keys = ("label", "path", "layers", "params", "batch", "lr", "loss", "batched_vjp")
    return {**{key: result.get(key) for key in keys}, "n_batches": len(batches), "generate_s": gen,
            "linear_s": linear, "linear_runs_s": linear_runs, "reward_std": reward_std,
            "signal": sum(v > 0 for v in reward_std),
            "spaces": spaces, "rows": rows}  # fmt: skip


def ci(x: dict[str, float] | None, digits: int = 3) -> str:
    if not x or not x["n"]:
        return "n/a"
    mid = f"{x['mean']:.{digits}f}"
    band = "" if math.isnan(x["low"]) else f" [{x['low']:.{digits}f}, {x['high']:.{digits}f}]"
    return mid + band + ("" if x["n"] == x["of"] else f" (n={x['n']}/{x['of']})")


def model_section(m: dict[str, Any]) -> list[str]:
    std = ", ".join(f"{v:.3f}" for v in m["reward_std"])
    lines = [f"## {m['label']}", "",
             f"{m['params'] / 1e6:.2f} M parameters, {m['layers']} layers; batch {m['batch']}; L_k: {m['loss']}; "
             f"lr {m['lr']:g}; {m['n_batches']} batches; generation and scoring {m['generate_s']:.2f} s/batch "
             f"(median); reward std per objective (accuracy, conciseness, clarity; mean over batches) {std}: "
             f"{m['signal']} of 3 carry signal.", ""]  # fmt: skip
    if m["signal"] == 0:
        lines += ["No reward varies on this policy's completions: every g_k = 0, so cos and Δα are undefined (n/a) or "
                  "trivially 0; only the time columns mean anything here.", ""]  # fmt: skip
    lines += ["| Gram space | gramian_params | K x n gradients held | corr Δ (max abs) | norm-share Δ (max abs) |",
              "|---|---|---|---|---|"]  # fmt: skip
    seen: dict[Any, str] = {}
    for n, s in m["spaces"].items():
        pattern = f"`{s['gramian_params']}`" if s["gramian_params"] else "(all)" if s["space"] == "parameters" else ""
        same = seen.setdefault((s["space"], s["gramian_params"]), n)
        pattern += "" if same == n else f" (= {same} on this model)"
        lines.append(f"| {n} | {pattern} | 3 x {s['coords']:,.0f} ({s['rows_mb']:.1f} MB) | {ci(s['corr_delta'])} | "
                     f"{ci(s['norm_share_delta'])} |")  # fmt: skip
    return lines + strategy_table(m)


def strategy_table(m: dict[str, Any]) -> list[str]:
    lines = ["", "| strategy | Gram space | cos(d, d_full) | max abs Δα | weight step: cos, size ratio | s/step | "
             "x linear (train) | x linear (step) |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in m["rows"]:
        step = f"{ci(r['cos_weight_step'])}; {ci(r['weight_step_ratio'], 2)}" if "cos_weight_step" in r else ""
        lines.append(f"| {r['strategy']} | {r['space']} | {ci(r['cos'])} | {ci(r['alpha_maxabs'], 4)} | {step} | "
                     f"{r['time_s']:.3f} | {r['x_linear_train']:.2f} | {r['x_linear_step']:.2f} |")  # fmt: skip
    first, last = m["linear_runs_s"]
    lines += ["", f"linear: {m['linear_s']:.3f} s/step (training step only; the mean of its runs before and after the "
              f"others, {first:.3f} and {last:.3f} s: {100 * abs(first - last) / m['linear_s']:.0f} % apart).",
              *vjp_line(m.get("batched_vjp")), ""]  # fmt: skip
    return lines


def vjp_line(v: dict[str, Any] | None) -> list[str]:
    if not v:
        return []
    if "batched_error" in v:
        return [
            f"Batched VJP (`is_grads_batched`): failed ({v['batched_error']}); sequential {v['sequential_s']:.3f} s."
        ]
    return [f"K full-parameter gradients on one batch: {v['sequential_s']:.3f} s as K sequential backward passes "
            f"(the trainer's path) vs {v['batched_s']:.3f} s as one batched VJP (`is_grads_batched`, "
            f"{v['sequential_s'] / v['batched_s']:.2f}x), max |difference| {v['max_abs_diff']:.2e}."]  # fmt: skip


def recommend(models: list[dict[str, Any]], threshold: float) -> list[str]:
    """Per strategy: the cheapest space, among those measured faster than the full-parameter one on every model, whose
    cos(d, d_full) interval (and, for a stateful strategy, that of its weight step's direction) lies above
    ``threshold`` on every model; else the full-parameter Gram matrix, with the closest cheaper space. The models
    share their layout (spaces are matched by position); each figure is given per model, joined by " / "."""
    strategies = dict.fromkeys(r["strategy"] for r in models[0]["rows"])
    return [recommend_one(s, [[r for r in m["rows"] if r["strategy"] == s] for m in models], threshold)
            for s in strategies]  # fmt: skip


def intervals(per: list[list[dict]], i: int, key: str, digits: int = 3) -> str:
    """Row ``i``'s interval ``key`` on every model, " / "-joined."""
    return " / ".join(ci(p[i][key], digits) for p in per)


def costs(per: list[list[dict]], i: int) -> str:
    """Row ``i``'s training step x linear's on every model, " / "-joined."""
    return " / ".join(f"{p[i]['x_linear_train']:.2f}" for p in per) + "x"


def recommend_one(s: str, per: list[list[dict]], threshold: float) -> str:
    """:func:`recommend`'s line for strategy ``s``, whose rows per model are ``per``."""
    full = next(i for i, r in enumerate(per[0]) if r["space"] == FULL)
    faster = [i for i in range(len(per[0])) if i != full and all(p[i]["time_s"] < p[full]["time_s"] for p in per)]
    cheaper = sorted(faster, key=lambda i: per[0][i]["time_s"])
    good = [i for i in cheaper if all(passes(p[i], threshold) for p in per)]
    cost_full = costs(per, full)
    if good:
        i = good[0]
        text = (f"**{s}**: {per[0][i]['space']} — cos(d, d_full) {intervals(per, i, 'cos')} at "
                f"{costs(per, i)} linear's training step (full parameters {cost_full})")  # fmt: skip
        if "weight_step_ratio" in per[0][i]:
            ratio = intervals(per, i, "weight_step_ratio", 2)
            text += f"; its weight steps are {ratio}x the full-parameter ones (step size)"
    elif not cheaper:
        text = f"**{s}**: parameters (all) ({cost_full}) — no other space measured faster"
    else:
        i = max(cheaper, key=lambda j: min(closeness(p[j]) for p in per))
        text = (f"**{s}**: parameters (all) ({cost_full}) — no faster space reaches cos >= {threshold}; the "
                f"closest, {per[0][i]['space']}, has cos {intervals(per, i, 'cos')}")  # fmt: skip
        if "cos_weight_step" in per[0][i]:
            text += f", weight-step direction {intervals(per, i, 'cos_weight_step')}"
        text += f" at {costs(per, i)}"
    return f"- {text}."


def checks(r: dict[str, Any]) -> list[dict[str, float]]:
    """The intervals a space must pass: cos(d, d_full), and the weight step's direction for a stateful strategy."""
    return [r["cos"]] + ([r["cos_weight_step"]] if "cos_weight_step" in r else [])


def passes(r: dict[str, Any], threshold: float) -> bool:
    return all(c["n"] == c["of"] and c["low"] >= threshold for c in checks(r))


def closeness(r: dict[str, Any]) -> float:
    return min((c["mean"] if c["n"] else -2.0) for c in checks(r))


COST_NOTE = (
    "Why the costs look as they do: with every parameter, MGDA's, UPGrad's and GradNorm's K per-objective gradients "
    "are the update itself (K backward passes); with a `gramian_params` subset they take K backward passes down to "
    "the subset's earliest layer plus one full backward of Σ_k α_k L_k, so a subset saves time only when its passes "
    "stop well above the bottom of the model (a fraction p of a full backward with K p + 1 < K, p < 2/3 at K = 3): "
    "the cost is set by the earliest layer, not by the parameter count. Dynamic always back-propagates its own loss "
    "(K + 1 full passes, or K partial + 1). The log-prob space needs no backward through the model beyond the one "
    "that applies the update. GradNorm and Dynamic also read the Gram matrix's scale (‖g_k‖; η Σ_j ⟨g_k, g_j⟩ / μ): "
    "in another space their weight steps change size by the ratio shown, so the recipes' `lr` / `regularization` "
    "do not carry over unchanged."
)


def busy_load(loadavg: str, cores: int, own: int = 0) -> bool:
    """Whether the 1-minute load average exceeds half the cores on top of ``own`` (the bench's own threads, which the
    load read while it runs includes)."""
    try:
        return float(loadavg.split()[0]) > own + cores / 2
    except (ValueError, IndexError):
        return False


def render(doc: dict[str, Any]) -> str:
    meta = doc["meta"]
    lines = ["# Gram-space fidelity of the gradient-space strategies (`make bench-gram`)", "",
             f"Machine: {meta['machine']}; {meta['threads']} torch thread(s). Load average before: "
             f"`{meta['loadavg_before']}`; after (its own threads included): `{meta['loadavg_after']}`. Command: "
             f"`{meta['command']}`.", "",
             "d = Σ_k α_k g_k with the full-parameter per-objective gradients g_k; α from each space's Gram matrix "
             "by the strategy's own object (fresh state per batch; GradNorm and Dynamic: the weights after one step "
             "from their initial weights, which act from the next step). Intervals: mean [95 % t interval] over "
             "batches. max abs Δα = max_k |α_k - α_full,k| (GradNorm's weights sum to K, the others' α to 1 or "
             "less). corr Δ / norm-share Δ: max abs difference of cos(g_i, g_j) and of ‖g_k‖ / Σ_j ‖g_j‖ from the "
             "full-parameter ones (scale-free). s/step: median of the trainer's training step on one batch (its "
             "Gram work and K or K + 1 backward passes) plus its after-step Gram hooks; x linear (step) adds the "
             "batch's generation and scoring to both. K x n gradients held: the rows the space's Gram matrix is "
             "formed from (float32).", ""]  # fmt: skip
    lines += [f"Note: {meta['note']}.", ""] if meta.get("note") else []
    cores = meta.get("cores", 2)
    if busy_load(meta["loadavg_before"], cores) or busy_load(meta.get("loadavg_after", ""), cores, meta["threads"]):
        lines += [f"**Measured on a busy machine** (1-minute load above half the {cores} cores, the bench's own "
                  "threads aside): the "
                  "s/step columns are indicative only; the fidelity columns do not depend on the load.", ""]  # fmt: skip
    for m in doc["models"]:
        lines += model_section(m)
    signal = [m for m in doc["models"] if m["signal"] >= 2]
    lines += ["## Recommendation", ""]
    if signal:
        names = " and ".join(m["label"] for m in signal)
        lines += [f"From {names} (rule: among the spaces measured faster than every parameter, the cheapest whose "
                  "cos(d, d_full) 95 % interval — and, for GradNorm and Dynamic, that of their weight step's "
                  f"direction — lies above {meta['threshold']}"
                  + (" on every one of these models; figures per model, in this order" if len(signal) > 1 else "")
                  + "):", "", *recommend(signal, meta["threshold"]), "", COST_NOTE, ""]  # fmt: skip
    else:
        lines += ["No model's rewards carried signal on two objectives: no recommendation.", ""]
    return "\n".join(lines)
