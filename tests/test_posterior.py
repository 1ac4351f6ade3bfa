import torch

from ella import posterior as P


def random_problem(N=30, C=3, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    psi = torch.randn(N, C, k, generator=g, dtype=torch.float64)
    A = torch.randn(N, C, C, generator=g, dtype=torch.float64)
    return psi, A @ A.transpose(1, 2)


def test_curvature_is_the_sum_of_psi_lambda_psi():
    psi, lam = random_problem()
    dense = sum(psi[i].T @ lam[i] @ psi[i] for i in range(len(psi)))
    assert torch.allclose(P.curvature(psi, lam), dense, atol=1e-10)
    cum = P.cumulative_curvature(psi, lam, [10, 25, 30])
    assert torch.allclose(cum[0], P.curvature(psi[:10], lam[:10]))
    assert torch.allclose(cum[2], dense, atol=1e-10)


def test_predictive_factor_gives_psi_ginv_psi():
    psi, lam = random_problem()
    curv = P.curvature(psi, lam)
    chol = P.cholesky_precision(curv, 0.7)
    G = curv + 0.7 * torch.eye(5, dtype=torch.float64)
    x_psi = torch.randn(4, 3, 5, dtype=torch.float64)
    F = P.predictive_factor(x_psi, P.inverse_factor(chol))
    assert torch.allclose(F @ F.transpose(1, 2), x_psi @ torch.linalg.inv(G) @ x_psi.transpose(1, 2), atol=1e-10)


def test_tune_prior_returns_the_grid_minimum():
    psi, lam = random_problem()
    curvs = P.cumulative_curvature(psi, lam, [15, 30])
    mean = torch.randn(20, 3, dtype=torch.float64)
    val_psi = torch.randn(20, 3, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (20,))
    grid = torch.logspace(-2, 2, 9, dtype=torch.float64)
    t, delta, scores = P.tune_prior(curvs, grid, mean, val_psi, y, "classification")
    assert scores.shape == (2, 9)
    assert scores[t, list(grid).index(delta)] == scores.min()
    expected = P.validation_nll(mean, val_psi, y, P.cholesky_precision(curvs[1], 1.0), "classification")
    assert abs(scores[1, 4].item() - expected) < 1e-12
