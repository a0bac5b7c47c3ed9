"""Interference monitor: cheap per-batch diagnostics of cross-objective interference for every weighting.

The paper's local covariance law (arXiv 2602.06869, §2) says that, to first order, objective k improves under a
policy-gradient step when its reward covaries positively with the optimised advantage inside prompt groups,
Cov_g(r_k, A) > 0. For each training generation batch the monitor logs, from tensors the trainer already holds
(O(N K) work plus an O(G² K) pass per group; no extra forward):

* ``mo/cov/<k>``, ``mo/corr/<k>``: within-group covariance / correlation of r_k with the advantage A actually used
  (population statistics averaged over groups, as CTWA's statistic); ``mo/cov_ema/<k>`` its EMA;
  ``mo/cov_neg_frac/<k>``: fraction of groups where that covariance is negative;
* ``mo/zero_var_frac/<k>``: fraction of groups in which r_k has no variance (no learning signal for k);
* ``mo/reward_corr/<a>__<b>``: Pearson correlation of the rewards over the batch (objectives that trade off);
* ``mo/pareto_dominated_frac``: fraction of groups whose highest-advantage completion is Pareto-dominated by another
  completion of the same group (the reference's unused "reward hacking" probe);
* ``mo/adv_collapse_rate``: among within-group pairs with different reward vectors, the fraction given equal
  advantages (the signal cannot tell them apart — GDPO's motivation).

**Interference events**, each fired once per objective, logged as ``mo/events/<kind>/<k>``, warned once and listed
in the run summary: ``negative_covariance`` (EMA below 0 for ``patience`` consecutive batches: the covariance law's
prediction that the objective degrades) and ``eval_drop`` (interference by :func:`mo_align.stats.interfering`: the
objective's paired CI of Δ vs the first evaluation lies below 0 while the fixed scalar's lies above 0).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import torch

from mo_align.covariance import group_covariances, group_moments
from mo_align.stats import CI, interfering, t_ppf


logger = logging.getLogger("mo_align")


def per_group_covariance(rewards: torch.Tensor, signal: torch.Tensor, group_size: int) -> torch.Tensor:
    """(P, K) population covariance of each objective with the signal in each group; NaN where < 2 usable rows."""
    return group_covariances(rewards, signal, group_size)


def zero_variance_fraction(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(K,) fraction of groups (with >= 2 finite rewards) in which objective k's reward is constant."""
    n, k = rewards.shape
    r = rewards.double().view(n // group_size, group_size, k)
    finite = torch.isfinite(r)
    hi = torch.where(finite, r, -math.inf).amax(1)
    lo = torch.where(finite, r, math.inf).amin(1)
    usable = finite.sum(1) >= 2
    flat = usable & (hi - lo <= 1e-12)
    return (flat.sum(0).double() / usable.sum(0).double().clamp(min=1)).float()


def reward_correlation(rewards: torch.Tensor) -> torch.Tensor:
    """(K, K) Pearson correlation over rows where both objectives are finite (0 where undefined)."""
    k = rewards.shape[1]
    out = torch.eye(k, dtype=torch.float64)
    r = rewards.double()
    for a in range(k):
        for b in range(a + 1, k):
            m = torch.isfinite(r[:, a]) & torch.isfinite(r[:, b])
            x, y = r[m, a] - r[m, a].mean(), r[m, b] - r[m, b].mean()
            den = torch.sqrt((x * x).sum() * (y * y).sum())
            out[a, b] = out[b, a] = float((x * y).sum() / den) if m.sum() >= 2 and den > 1e-12 else 0.0
    return out


def within_group_reward_cov(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(K, K) pooled within-group covariance of the rewards: over the rows whose rewards are all finite, each group
    centred on its own mean, Σ_groups Σ_i r̃_i r̃_iᵀ / Σ_groups n_g (groups with fewer than 2 such rows left out)."""
    n, k = rewards.shape
    r = rewards.double()
    pad = -n % group_size
    if pad:
        r = torch.cat([r, torch.full((pad, k), float("nan"), dtype=torch.float64)])
    r = r.view(-1, group_size, k)
    ok = torch.isfinite(r).all(-1)  # (P, G)
    cnt = ok.sum(1)
    r0 = torch.where(ok.unsqueeze(-1), r, 0.0)
    centred = torch.where(ok.unsqueeze(-1), r0 - (r0.sum(1) / cnt.clamp(min=1).unsqueeze(-1)).unsqueeze(1), 0.0)
    use = cnt >= 2
    return torch.einsum("pgi,pgj->ij", centred[use], centred[use]) / cnt[use].sum().clamp(min=1)


def pareto_dominated_fraction(rewards: torch.Tensor, advantages: torch.Tensor, group_size: int) -> float:
    """Fraction of groups whose highest-advantage completion is dominated (>= everywhere, > somewhere) in-group."""
    n, k = rewards.shape
    r = rewards.view(n // group_size, group_size, k)
    a = advantages.view(n // group_size, group_size)
    dominated = total = 0
    for g in range(r.shape[0]):
        rows = torch.isfinite(r[g]).all(1)
        if rows.sum() < 2:
            continue
        total += 1
        best = int(torch.argmax(torch.where(rows, a[g], -math.inf)))
        others = r[g][rows]
        ge = (others >= r[g, best]).all(1)
        gt = (others > r[g, best]).any(1)
        dominated += int((ge & gt).any())
    return dominated / total if total else 0.0


def advantage_collapse_rate(rewards: torch.Tensor, advantages: torch.Tensor, group_size: int) -> float:
    """Among within-group pairs with different (finite) reward vectors, the fraction with equal advantages."""
    n, k = rewards.shape
    r = rewards.view(n // group_size, group_size, k)
    a = advantages.view(n // group_size, group_size)
    differ = torch.isfinite(r).all(-1)
    pair_ok = differ.unsqueeze(2) & differ.unsqueeze(1)
    distinct = (r.unsqueeze(2) != r.unsqueeze(1)).any(-1) & pair_ok
    equal_adv = (a.unsqueeze(2) - a.unsqueeze(1)).abs() <= 1e-6
    upper = torch.triu(torch.ones(group_size, group_size, dtype=torch.bool), diagonal=1)
    distinct = distinct & upper
    count = int(distinct.sum())
    return float((distinct & equal_adv).sum()) / count if count else 0.0


class InterferenceMonitor:
    """Stateful monitor (EMA, streaks, fired events); ``state_dict`` makes it resumable.

    Args:
        objectives (`tuple[str, ...]`): objective names, in column order.
        ema_tau (`float`, *optional*, defaults to `0.1`): EMA rate of the covariance.
        patience (`int`, *optional*, defaults to `10`): batches of negative EMA before an event.
        tolerance (`float`, *optional*, defaults to `0.05`): kept for older callers; ``eval_drop`` events are decided
            by intervals (:meth:`observe_eval`), not by a drop size.
        roles (`Mapping[str, str]`, *optional*): objective -> role (``mo_align.objectives.roles``; default ``train``).
            An ``eval`` objective is not scored on training batches: no batch metric, law check or
            ``negative_covariance`` for it, ``eval_drop`` still applies; messages name a ``monitor`` or ``eval``
            objective with its role.
    """

    def __init__(
        self,
        objectives: tuple[str, ...],
        ema_tau: float = 0.1,
        patience: int = 10,
        tolerance: float = 0.05,
        roles: Mapping[str, str] | None = None,
    ):
        self.objectives, self.ema_tau, self.patience, self.tolerance = tuple(objectives), ema_tau, patience, tolerance
        # objective roles (mo_align.objectives.roles): eval-role objectives are not scored on training batches, so
        # only evaluations watch them
        self.roles = {n: (roles or {}).get(n, "train") for n in self.objectives}
        self.batch_observed = [self.roles[n] != "eval" for n in self.objectives]
        self.ema: torch.Tensor | None = None
        self.streak = [0] * len(objectives)
        self.fired: set[tuple[str, str]] = set()
        self.events: list[dict[str, Any]] = []
        # the covariance law's prediction for the current eval interval: Σ, Σ of squares and count of each batch's
        # Cov(r_k, A) (its t interval over the interval's batches), and Σ of the batches' within-group reward covariance
        self.interval_cov = torch.zeros(len(objectives), dtype=torch.float64)
        self.interval_cov_sq = torch.zeros(len(objectives), dtype=torch.float64)
        self.interval_reward_cov = torch.zeros(len(objectives), len(objectives), dtype=torch.float64)
        self.interval_batches = 0
        self.law: list[dict[str, Any]] = []  # one record per (eval interval, objective)

    def _fire(self, kind: str, k: int, step: int, message: str) -> dict[str, float]:
        key = (kind, self.objectives[k])
        if key in self.fired:
            return {}
        self.fired.add(key)
        self.events.append({"step": step, "kind": kind, "objective": self.objectives[k], "message": message})
        logger.warning("mo_align interference: %s", message)
        return {f"mo/events/{kind}/{self.objectives[k]}": 1.0}

    def observe_batch(self, rewards: torch.Tensor, advantages: torch.Tensor, group_size: int, step: int):
        """Metrics for one training generation batch (rewards (N, K) gathered, advantages (N,) used)."""
        cov, corr, _ = group_moments(rewards, advantages, group_size)
        per_group = per_group_covariance(rewards, advantages, group_size)
        valid = ~torch.isnan(per_group)
        neg = ((per_group < 0) & valid).sum(0).double() / valid.sum(0).double().clamp(min=1)
        cov64 = cov.double()
        self.interval_cov += cov64
        self.interval_cov_sq += cov64 * cov64
        self.interval_reward_cov += within_group_reward_cov(rewards, group_size)
        self.interval_batches += 1
        self.ema = cov64 if self.ema is None else (1 - self.ema_tau) * self.ema + self.ema_tau * cov64
        zero_var = zero_variance_fraction(rewards, group_size)
        out: dict[str, float] = {}
        for k, name in enumerate(self.objectives):
            if not self.batch_observed[k]:
                continue
            out[f"mo/cov/{name}"], out[f"mo/corr/{name}"] = float(cov[k]), float(corr[k])
            out[f"mo/cov_ema/{name}"], out[f"mo/cov_neg_frac/{name}"] = float(self.ema[k]), float(neg[k])
            out[f"mo/zero_var_frac/{name}"] = float(zero_var[k])
            self.streak[k] = self.streak[k] + 1 if self.ema[k] < 0 else 0
            if self.streak[k] >= self.patience:
                msg = (
                    f"{self._label(name)}: covariance with the optimised advantage has stayed negative for {self.streak[k]} "
                    f"batches (EMA {float(self.ema[k]):+.4f}) at step {step}; the covariance law predicts it "
                    "degrades"
                )
                out.update(self._fire("negative_covariance", k, step, msg))
        corr_mat = reward_correlation(rewards)
        watched = [k for k, seen in enumerate(self.batch_observed) if seen]
        for a in watched:
            for b in (b for b in watched if b > a):
                out[f"mo/reward_corr/{self.objectives[a]}__{self.objectives[b]}"] = float(corr_mat[a, b])
        out["mo/pareto_dominated_frac"] = pareto_dominated_fraction(rewards, advantages, group_size)
        out["mo/adv_collapse_rate"] = advantage_collapse_rate(rewards, advantages, group_size)
        return out

    def observe_eval(
        self,
        means: dict[str, float],
        start: dict[str, float],
        step: int,
        delta_ci: dict[str, tuple[float, float]],
        scalar_ci: tuple[float, float],
    ) -> dict[str, float]:
        """``eval_drop`` events from an evaluation, by the one interference rule (:func:`mo_align.stats.interfering`):
        an objective whose paired CI of Δ vs the start (``delta_ci``) lies below 0 while the fixed scalar's
        (``scalar_ci``) lies above 0."""
        out: dict[str, float] = {}
        deltas = {name: CI(math.nan, *ci) for name, ci in delta_ci.items()}
        for name in interfering(deltas, CI(math.nan, *scalar_ci)):
            low, high = delta_ci[name]
            msg = (
                f"{self._label(name)}: eval mean {means[name]:.3f} vs its start {start[name]:.3f} (95 % CI of Δ [{low:+.3f}, "
                f"{high:+.3f}]) at step {step} while the fixed scalar rose (CI of its Δ [{scalar_ci[0]:+.3f}, "
                f"{scalar_ci[1]:+.3f}])"
            )
            out.update(self._fire("eval_drop", self.objectives.index(name), step, msg))
        return out

    def check_law(
        self, step_from: int, step_to: int, realised: dict[str, tuple[float, float, float]], level: float = 0.95
    ) -> dict:
        """The covariance law as a prediction: for each objective, the mean within-group covariance of its reward with
        the optimised advantage over the interval's training batches, with its t interval over those batches
        (``level``): ``up`` / ``down`` when the interval excludes 0, ``undetermined`` when it straddles 0 (or the
        interval had one batch); against the realised change of its eval mean (Δ, CI low, CI high; significant up /
        down, or not significant). ``held`` is ``None`` (no verdict) unless both are determined. Logs
        ``mo/law/<objective>/agreement`` (1 held, 0 did not; absent without a verdict) and
        ``mo/law/<objective>/predicted_cov``; keeps one record per objective in :attr:`law` (with the interval's
        mean within-group reward covariance matrix, ``reward_cov``); resets the interval."""
        out: dict[str, float] = {}
        n = self.interval_batches
        if not n:
            return out
        mean = self.interval_cov / n
        if n >= 2:
            var = ((self.interval_cov_sq - n * mean * mean) / (n - 1)).clamp(min=0.0)
            half = t_ppf((1.0 + level) / 2.0, n - 1) * torch.sqrt(var / n)
        else:
            half = torch.full_like(mean, float("nan"))
        low, high = (mean - half).tolist(), (mean + half).tolist()
        reward_cov = (self.interval_reward_cov / n).tolist()
        for k, name in enumerate(self.objectives):
            if not self.batch_observed[k]:  # eval-role: no training batch predicts its change
                continue
            delta, r_low, r_high = realised[name]
            outcome = "up" if r_low > 0 else ("down" if r_high < 0 else "not significant")
            predicted = "up" if low[k] > 0 else ("down" if high[k] < 0 else "undetermined")
            decided = outcome != "not significant" and predicted != "undetermined"
            held = predicted == outcome if decided else None
            self.law.append(
                {
                    "from": step_from,
                    "to": step_to,
                    "objective": name,
                    "predicted_cov": float(mean[k]),
                    "cov_ci": [low[k], high[k]],
                    "batches": n,
                    "predicted": predicted,
                    "delta": delta,
                    "ci": [r_low, r_high],
                    "realised": outcome,
                    "held": held,
                    "reward_cov": reward_cov,
                }
            )
            out[f"mo/law/{name}/predicted_cov"] = float(mean[k])
            if held is not None:
                out[f"mo/law/{name}/agreement"] = float(held)
        self.interval_cov.zero_()
        self.interval_cov_sq.zero_()
        self.interval_reward_cov.zero_()
        self.interval_batches = 0
        return out

    def _label(self, name: str) -> str:
        """The objective as messages name it: with its role unless that is ``train``."""
        role = self.roles.get(name, "train")
        return name if role == "train" else f"{name} ({role})"

    def state_dict(self) -> dict[str, Any]:
        return {
            "ema": None if self.ema is None else self.ema.clone(),
            "streak": list(self.streak),
            "fired": sorted(self.fired),
            "events": list(self.events),
            "interval_cov": self.interval_cov.clone(),
            "interval_cov_sq": self.interval_cov_sq.clone(),
            "interval_reward_cov": self.interval_reward_cov.clone(),
            "interval_batches": self.interval_batches,
            "law": list(self.law),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema = None if state["ema"] is None else state["ema"].clone()
        self.streak = list(state["streak"])
        self.fired = {tuple(x) for x in state["fired"]}
        self.events = list(state["events"])
        if "interval_cov" in state:  # checkpoints written before the law check have no interval
            self.interval_cov = state["interval_cov"].clone()
            self.interval_batches, self.law = int(state["interval_batches"]), list(state["law"])
        if "interval_cov_sq" in state:
            self.interval_cov_sq = state["interval_cov_sq"].clone()
            self.interval_reward_cov = state["interval_reward_cov"].clone()
        elif self.interval_batches:  # an older checkpoint kept no spread: this interval's prediction is undetermined
            self.interval_cov_sq.fill_(float("nan"))
            self.interval_reward_cov.fill_(float("nan"))
