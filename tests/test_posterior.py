import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ella import posterior as P
from ella.predictive import hessian_factor, hessian_parts


def random_problem(N=30, C=3, D=5, seed=0):
    """Features, outputs and ``Lambda`` in parts and dense, for classification and regression."""
    g = torch.Generator().manual_seed(seed)
    phi = torch.randn(N, C, D, generator=g, dtype=torch.float64)
    out = 3 * torch.randn(N, C, generator=g, dtype=torch.float64)
    return phi, out


@pytest.mark.parametrize("likelihood, noise", [("classification", 1.0), ("regression", torch.tensor([0.5, 2.0, 1.0]))])
def test_curvature_is_the_sum_of_phi_lambda_phi(likelihood, noise):
    phi, out = random_problem()
    lam = hessian_factor(out, likelihood, noise)  # dense (N, C, C)
    dense = sum(phi[i].T @ lam[i] @ phi[i] for i in range(len(phi)))
    assert torch.allclose(P.curvature(phi, *hessian_parts(out, likelihood, noise)), dense, rtol=1e-12, atol=1e-12)
    # float32 features: the products in float64 all the same
    single = P.curvature(phi.float(), *hessian_parts(out, likelihood, noise))
    assert single.dtype == torch.float64
    assert torch.allclose(
        single,
        sum(phi[i].float().double().T @ lam[i] @ phi[i].float().double() for i in range(len(phi))),
        rtol=1e-12,
        atol=1e-12,
    )


def test_factor_basis_gives_the_inverse_posterior_precision_at_any_prior_and_noise():
    phi, out = random_problem()
    curv = P.curvature(phi, *hessian_parts(out, "classification"))
    evals, evecs = P.eigen_curvature(curv)
    for delta, s in ((0.7, 1.0), (3.0, 0.2), (1e-3, 5.0)):
        G = curv / s**2 + delta * torch.eye(5, dtype=torch.float64)
        W = P.factor_basis(evals, evecs, delta, s)
        assert torch.allclose(W @ W.T, torch.linalg.inv(G), rtol=1e-9, atol=1e-12)
        x_phi = torch.randn(4, 3, 5, dtype=torch.float64)
        F = x_phi @ W
        assert torch.allclose(F @ F.transpose(1, 2), x_phi @ torch.linalg.inv(G) @ x_phi.transpose(1, 2), atol=1e-9)
    assert (P.eigen_curvature(-torch.eye(3, dtype=torch.float64))[0] == 0).all()  # round-off below 0 is clamped


def test_residual_variance_is_the_left_out_trace_per_output():
    g = torch.Generator().manual_seed(1)
    J = torch.randn(6, 3, 8, generator=g, dtype=torch.float64)  # kappa(x, x) = J J^T
    V = torch.linalg.qr(torch.randn(8, 2, generator=g, dtype=torch.float64))[0]  # 2 orthonormal directions
    psi = J @ V  # Psi Psi^T = J V V^T J^T
    left_out = J @ (torch.eye(8, dtype=torch.float64) - V @ V.T) @ J.transpose(1, 2)
    r = P.residual_variance(P.kernel_trace(J * 8**0.5), psi)  # Phi = sqrt(S) J with S = 8 gives tr kappa exactly
    assert torch.allclose(r, left_out.diagonal(dim1=1, dim2=2).sum(-1) / 3, atol=1e-12)
    assert torch.equal(P.residual_variance(psi.pow(2).sum((1, 2)), 2 * psi), torch.zeros(6, dtype=torch.float64))  # 0
    # one number for every input (the kernel's mean diagonal): the same formula
    assert torch.allclose(P.residual_variance(5.0, psi), (5.0 - psi.pow(2).sum((1, 2))).clamp_min(0) / 3)


