"""Advantage estimators: pure functions on tensors.

Notation (see `mo_align/__init__.py`): N completions in a generation batch, G = ``group_size`` completions per
prompt (consecutive rows form a group, as TRL's ``RepeatSampler`` lays them out), K objectives, ``r`` (N, K) raw
rewards with NaN meaning "not applicable".

* :func:`group_normalize` — GRPO: A_i = (s_i − mean_g(s)) / (std + 1e-4), NaN-aware; bit-identical to TRL 1.16's
  ``sum_then_normalize`` on (N,) inputs, and applied column by column on (N, K).
* :func:`normalize_then_sum` — GDPO (TRL's ``normalize_then_sum``): per-objective group z-scores, weighted sum,
  then a batch z-score.
* :func:`batch_whiten` — REINFORCE++ as the paper's verl runs use it: one outcome score per
  completion broadcast over its L_i tokens, whitened with the *token-weighted* batch mean and the unbiased
  (Bessel-corrected) token variance, A_i = (s_i − μ) / sqrt(σ² + 1e-8).

Rows whose score is NaN ("unscorable") are excluded from every baseline and get advantage 0, as in TRL.

Deviations from the reference's verl estimators:
    1. GRPO divides by std + 1e-4 (TRL's value; verl: + 1e-6), and a group of size 1 gets advantage 0 (verl: mean 0,
       std 1, i.e. s / (1 + 1e-6)).
    2. REINFORCE++ computes in float64, leaves NaN rows out of the statistics, and returns zeros when at most one
       token is valid (verl's ``masked_whiten`` raises there).
"""

from __future__ import annotations

from typing import Literal

import torch


ADVANTAGE_ESTIMATORS = ("grpo", "reinforce_pp", "gdpo")
Scale = Literal["group", "batch", "none"]


def nanstd(x: torch.Tensor, dim: int | None = None, keepdim: bool = False) -> torch.Tensor:
    """Bessel-corrected standard deviation ignoring NaNs; NaN where fewer than two finite values exist.

    Evaluated with the same operation order as TRL 1.16 so that results agree bit for bit.
    """
    if dim is None:
        mean = torch.nanmean(x, dim=None, keepdim=True)
        var = torch.nanmean((x - mean) ** 2, dim=None, keepdim=True)
        count = torch.sum(~torch.isnan(x), dim=None, keepdim=True)
    else:
        mean = torch.nanmean(x, dim=dim, keepdim=True)
        var = torch.nanmean((x - mean) ** 2, dim=dim, keepdim=True)
        count = torch.sum(~torch.isnan(x), dim=dim, keepdim=True)
    correction = torch.where(count > 1, count / (count - 1), torch.full_like(var, float("nan")))
    std = torch.sqrt(var * correction)
    if dim is None:
        return std.reshape(()) if not keepdim else std
    return std if keepdim else std.squeeze(dim)


def _check_groups(n: int, group_size: int) -> None:
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if n % group_size != 0:
        raise ValueError(f"number of rows ({n}) is not a multiple of group_size ({group_size})")


def group_normalize(rewards: torch.Tensor, group_size: int, scale: Scale | bool = "group") -> torch.Tensor:
    """GRPO advantages: subtract the group mean, divide by a standard deviation + 1e-4.

    Args:
        rewards (`torch.Tensor`): (N,) scalar scores or (N, K) per-objective rewards (each column separately).
        group_size (`int`): G, consecutive rows sharing a prompt.
        scale (`str`, *optional*, defaults to `"group"`): ``"group"`` divides by the group's std, ``"batch"`` by
            the std of the whole column, ``"none"`` does not divide. ``True``/``False`` alias group/none as in TRL.

    Returns:
        Advantages with the shape of ``rewards``; NaN rows get 0.
    """
    if scale is True:
        scale = "group"
    elif scale is False:
        scale = "none"
    if scale not in ("group", "batch", "none"):
        raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}")
    if rewards.dim() == 2:
        cols = [group_normalize(rewards[:, k], group_size, scale) for k in range(rewards.shape[1])]
        return torch.stack(cols, dim=1) if cols else rewards.clone()
    if rewards.dim() != 1:
        raise ValueError(f"rewards must have shape (N,) or (N, K), got {tuple(rewards.shape)}")
    _check_groups(rewards.shape[0], group_size)
    grouped = rewards.view(-1, group_size)
    mean = torch.nanmean(grouped, dim=1).repeat_interleave(group_size, dim=0)
    if scale == "batch":
        std = nanstd(rewards).expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
    elif group_size > 1:
        std = nanstd(grouped, dim=1).repeat_interleave(group_size, dim=0)
    else:
        std = torch.zeros_like(rewards)
    adv = rewards - mean
    if scale != "none":
        adv = adv / (std + 1e-4)
    return torch.nan_to_num(adv, nan=0.0)


