import pytest
import torch

from ella.eigen import ExactEigen, RBFGaussianEigen
from ella.kernels import RBF, EmpiricalNTK, Kernel
from ella_lab.eigen.problems import gaussian_quantiles

from tests.conftest import tiny_mlp


def density_quadrature(std, n=3001):
    """Nodes and weights of E_{x ~ N(0, std^2)}[f(x)] by the trapezoid rule on [-10 std, 10 std]
    (spectrally accurate for smooth integrands that decay like a Gaussian)."""
    x = torch.linspace(-10 * std, 10 * std, n, dtype=torch.float64)
    density = torch.exp(-(x**2) / (2 * std**2)) / (2 * torch.pi * std**2) ** 0.5
    return x, density * (x[1] - x[0])


@pytest.mark.parametrize("lengthscale, std, variance", [(1.0, 1.0, 1.0), (0.5, 2.0, 3.0)])
def test_closed_form_solves_the_eigen_equation_under_the_density(lengthscale, std, variance):
    ref = RBFGaussianEigen(8, lengthscale=lengthscale, std=std, variance=variance)
    x, w = density_quadrature(std)  # E_{x ~ N(0, std^2)}[f(x)] = sum_i w_i f(x_i)
    psi = ref(x)[:, 0]
    # orthonormal under the density
    assert torch.allclose(psi.T @ (psi * w[:, None]), torch.eye(8, dtype=torch.float64), atol=1e-10)
    # int kappa(x, y) psi_j(y) p(y) dy = mu_j psi_j(x)
    K = RBF(lengthscale, variance).gram(x[:, None])
    assert torch.allclose(K @ (psi * w[:, None]), psi * ref.eigenvalues, atol=1e-10)
    assert torch.all(ref.eigenvalues[:-1] > ref.eigenvalues[1:])
    assert ref.kernel_.lengthscale == lengthscale and ref.kernel_.variance == variance


def test_quantile_grid_reproduces_the_closed_form():
    ref = RBFGaussianEigen(5)
    exact = ExactEigen(5).fit(ref.kernel_, gaussian_quantiles(1000))
    assert torch.allclose(exact.eigenvalues, ref.eigenvalues, rtol=5e-3)
    x_test = ref.sample(500, seed=1)
    a, b = exact(x_test)[:, 0], ref(x_test)[:, 0]
    assert torch.all(((a * b).sum(0) / a.norm(dim=0) / b.norm(dim=0)).abs() > 0.9999)


@pytest.fixture(scope="module")
def ntk():
    model = tiny_mlp(in_features=3, hidden=10, out_features=3, seed=1)  # P = 73 < N C = 120: dual route
    x = torch.randn(40, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return EmpiricalNTK(model, "exact", progress=False), x


class GramOnly(Kernel):
    def __init__(self, kernel):
        self.kernel = kernel

    def gram(self, x1, x2=None):
        return self.kernel.gram(x1, x2)


def test_exact_eigen_matches_eigh_and_extends_consistently(ntk):
    kernel, x = ntk
    K = kernel.gram(x)
    evals, evecs = torch.linalg.eigh(K)
    n = K.shape[0]
    dual, primal = ExactEigen(6).fit(kernel, x), ExactEigen(6).fit(GramOnly(kernel), x)
    for exact in (dual, primal):
        assert torch.allclose(exact.eigenvalues, evals.flip(0)[:6] / n, rtol=1e-10)
        psi = exact(x).reshape(n, 6)  # the extension reproduces the eigenvectors on the training rows
        assert torch.allclose(psi.abs(), (evecs.flip(1)[:, :6] * n**0.5).abs(), atol=1e-8)
        assert torch.allclose(psi, exact.train_psi_.reshape(n, 6), atol=1e-8)
    x_new = torch.randn(5, 3, dtype=torch.float64)
    sign = torch.sign((dual(x) * primal(x)).sum(dim=(0, 1)))
    assert torch.allclose(dual(x_new) * sign, primal(x_new), atol=1e-8)


def test_errors(ntk):
    kernel, x = ntk
    with pytest.raises(RuntimeError, match="fit"):
        ExactEigen(3).eigenvalues
    with pytest.raises(ValueError, match="`k`"):
        ExactEigen(121).fit(kernel, x)  # more than N C rows
    with pytest.raises(ValueError, match="rank"):
        ExactEigen(100).fit(kernel, x)  # more than P = 73
    with pytest.raises(ValueError, match="1-D"):
        RBFGaussianEigen(3)(torch.zeros(4, 2))