def test_laplace_evidence_is_laplace_torchs_marginal_likelihood():
    """laplace-torch's full-GGN regression evidence at several (delta, sigma), from the GGN's eigenvalues."""
    pytest.importorskip("laplace")
    from laplace import Laplace
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(3)
    x = torch.randn(30, 2, generator=g, dtype=torch.float64)
    y = torch.randn(30, 2, generator=g, dtype=torch.float64)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    la = Laplace(model, "regression", subset_of_weights="all", hessian_structure="full")
    la.fit(DataLoader(TensorDataset(x, y), batch_size=10))
    evals = torch.linalg.eigvalsh(la.H).clamp_min(0)
    for delta, sigma in ((0.5, 1.0), (4.0, 0.3), (1e-3, 2.0)):
        ours = P.laplace_evidence(evals, 2 * float(la.loss), 60, float(la.mean @ la.mean), delta, sigma)
        theirs = la.log_marginal_likelihood(
            torch.tensor([delta], dtype=torch.float64), torch.tensor([sigma], dtype=torch.float64)
        )
        assert math.isclose(ours, float(theirs), rel_tol=1e-10)


@settings(max_examples=60, deadline=None)
@given(
    N=st.integers(1, 8),
    C=st.integers(1, 4),
    D=st.integers(1, 6),
    scale=st.sampled_from([0.0, 1e-6, 1.0, 1e6]),
    delta=st.sampled_from([1e-8, 1e-2, 1.0, 1e8]),
    s=st.sampled_from([1e-3, 1.0, 1e3]),
)
def test_the_predictive_variance_is_finite_and_non_negative(N, C, D, scale, delta, s):
    phi, out = random_problem(N, C, D, seed=N * 7 + D)
    evals, evecs = P.eigen_curvature(P.curvature(phi * scale, *hessian_parts(out, "classification")))
    assert (evals >= 0).all()
    W = P.factor_basis(evals, evecs, delta, s)
    var = (phi @ W).pow(2).sum(-1)  # diag(phi G^-1 phi^T)
    assert torch.isfinite(W).all() and torch.isfinite(var).all() and (var >= 0).all()
    prior = phi.pow(2).sum(-1) / delta  # the data can only shrink the prior variance
    assert (var <= prior * (1 + 1e-9) + 1e-300).all()


def test_trace_model_regresses_the_trace_on_the_features_and_their_squares():
    g = torch.Generator().manual_seed(4)
    psi = torch.randn(200, 3, 2, generator=g, dtype=torch.float64)
    design = P.trace_design(psi)
    assert design.shape == (200, 2 * 3 * 2 + 1) and torch.equal(design[:, 6:12], psi.flatten(1) ** 2)
    w = torch.randn(13, generator=g, dtype=torch.float64)
    trace = design @ w + 50.0  # a trace the design spans exactly: recovered with (almost) no penalty
    assert torch.allclose(P.fit_trace_model(psi, trace, ridge=1e-12) @ design.T, trace, rtol=1e-8)
    flat = P.fit_trace_model(psi, trace, ridge=1e6)  # a heavy penalty shrinks towards 0 (relative to the mean)
    assert flat.abs().max() < 1e-3 * trace.mean()


def test_the_trace_model_of_many_classes_is_the_same_ridge_regression_in_the_dual():
    """More regressors than points (2 C k + 1 = 401 > 30): the dual gives the primal's weights."""
    g = torch.Generator().manual_seed(6)
    psi = torch.randn(30, 40, 5, generator=g, dtype=torch.float64)
    trace = 40 + psi.pow(2).sum((1, 2)) + torch.randn(30, generator=g, dtype=torch.float64)
    for ridge in (1e-3, 0.1, 10.0):
        A = P.trace_design(psi)
        primal = torch.linalg.solve(A.T @ A + ridge * 30 * torch.eye(401, dtype=torch.float64), A.T @ trace)
        assert torch.allclose(P.fit_trace_model(psi, trace, ridge), primal, rtol=1e-8, atol=1e-10)


def test_modelled_residual_is_the_residual_of_the_trace_model_without_the_design():
    g = torch.Generator().manual_seed(5)
    psi = torch.randn(40, 3, 4, generator=g, dtype=torch.float64)
    w = torch.randn(2 * 12 + 1, generator=g, dtype=torch.float64)
    w[-1] = 30.0  # traces mostly above ||Psi||^2, some below: the clamp at zero is exercised
    expected = P.residual_variance(P.trace_design(psi) @ w, psi)
    assert (expected == 0).any() and (expected > 0).any()
    assert torch.allclose(P.modelled_residual(psi, w), expected, rtol=1e-12, atol=1e-12)
