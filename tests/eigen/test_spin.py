import pytest
import torch

from ella.eigen import RBFGaussianEigen, SpIN, compare
from ella.eigen.nets import mlp_body
from ella.eigen.spin import masked_factors
from ella.kernels import EmpiricalNTK
from ella_lab.eigen.problems import gaussian_quantiles

from tests.conftest import tiny_mlp


def test_masked_gradient_trains_each_function_on_its_own_rayleigh_quotient():
    """2 <A_Pi, sg(Psi)^T K Psi> - 2 <A_Sigma, sg(Psi)^T Psi> has the Psi-gradient sum_j dLambda_jj / dpsi_j,
    each Lambda_jj differentiated in psi_j alone (the earlier functions held fixed): the SpIN masked gradient."""
    g = torch.Generator().manual_seed(0)
    n, k = 30, 4
    X = torch.randn(n, 2, dtype=torch.float64, generator=g)
    K = torch.exp(-(torch.cdist(X, X) ** 2) / 2)
    psi = torch.randn(n, k, dtype=torch.float64, generator=g)

    def lam(p):
        sigma, pi = p.T @ p / n, p.T @ K @ p / n**2
        return masked_factors(sigma, pi)[0]

    target = torch.zeros(n, k, dtype=torch.float64)
    for j in range(k):
        p = psi.clone().requires_grad_(True)
        cols = [p[:, i] if i == j else p[:, i].detach() for i in range(k)]
        lam(torch.stack(cols, 1))[j, j].backward()
        target[:, j] = p.grad[:, j]

    _, a_pi, a_sigma = masked_factors(psi.T @ psi / n, psi.T @ K @ psi / n**2)
    assert torch.allclose(a_sigma, torch.triu(a_sigma))  # only the upper triangle of dSigma is needed
    p = psi.clone().requires_grad_(True)
    surrogate = 2 * (a_pi * (p.detach().T @ K @ p / n**2)).sum() - 2 * (a_sigma * (p.detach().T @ p / n)).sum()
    surrogate.backward()
    assert torch.allclose(p.grad, target, atol=1e-14)
    p = psi.clone().requires_grad_(True)
    lam(p).trace().backward()  # the unmasked gradient is different: it does not order the functions
    assert not torch.allclose(p.grad, target, atol=1e-4)


def test_spin_recovers_the_closed_form_rbf_eigenfunctions_in_order():
    ref = RBFGaussianEigen(4)
    x = gaussian_quantiles(300).float()
    torch.manual_seed(0)
    spin = SpIN(
        4, net=mlp_body(1, 4, width=32), steps=300, batch_size=300, lr=1e-2, momentum=0.0, seed=0, progress=False
    ).fit(ref.kernel_, x)
    result = compare(spin, ref, ref.sample(500, seed=1).float())
    assert torch.all(result.eigenvalue_error < 0.02), result.table()
    assert torch.all(result.cosine > 0.99), result.table()
    psi = spin(x).double().reshape(-1, 4)  # whitened: exactly orthonormal on the training rows
    assert torch.allclose(psi.T @ psi / len(psi), torch.eye(4, dtype=torch.float64), atol=1e-5)
    assert spin.steps_done_ == 300
    restored = SpIN(4, net=mlp_body(1, 4, width=32)).load_state_dict(spin.state_dict())
    assert torch.equal(restored(x), spin(x)) and torch.equal(restored.eigenvalues, spin.eigenvalues)


def test_minibatch_spin_with_moving_averages_and_a_time_budget():
    model = tiny_mlp(in_features=3, hidden=8, out_features=2, seed=0)
    x = torch.randn(64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    kernel = EmpiricalNTK(model, "exact", progress=False)
    spin = SpIN(3, steps=10**6, batch_size=16, lr=3e-3, momentum=0.9, max_seconds=0.5, seed=0, progress=False)
    spin.fit(kernel, x)
    assert 0 < spin.steps_done_ < 10**6 and spin(x).shape == (64, 2, 3)
    assert torch.all(spin.eigenvalues > 0) and torch.isfinite(spin.eigenvalues).all()
    again = SpIN(3, steps=20, batch_size=16, seed=3, progress=False).fit(kernel, x)
    assert torch.equal(again(x), SpIN(3, steps=20, batch_size=16, seed=3, progress=False).fit(kernel, x)(x))


def test_errors():
    model = tiny_mlp(in_features=3, hidden=8, out_features=2, seed=0)
    x = torch.randn(10, 3, dtype=torch.float64)
    kernel = EmpiricalNTK(model, "exact", progress=False)
    with pytest.raises(RuntimeError, match="fit"):
        SpIN(2).eigenvalues
    with pytest.raises(RuntimeError, match="fit"):
        SpIN(2)(x)
    with pytest.raises(ValueError, match="`k`"):
        SpIN(21, progress=False).fit(kernel, x)  # more than N C = 20 rows
    with pytest.raises(ValueError, match="momentum"):
        SpIN(2, momentum=1.0)
    with pytest.raises(ValueError, match="max_seconds"):
        SpIN(2, max_seconds=0)
    with pytest.raises(ValueError, match="Jacobian"):
        SpIN(10, net=mlp_body(3, 20, width=2048), progress=False).fit(kernel, x)
