"""The measurements of ``make bench-gram`` (bench/gram_fidelity.py): how faithful and how costly each Gram space is.

A gradient-space strategy chooses its coefficients α from the K x K Gram matrix of the per-objective policy gradients
g_k; the trainer measures that Gram matrix on every trainable parameter, on a ``gramian_params`` subset, or on the
per-token log-probabilities (``gramian_space: logprobs``). For one sampled batch this module computes, with the
trainer's own code (:class:`mo_align.trainer.gradient.GradientSpace`: the K losses L_k from one memoised forward,
their gradients, :class:`mo_align.trainer.gram.GramAccumulator` for the Gram matrix), the Gram matrix of every space,
and from each the strategy's coefficients, computed by the strategy object itself
(:meth:`~mo_align.weightings.base.Weighting.gradient_weights` / ``update``, as the trainer calls them). The update
each α gives is measured in full parameter space, d = Σ_k α_k g_k with the full-parameter g_k, and compared with the
update of the full-parameter Gram matrix: cos(d_space, d_full) and max_k |α_space,k − α_full,k|.

Time: the trainer's ``training_step`` (the Gram work, the K or K + 1 backward passes) and its after-step Gram hooks,
on one fixed batch, for each strategy x space and for linear.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from contextlib import contextmanager
from typing import Any

import torch

from mo_align.trainer.gradient import GradientSpace
from mo_align.trainer.gram import GramAccumulator
from mo_align.weightings import ObjectiveStats, get_weighting


STRATEGIES = ("mgda", "dynamic", "upgrad", "gradnorm")
FULL = "parameters (all)"
LOGPROBS = "logprobs"


def layer_regex(layers: Any) -> str:
    """A ``gramian_params`` regex selecting these decoder layers (as the paper's ``model\\.layers\\.(...)\\.``)."""
    return r"model\.layers\.(" + "|".join(str(i) for i in layers) + r")\."


def gram_spaces(num_layers: int) -> dict[str, tuple[str, str | None]]:
    """name -> (``gramian_space``, ``gramian_params``) of the compared spaces for a model of ``num_layers`` layers.

    "layers 10-25 of 28" (the Dynamic recipe's subset of Qwen2.5-1.5B) keeps its relative depth: layers
    round(10 L / 28) to round(26 L / 28) - 1. "last quarter": the last ceil(L / 4) layers."""
    n = num_layers
    quarter = max(1, math.ceil(n / 4))
    lo, hi = round(10 * n / 28), max(round(10 * n / 28) + 1, round(26 * n / 28))
    return {
        FULL: ("parameters", None),
        f"last layer ({n - 1})": ("parameters", layer_regex([n - 1])),
        f"last quarter ({n - quarter}-{n - 1})": ("parameters", layer_regex(range(n - quarter, n))),
        f"layers 10-25 of 28 scaled ({lo}-{hi - 1})": ("parameters", layer_regex(range(lo, hi))),
        LOGPROBS: ("logprobs", None),
    }


@contextmanager
def configured(trainer: Any, space: str, pattern: str | None, weighting: Any = None):
    """The trainer set up as if built with ``gramian_space=space, gramian_params=pattern`` (and ``weighting``): a fresh
    :class:`GradientSpace` (what ``MOGRPOTrainer.__init__`` builds from them); the previous setup restored after."""
    args = trainer.args
    saved = (
        args.gramian_space,
        args.gramian_params,
        *(getattr(trainer, k, None) for k in ("weighting", "mo_needs", "mo_gradient")),
    )
    args.gramian_space, args.gramian_params = space, pattern
    if weighting is not None:
        trainer.weighting, trainer.mo_needs = weighting, weighting.trainer_needs()
    trainer.mo_gradient = GradientSpace(trainer)
    try:
        yield trainer.mo_gradient
    finally:
        args.gramian_space, args.gramian_params = saved[0], saved[1]
        for key, value in zip(("weighting", "mo_needs", "mo_gradient"), saved[2:]):
            if value is not None:
                setattr(trainer, key, value)


def space_rows(trainer: Any, model: Any, losses: list, logps: Any, spaces: dict) -> dict[str, torch.Tensor]:
    """name -> the (K, n) per-objective gradients of each space, by ``GradientSpace.local_gradients`` (the graph of
    the one forward is kept: every space back-propagates the same losses)."""
    out = {}
    for name, (space, pattern) in spaces.items():
        with configured(trainer, space, pattern) as gs:
            rows, _ = gs.local_gradients(model, losses, logps, direct=False)
            out[name] = rows.detach().float()
    return out


def gram_of(rows: torch.Tensor, losses: torch.Tensor, space: str, accelerator: Any) -> torch.Tensor:
    """The Gram matrix the trainer forms from one batch's per-objective gradients (``GramAccumulator``)."""
    acc = GramAccumulator(space)
    acc.add(rows, losses)
    return acc.result(accelerator)[0]


def strategy_weights(name: str, kwargs: dict, gram: torch.Tensor, losses: torch.Tensor, stats: ObjectiveStats):
    """(α, the weights before, stateful) of a fresh ``name`` strategy for this Gram matrix, through the hook the
    trainer calls: ``gradient_weights`` (MGDA, TorchJD: the α applied to this batch; GradNorm: the weights after its
    step, which act from the next step) or ``update`` with ``extras["gramian"]`` (Dynamic: the weights after its
    mirror step). ``stateful``: the weights move by a step from a state (GradNorm, Dynamic)."""
    w = get_weighting(name, gram.shape[0], **kwargs)
    before = w.weights().double()
    needs = w.trainer_needs().gram
    if needs == "generation_batch":
        w.update(dataclasses.replace(stats, extras={**stats.extras, "gramian": gram, "losses": losses}))
        return w.weights().double(), before, True
    coeffs, _ = w.gradient_weights(gram, losses)
    if needs == "optimizer_step":
        return w.weights().double(), before, True
    return coeffs.double(), before, False


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """cos(a, b) in float64; NaN when either is zero (cos(a, a) = 1 exactly: sqrt(x²) = |x| in IEEE arithmetic)."""
    a, b = a.double(), b.double()
    ab, aa, bb = float(a @ b), float(a @ a), float(b @ b)
    if aa == 0.0 or bb == 0.0:
        return math.nan
    return max(-1.0, min(1.0, ab / math.sqrt(aa * bb)))


def gram_shape_deltas(gram: torch.Tensor, full: torch.Tensor) -> dict[str, float]:
    """Scale-free differences from the full-parameter Gram matrix: max |Δ| of the correlation matrices
    (cos(g_i, g_j)) and of the norm shares ‖g_k‖ / Σ_j ‖g_j‖ (NaN where a gradient is zero)."""

    def shape(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        norms = torch.sqrt(torch.clamp(torch.diagonal(g.double()), min=0))
        return g.double() / torch.outer(norms, norms), norms / norms.sum()

    (c, s), (cf, sf) = shape(gram), shape(full)
    return {"corr_delta": float((c - cf).abs().max()), "norm_share_delta": float((s - sf).abs().max())}


def batch_record(trainer: Any, inputs: dict, spaces: dict, strategies: dict[str, dict], lr: float) -> dict:
    """One batch: every space's Gram matrix and, per strategy, α, cos(d_space, d_full) and max |Δα|."""
    model, gs = trainer.model, trainer.mo_gradient
    clean = {k: v for k, v in inputs.items() if not k.startswith("mo_")}
    losses, _, logps = gs._losses(model, clean, inputs["mo_objective_advantages"])
    loss_vec = torch.stack([x.detach() for x in losses])
    rows = space_rows(trainer, model, losses, logps, spaces)
    grams = {n: gram_of(rows[n], loss_vec, spaces[n][0], trainer.accelerator) for n in spaces}
    full_rows = rows[FULL].double()
    r = trainer.mo_rewards
    stats = ObjectiveStats(rewards=r, group_size=trainer.num_generations, lengths=clean["completion_mask"].sum(1),
                           objective_names=tuple(trainer.objective_names), extras={"lr": lr})  # fmt: skip
    out: dict[str, Any] = {"reward_mean": torch.nanmean(r, 0).tolist(), "reward_std": r.std(0).tolist()}
    out["losses"] = loss_vec.tolist()
    out["coords"] = {n: rows[n].shape[1] for n in spaces}  # the K x n gradients each space holds
    out["spaces"] = {n: {"gram": grams[n].tolist(), **gram_shape_deltas(grams[n], grams[FULL])} for n in spaces}
    for name, kwargs in strategies.items():
        alphas = {n: strategy_weights(name, kwargs, grams[n], loss_vec, stats) for n in spaces}
        out[name] = compare(alphas, full_rows)
    return out


def compare(alphas: dict, full_rows: torch.Tensor) -> dict[str, dict]:
    """space -> α, cos(d_space, d_full) with d = α @ full-parameter gradients, max |Δα|; for a stateful strategy
    also the direction and size of its weight step vs the full-parameter one (``cos_weight_step``,
    ``weight_step_ratio`` = ‖Δw_space‖ / ‖Δw_full‖; one step from the initial weights moves them only a little,
    so d alone would hide a step taken the wrong way)."""
    a_full, before, stateful = alphas[FULL]
    d_full, step_full = a_full @ full_rows, a_full - before
    out = {}
    for n, (a, _, _) in alphas.items():
        row = {
            "alpha": a.tolist(),
            "cos": cosine(a @ full_rows, d_full),
            "alpha_maxabs": float((a - a_full).abs().max()),
        }
        if stateful:
            size = float(step_full.norm())
            row["cos_weight_step"] = cosine(a - before, step_full)
            row["weight_step_ratio"] = float((a - before).norm()) / size if size > 0 else math.nan
        out[n] = row
    return out


def time_config(trainer: Any, inputs: dict, steps: int, warmup: int = 1) -> float:
    """Median seconds of the trainer's ``training_step`` on ``inputs`` plus its after-step Gram hooks (GradNorm's
    weight step on the step's Gram matrix, Dynamic's batch Gram matrix), as configured now."""
    model, times = trainer.model, []
    for i in range(warmup + steps):
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        trainer.training_step(model, inputs, None)
        if trainer.mo_needs.gram == "optimizer_step":
            trainer.mo_gradient.after_optimizer_step()
        elif trainer.mo_needs.gram == "generation_batch":
            trainer.mo_gradient.batch_gram()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    model.zero_grad(set_to_none=True)
    return statistics.median(times)


def timings(trainer: Any, inputs: dict, spaces: dict, strategies: dict[str, dict], steps: int) -> dict:
    """s/step of linear (first and last) and of every strategy x space on one batch (generation bypassed: the batch
    is given)."""
    trainer._prepare_inputs = lambda batch: batch  # training_step would generate a new batch
    k = len(trainer.objective_names)
    out = {}
    with configured(trainer, "parameters", None, get_weighting("linear", k)):
        out["linear"] = time_config(trainer, inputs, steps)
    for name, kwargs in strategies.items():
        for n, (space, pattern) in spaces.items():
            with configured(trainer, space, pattern, get_weighting(name, k, **kwargs)):
                out[f"{name} | {n}"] = time_config(trainer, inputs, steps)
    with configured(trainer, "parameters", None, get_weighting("linear", k)):  # first and last: the drift
        out["linear (again)"] = time_config(trainer, inputs, steps)
    del trainer._prepare_inputs
    return out


def batched_vjp(trainer: Any, inputs: dict, repeats: int = 3) -> dict:
    """The K full-parameter gradients as K sequential backward passes (the trainer's path) vs one batched VJP
    (``torch.autograd.grad(..., is_grads_batched=True)``): median seconds of each and their max |difference|."""
    model, gs = trainer.model, trainer.mo_gradient
    clean = {k: v for k, v in inputs.items() if not k.startswith("mo_")}
    losses, _, logps = gs._losses(model, clean, inputs["mo_objective_advantages"])
    with configured(trainer, "parameters", None) as space:
        params = space.gram_params(model)
        seq, t_seq = None, []
        for _ in range(repeats):
            t0 = time.perf_counter()
            seq = space.local_gradients(model, losses, logps, direct=False)[0]
            t_seq.append(time.perf_counter() - t0)
    out = {"sequential_s": statistics.median(t_seq)}
    try:
        t_bat, eye = [], torch.eye(len(losses), dtype=losses[0].dtype)
        for _ in range(repeats):
            t0 = time.perf_counter()
            grads = torch.autograd.grad(torch.stack(losses), params, eye, retain_graph=True, allow_unused=True,
                                        is_grads_batched=True)  # fmt: skip
            pairs = zip(grads, params, strict=True)
            bat = torch.cat([(g if g is not None else torch.zeros(len(losses), *p.shape)).reshape(len(losses), -1)
                             for g, p in pairs], dim=1)  # fmt: skip
            t_bat.append(time.perf_counter() - t0)
        out.update(batched_s=statistics.median(t_bat), max_abs_diff=float((bat - seq).abs().max()))
    except Exception as exc:  # vmap over a backward that an operator does not support: report it
        out["batched_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    return out
