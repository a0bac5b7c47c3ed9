"""Within-group covariance of rewards with a training signal — the quantity of the paper's local covariance law.

Used by CTWA (``mo_align.weightings.ctwa``) and by the interference diagnostics. Computed in float64 on CPU.
"""

from __future__ import annotations

import torch


def group_moments(
    r: torch.Tensor, s: torch.Tensor, g: int, pooled: bool = False
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Within-group covariance and correlation of each reward column with a signal.

    r (N, K) rewards, s (N,) signal, groups = consecutive blocks of g rows. Entries where s or r_k is not finite are
    left out of group k's statistics; a group with fewer than 2 usable members is skipped.

    * per-group mode: Cov_k = mean over valid groups of (1/n_g) Σ_i (r_ik − r̄_k)(s_i − s̄)  (population covariance),
      Corr_k = mean over valid groups of Cov_g / (std_g(r_k) std_g(s)), counting 0 where the denominator <= 1e-8;
    * pooled mode: centred products are summed over all valid groups and divided by their total size.

    Returns (cov (K,), corr (K,), number of groups valid for at least one objective); zeros when no group is valid.
    """
    n, k = r.shape
    r, s = r.double().view(n // g, g, k), s.double().view(n // g, g)
    valid = torch.isfinite(s).unsqueeze(-1) & torch.isfinite(r)  # (P, G, K)
    cnt = valid.sum(1).double()  # (P, K)
    ok = cnt >= 2
    s3, r3 = torch.where(valid, s.unsqueeze(-1), 0.0), torch.where(valid, r, 0.0)
    sc = torch.where(valid, s3 - s3.sum(1, keepdim=True) / cnt.clamp(min=1).unsqueeze(1), 0.0)
    rc = torch.where(valid, r3 - r3.sum(1, keepdim=True) / cnt.clamp(min=1).unsqueeze(1), 0.0)
    sum_sr, sum_ss, sum_rr = (sc * rc).sum(1), (sc * sc).sum(1), (rc * rc).sum(1)  # (P, K)
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
    corr = torch.where(ok & (den > 1e-8), cov_g / den.clamp(min=1e-300), 0.0).sum(0) / n_ok.clamp(min=1)
    return cov.float(), corr.float(), int(ok.any(1).sum())
