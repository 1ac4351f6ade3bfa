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


def test_residual_variance_is_the_left_out_trace_per_output():
    g = torch.Generator().manual_seed(1)
    J = torch.randn(6, 3, 8, generator=g, dtype=torch.float64)  # kappa(x, x) = J J^T
    V = torch.linalg.qr(torch.randn(8, 2, generator=g, dtype=torch.float64))[0]  # 2 orthonormal directions
    psi = J @ V  # Psi Psi^T = J V V^T J^T
    left_out = J @ (torch.eye(8, dtype=torch.float64) - V @ V.T) @ J.transpose(1, 2)
    r = P.residual_variance(J * 8**0.5, psi)  # Phi = sqrt(S) J with S = 8 gives tr kappa exactly
    assert torch.allclose(r, left_out.diagonal(dim1=1, dim2=2).sum(-1) / 3, atol=1e-12)
    assert torch.equal(P.residual_variance(psi, 2 * psi), torch.zeros(6, dtype=torch.float64))  # clamped at 0


def test_with_isotropic_adds_variance_to_every_output():
    F = torch.randn(4, 3, 5, dtype=torch.float64)
    v = torch.rand(4, dtype=torch.float64)
    Fv = P.with_isotropic(F, v)
    assert Fv.shape == (4, 3, 8) and P.with_isotropic(F, None) is F
    expected = F @ F.transpose(1, 2) + v[:, None, None] * torch.eye(3, dtype=torch.float64)
    assert torch.allclose(Fv @ Fv.transpose(1, 2), expected, atol=1e-12)


def test_tune_prior_scales_the_residual_by_the_prior():
    psi, lam = random_problem()
    curvs = P.cumulative_curvature(psi, lam, [30])
    mean, val_psi = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, 3, 5, dtype=torch.float64)
    y, r = torch.randint(0, 3, (20,)), torch.rand(20, dtype=torch.float64)
    grid = torch.logspace(-2, 2, 9, dtype=torch.float64)
    _, _, scores = P.tune_prior(curvs, grid, mean, val_psi, y, "classification", residual=r)
    expected = P.validation_nll(mean, val_psi, y, P.cholesky_precision(curvs[0], grid[2].item()), "classification",
                                extra_variance=r / grid[2])
    assert abs(scores[0, 2].item() - expected) < 1e-12