def normalize_then_sum(rewards: torch.Tensor, weights: torch.Tensor, group_size: int) -> torch.Tensor:
    """GDPO advantages (arXiv 2601.05242, TRL's ``normalize_then_sum``), bit-identical to TRL 1.16.

    z_ik = (r_ik − mean_g(r_k)) / (std_g(r_k) + 1e-4);  s_i = Σ_k w_k z_ik;  A_i = (s_i − mean(s)) / (std(s) + 1e-4).
    Rows where every reward is NaN are unscorable (advantage 0).
    """
    n, k = rewards.shape
    _check_groups(n, group_size)
    unscorable = torch.isnan(rewards).all(dim=1)
    grouped = rewards.view(-1, group_size, k)
    mean_k = torch.nanmean(grouped, dim=1, keepdim=True)
    std_k = nanstd(grouped, dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(mean_k)
    z = ((grouped - mean_k) / (std_k + 1e-4)).view(-1, k)
    s = (z * weights.to(z).unsqueeze(0)).nansum(dim=1)
    s[unscorable] = torch.nan
    std = nanstd(s).expand_as(s) if s.numel() > 1 else torch.zeros_like(s)
    return torch.nan_to_num((s - torch.nanmean(s)) / (std + 1e-4), nan=0.0)


def batch_whiten(scores: torch.Tensor, lengths: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """REINFORCE++ outcome advantages whitened over the batch, token-weighted (verl ``masked_whiten``).

    μ = Σ_i L_i s_i / Σ_i L_i;  σ² = (Σ_i L_i (s_i − μ)²) / Σ_i L_i · T/(T − 1) with T = Σ_i L_i;
    A_i = (s_i − μ) / sqrt(σ² + eps). Completions with NaN score or zero length are excluded and get 0.

    Args:
        scores (`torch.Tensor`): (N,) one outcome score per completion.
        lengths (`torch.Tensor`): (N,) completion token counts L_i (the response mask sum).

    Returns:
        (N,) per-completion advantage (every token of completion i carries A_i).
    """
    if scores.dim() == 2:
        return torch.stack([batch_whiten(scores[:, k], lengths, eps) for k in range(scores.shape[1])], dim=1)
    if scores.shape != lengths.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and lengths {tuple(lengths.shape)} must have the same shape")
    s = scores.double()
    w = lengths.to(torch.float64)
    valid = ~torch.isnan(s) & (w > 0)
    w = torch.where(valid, w, torch.zeros_like(w))
    s0 = torch.where(valid, s, torch.zeros_like(s))
    total = w.sum()
    if total <= 1:
        return torch.zeros_like(scores)
    mean = (w * s0).sum() / total
    var = (w * (s0 - mean) ** 2).sum() / total * (total / (total - 1))
    adv = (s0 - mean) * torch.rsqrt(var + eps)
    return torch.where(valid, adv, torch.zeros_like(adv)).to(scores.dtype)


def compute_advantages(
    scores: torch.Tensor,
    *,
    estimator: str,
    group_size: int,
    lengths: torch.Tensor | None = None,
    scale: Scale | bool = "group",
) -> torch.Tensor:
    """Dispatch a scalar score (N,) to the configured estimator (``grpo`` or ``reinforce_pp``)."""
    if estimator == "grpo":
        return group_normalize(scores, group_size, scale)
    if estimator == "reinforce_pp":
        if lengths is None:
            raise ValueError("advantage_estimator 'reinforce_pp' needs completion lengths")
        return batch_whiten(scores, lengths)
    raise ValueError(f"unknown advantage_estimator {estimator!r}; choose from {list(ADVANTAGE_ESTIMATORS)}")
