"""MGDA's min-norm solver against an independent implementation: TorchJD's ``MGDAWeighting`` (Frank-Wolfe,
Sener & Koltun's Algorithm 2) on random Gram matrices, K = 2…8, full-rank and rank-deficient."""

import pytest
import torch
from torchjd.aggregation import MGDAWeighting as TorchJDMGDA

from mo_align.weightings.mgda import min_norm_weights


def _gram(k: int, rank: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    jac = torch.randn(k, rank, generator=g, dtype=torch.float64) * torch.rand(k, 1, generator=g, dtype=torch.float64)
    return jac @ jac.T


CASES = [(k, rank, seed) for k in range(2, 9) for rank in sorted({1, max(1, k - 2), k + 3}) for seed in range(3)]


@pytest.mark.parametrize(("k", "rank", "seed"), CASES)
def test_min_norm_weights_match_torchjd(k, rank, seed):
    gram = _gram(k, rank, seed)
    ours = min_norm_weights(gram).double()
    theirs = TorchJDMGDA(epsilon=1e-12, max_iters=5_000)(gram).double()
    assert abs(float(ours.sum()) - 1) < 1e-9 and float(ours.min()) >= 0
    scale = float(torch.diagonal(gram).max())
    value_ours, value_theirs = float(ours @ gram @ ours), float(theirs @ gram @ theirs)
    # the min norm is unique even when α is not (rank-deficient Gram): ours is never worse than Frank-Wolfe's
    assert value_ours <= value_theirs + 1e-9 * scale, (value_ours, value_theirs)
    assert (
        value_theirs - value_ours <= 5e-4 * scale
    )  # Frank-Wolfe's sublinear rate after 5,000 steps, (value_ours, value_theirs)
    if rank >= k:  # positive definite: the minimiser is unique, so the weights themselves agree
        assert torch.allclose(ours, theirs, atol=1e-2), (ours, theirs)
