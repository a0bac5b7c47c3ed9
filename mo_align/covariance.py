"""Within-group covariance of rewards with a training signal — the quantity of the paper's local covariance law.

Used by CTWA (``mo_align.weightings.ctwa``) and by the interference diagnostics. Computed in float64 on CPU.
"""

from __future__ import annotations

import torch


def _centred_sums(r: torch.Tensor, s: torch.Tensor, g: int):
    """Per group and objective: usable count n_g and the centred sums Σ r̃ s̃, Σ s̃², Σ r̃² (each (P, K), float64),
    where r̃ = r − r̄_g and s̃ = s − s̄_g are centred over the rows where both r_k and s are finite.

    Groups are consecutive blocks of g rows; when N is not a multiple of g the trailing N mod g rows form one last,
    smaller group (padded here with unusable NaN rows)."""
    if g < 1:
        raise ValueError(f"group_size must be >= 1, got {g}")
    n, k = r.shape
    if s.shape != (n,):
        raise ValueError(f"signal has shape {tuple(s.shape)}, expected ({n},) to match rewards {tuple(r.shape)}")
    pad = -n % g
    r, s = r.double(), s.double()
    if pad:
        r = torch.cat([r, torch.full((pad, k), float("nan"), dtype=torch.float64)])
        s = torch.cat([s, torch.full((pad,), float("nan"), dtype=torch.float64)])
    r, s = r.view(-1, g, k), s.view(-1, g)
    valid = torch.isfinite(s).unsqueeze(-1) & torch.isfinite(r)  # (P, G, K)
    cnt = valid.sum(1).double()  # (P, K)
    s3, r3 = torch.where(valid, s.unsqueeze(-1), 0.0), torch.where(valid, r, 0.0)
    sc = torch.where(valid, s3 - s3.sum(1, keepdim=True) / cnt.clamp(min=1).unsqueeze(1), 0.0)
    rc = torch.where(valid, r3 - r3.sum(1, keepdim=True) / cnt.clamp(min=1).unsqueeze(1), 0.0)
    return cnt, (sc * rc).sum(1), (sc * sc).sum(1), (rc * rc).sum(1)


def group_covariances(r: torch.Tensor, s: torch.Tensor, g: int) -> torch.Tensor:
    """(P, K) population covariance (1/n_g) Σ_i r̃_ik s̃_i of each objective with the signal in each group
    (float64); NaN where a group has fewer than 2 usable rows."""
    cnt, sum_sr, _, _ = _centred_sums(r, s, g)
    cov = sum_sr / cnt.clamp(min=1)
    return torch.where(cnt >= 2, cov, torch.full_like(cov, float("nan")))


