"""MGDA min-norm solver: closed forms, KKT optimality, brute force, safe step."""

import itertools

import pytest
import torch

from mo_align.weightings.mgda import MGDAWeighting, min_norm_weights, project_to_simplex


def kkt_residual(gram: torch.Tensor, alpha: torch.Tensor) -> float:
    """KKT for min αᵀHα on the simplex: (Hα)_k = μ on the support, >= μ off it (μ = αᵀHα)."""
    h = gram.double()
    a = alpha.double()
    grad = h @ a
    mu = float(a @ grad)
    support = a > 1e-6
    res = float((grad[support] - mu).abs().max())
    off = grad[~support]
    if off.numel():
        res = max(res, float(torch.clamp(mu - off, min=0).max()))
    return res


def brute_force(gram: torch.Tensor, steps: int) -> float:
    k = gram.shape[0]
    best = float("inf")
    grid = [i / steps for i in range(steps + 1)]
    for point in itertools.product(grid, repeat=k - 1):
        if sum(point) <= 1 + 1e-12:
            a = torch.tensor([*point, 1 - sum(point)], dtype=torch.float64)
            best = min(best, float(a @ gram.double() @ a))
    return best


def test_two_objectives_closed_form():
    # g1 = (1, 0), g2 = (0, 2): α1 = <g2, g2 - g1> / |g1 - g2|² = 4 / 5
    g = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    alpha = min_norm_weights(g @ g.T)
    torch.testing.assert_close(alpha, torch.tensor([0.8, 0.2]))
    # aligned gradients g2 = 2 g1: the shorter one alone
    g = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    torch.testing.assert_close(min_norm_weights(g @ g.T), torch.tensor([1.0, 0.0]))


def test_orthogonal_unit_gradients_give_uniform():
    for k in (2, 3, 5):
        torch.testing.assert_close(min_norm_weights(torch.eye(k)), torch.full((k,), 1.0 / k), atol=1e-6, rtol=0)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("seed", range(6))
def test_kkt_and_brute_force(k, seed):
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(k, 7, generator=gen, dtype=torch.float64)
    if seed % 2:  # make a conflicting pair
        g[1] = -0.5 * g[0] + 0.1 * torch.randn(7, generator=gen, dtype=torch.float64)
    gram = g @ g.T
    alpha = min_norm_weights(gram)
    assert abs(float(alpha.sum()) - 1) < 1e-9 and (alpha >= 0).all()
    assert kkt_residual(gram, alpha) < 1e-6 * max(1.0, float(gram.abs().max()))
    value = float(alpha @ gram @ alpha)
    assert value <= brute_force(gram, 200 if k == 2 else 60) + 1e-9


def test_ill_conditioned_converges_where_the_reference_step_oscillates():
    # eigenvalues 1e4 and ~1: the safe step 1/(2 λ_max) still reaches the optimum
    u = torch.tensor([[1.0, 1.0, 0.0], [1.0, -1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64) / torch.tensor(
        [2**0.5, 2**0.5, 1.0], dtype=torch.float64
    ).unsqueeze(1)
    gram = u.T @ torch.diag(torch.tensor([1e4, 1.0, 3.0], dtype=torch.float64)) @ u
    alpha = min_norm_weights(gram)
    assert kkt_residual(gram, alpha) < 1e-5
    assert float(alpha @ gram @ alpha) <= brute_force(gram, 60) + 1e-9


def test_degenerate_inputs():
    assert torch.equal(min_norm_weights(torch.zeros(3, 3)), torch.full((3,), 1 / 3))
    nan = torch.full((3, 3), float("nan"))
    assert torch.equal(min_norm_weights(nan), torch.full((3,), 1 / 3))
    assert torch.equal(min_norm_weights(torch.ones(1, 1)), torch.ones(1))


def test_simplex_projection():
    torch.testing.assert_close(project_to_simplex(torch.tensor([0.5, 0.5])), torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(project_to_simplex(torch.tensor([2.0, 0.0])), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(project_to_simplex(torch.tensor([1.0, 1.0, -5.0])), torch.tensor([0.5, 0.5, 0.0]))


def test_weighting_normalize_gradients():
    g = torch.tensor([[1.0, 0.0], [0.0, 10.0]])
    w = MGDAWeighting(2)
    alpha, metrics = w.gradient_weights(g @ g.T, torch.zeros(2))
    assert alpha[0] > 0.9  # the short gradient dominates the min-norm point
    normalized = MGDAWeighting(2, normalize_gradients=True)
    applied, _ = normalized.gradient_weights(g @ g.T, torch.zeros(2))
    torch.testing.assert_close(normalized.weights(), torch.tensor([0.5, 0.5]))  # α on the unit vectors
    # the update is Σ α_k g_k / ‖g_k‖ (the reference's norm_grad_norm): coefficients α_k / ‖g_k‖ on the raw gradients
    torch.testing.assert_close(applied, torch.tensor([0.5, 0.05]))
    torch.testing.assert_close(applied @ g, torch.tensor([0.5, 0.5]))
    assert torch.equal(w.weights(), alpha)
    assert metrics["min_norm"] == pytest.approx(float(alpha @ (g @ g.T) @ alpha))
