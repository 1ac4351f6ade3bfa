import pytest
import torch

from ella.eigen import Nystrom
from ella.kernels import EmpiricalNTK, Kernel

from tests.conftest import tiny_mlp


class GramOnly(Kernel):
    """The same kernel seen only through Gram blocks (no Jacobians): exercises the generic extension."""

    def __init__(self, kernel):
        self.kernel = kernel

    def gram(self, x1, x2=None):
        return self.kernel.gram(x1, x2)


@pytest.fixture(scope="module")
def scalar_ntk():
    model = tiny_mlp(in_features=2, hidden=12, out_features=1, seed=2)
    x = torch.randn(60, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return EmpiricalNTK(model, "exact", progress=False), x


def test_all_rows_give_the_exact_eigendecomposition(scalar_ntk):
    kernel, x = scalar_ntk
    K = kernel.gram(x)
    evals, evecs = torch.linalg.eigh(K)
    mu, v = evals.flip(0)[:5] / len(x), evecs.flip(1)[:, :5] * len(x) ** 0.5
    solver = Nystrom(5, num_points=len(x)).fit(kernel, x)
    assert torch.allclose(solver.eigenvalues, mu, rtol=1e-10)
    psi = solver(x)[:, 0, :]  # reproduces v_j on the sampled rows, up to sign
    assert torch.allclose(psi.abs(), v.abs(), atol=1e-8)


def test_jacobian_extension_equals_the_kernel_extension(scalar_ntk):
    kernel, x = scalar_ntk
    x_new = torch.randn(9, 2, dtype=torch.float64)
    fast = Nystrom(4, num_points=30, seed=1).fit(kernel, x)
    generic = Nystrom(4, num_points=30, seed=1).fit(GramOnly(kernel), x)
    assert torch.allclose(fast.eigenvalues, generic.eigenvalues, rtol=1e-10)
    assert torch.allclose(fast(x_new), generic(x_new), atol=1e-8)


def test_matrix_valued_kernel_samples_one_output_per_input():
    model = tiny_mlp(in_features=3, hidden=8, out_features=3, seed=0)
    x = torch.randn(40, 3, dtype=torch.float64)
    kernel = EmpiricalNTK(model, "exact", progress=False)
    solver = Nystrom(6, num_points=25, seed=0).fit(kernel, x)
    assert solver(x).shape == (40, 3, 6)
    assert torch.all(solver.eigenvalues[:-1] >= solver.eigenvalues[1:])
    generic = Nystrom(6, num_points=25, seed=0).fit(GramOnly(kernel), x)
    assert torch.allclose(solver(x), generic(x), atol=1e-8)


def test_bad_k(scalar_ntk):
    kernel, x = scalar_ntk
    with pytest.raises(ValueError, match="`k`"):
        Nystrom(11, num_points=10).fit(kernel, x)
    with pytest.raises(ValueError, match="rank"):
        Nystrom(50, num_points=60).fit(kernel, x)  # the 1-output NTK of a 2-12-1 net has rank <= P = 49
    with pytest.raises(RuntimeError, match="fit"):
        Nystrom(3)(x)