def group_moments(
    r: torch.Tensor, s: torch.Tensor, g: int, pooled: bool = False
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Within-group covariance and correlation of each reward column with a signal.

    r (N, K) rewards, s (N,) signal, groups = consecutive blocks of g rows (a trailing partial block is a group of
    its own). Entries where s or r_k is not finite are left out of group k's statistics; a group with fewer than 2
    usable members is skipped.

    * per-group mode: Cov_k = mean over valid groups of (1/n_g) Σ_i (r_ik − r̄_k)(s_i − s̄)  (population covariance),
      Corr_k = mean of Cov_g / (std_g(r_k) std_g(s)) over the valid groups whose denominator exceeds 1e-8 (as the
      reference ``compute_ctwa_stats``: a zero-variance group is left out of the correlation's average, not counted
      as 0);
    * pooled mode: centred products are summed over all valid groups and divided by their total size.

    Returns (cov (K,), corr (K,), number of groups valid for at least one objective); zeros when no group is valid.
    """
    cnt, sum_sr, sum_ss, sum_rr = _centred_sums(r, s, g)
    ok = cnt >= 2
    if pooled:
        tot = torch.where(ok, cnt, 0.0).sum(0)
        cov = torch.where(ok, sum_sr, 0.0).sum(0) / tot.clamp(min=1)
        den = torch.sqrt(torch.where(ok, sum_rr, 0.0).sum(0) / tot.clamp(min=1)) * torch.sqrt(
            torch.where(ok, sum_ss, 0.0).sum(0) / tot.clamp(min=1)
        )
        corr = torch.where(den > 1e-8, cov / den.clamp(min=1e-300), 0.0)
        return cov.float(), corr.float(), int(ok.any(1).sum())
    cov_g = sum_sr / cnt.clamp(min=1)
    den = torch.sqrt(sum_rr / cnt.clamp(min=1)) * torch.sqrt(sum_ss / cnt.clamp(min=1))
    n_ok = ok.sum(0).double()
    cov = torch.where(ok, cov_g, 0.0).sum(0) / n_ok.clamp(min=1)
    corr_ok = ok & (den > 1e-8)
    corr = torch.where(corr_ok, cov_g / den.clamp(min=1e-300), 0.0).sum(0) / corr_ok.sum(0).double().clamp(min=1)
    return cov.float(), corr.float(), int(ok.any(1).sum())


def induced_weights(
    advantages: torch.Tensor, log_ratio: torch.Tensor, mask: torch.Tensor, eps_low: float, eps_high: float, agg: str
) -> tuple[torch.Tensor, float]:
    """The completion's induced update weight w̃_i = agg_t [Â_i ρ_it 1[unclipped_it]] (arXiv 2602.06869 §3).

    advantages (B,), log_ratio = log π_new − log π_old (B, T), mask (B, T). A token is unclipped when the PPO clip
    does not bind: ρ <= 1 + ε_high for Â >= 0, ρ >= 1 − ε_low for Â < 0. ``agg``: ``mean`` (over completion
    tokens), ``mean_unclipped`` (over unclipped tokens) or ``sum``. Returns (w̃ (B,), number of unclipped tokens).
    A completion without tokens (L_i = 0, e.g. under ``mask_truncated_completions``) gets w̃_i = NaN whatever
    ``agg``, so the covariance leaves it out: its sequence advantage Σ_t A_it / L_i is 0/0 in the paper's
    reference code, whose finite filter drops it.
    """
    rho = torch.exp(log_ratio.clamp(-20, 20))
    adv = advantages.view(-1, 1)
    unclipped = torch.where(adv >= 0, rho <= 1 + eps_high, rho >= 1 - eps_low) & mask.bool()
    total = (adv * rho * unclipped).sum(1)
    if agg == "sum":
        w = total
    else:
        w = total / (unclipped.sum(1) + 1e-8 if agg == "mean_unclipped" else mask.sum(1))
    empty = mask.sum(1) == 0
    return torch.where(empty, torch.full_like(w, float("nan")), w), float(unclipped.sum())


def on_policy_induced_weights(advantages: torch.Tensor, lengths: torch.Tensor, agg: str) -> torch.Tensor:
    """:func:`induced_weights` at ρ ≡ 1 (before any update), from the completion lengths L_i alone.

    At ρ = 1 no token is clipped (1 − ε_low <= 1 <= 1 + ε_high), so Σ_t Â_i ρ_it 1[unclipped] = Â_i L_i and
    w̃_i = Â_i (``mean``), Â_i L_i / (L_i + 1e-8) (``mean_unclipped``) or Â_i L_i (``sum``). A completion with
    L_i = 0 gets NaN under every ``agg`` (its sequence advantage is 0/0 in the reference) and is dropped downstream.
    """
    adv, n = advantages.double().reshape(-1), lengths.double().reshape(-1)
    if adv.shape != n.shape:
        raise ValueError(f"advantages {tuple(adv.shape)} and lengths {tuple(n.shape)} differ in shape")
    if agg == "sum":
        w = adv * n
    elif agg == "mean_unclipped":
        w = adv * n / (n + 1e-8)
    elif agg == "mean":
        w = adv
    else:
        raise ValueError(f"agg must be 'mean', 'mean_unclipped' or 'sum', got {agg!r}")
    return torch.where(n > 0, w, torch.full_like(w, float("nan")))


def robust_signal(signal: torch.Tensor, step: int, subsample: float = 1.0) -> torch.Tensor:
    """float64 copy of the signal with outliers (|w| > 100 × median |w|, the median of the finite |w|) and non-finite
    entries set to NaN, then, when ``subsample`` < 1, a random (seeded by ``step``) 1 − subsample fraction set to NaN
    as well."""
    w = signal.double().clone()
    finite = torch.isfinite(w)
    # the usual median (mean of the two middle values for an even count), as numpy's in the reference
    med = torch.quantile(w[finite].abs(), 0.5) if finite.any() else torch.tensor(0.0, dtype=torch.float64)
    w[~finite | ((med > 0) & (w.abs() > 100 * med))] = float("nan")
    if subsample < 1:
        gen = torch.Generator().manual_seed(1_000_003 * step + 17)
        w[torch.rand(w.shape[0], generator=gen, dtype=torch.float64) >= subsample] = float("nan")
    return w
