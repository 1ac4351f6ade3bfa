import math

import pytest
import torch

from ella.kernels import RBF, Kernel, Polynomial


@pytest.fixture
def points():
    g = torch.Generator().manual_seed(0)
    return torch.randn(7, 3, dtype=torch.float64, generator=g), torch.randn(4, 3, dtype=torch.float64, generator=g)


def test_rbf_gram_is_the_squared_exponential(points):
    x1, x2 = points
    kern = RBF(lengthscale=0.7, variance=2.5)
    expected = torch.tensor(
        [[2.5 * math.exp(-((a - b) ** 2).sum().item() / (2 * 0.7**2)) for b in x2] for a in x1], dtype=torch.float64
    )
    assert torch.allclose(kern.gram(x1, x2), expected, rtol=1e-12)
    assert torch.allclose(kern(x1), kern.gram(x1, x1), rtol=1e-12)
    assert torch.linalg.eigvalsh(kern.gram(x1)).min() > -1e-12  # positive semi-definite
    assert torch.allclose(kern.diagonal_blocks(x1), kern.gram(x1).diagonal().reshape(-1, 1, 1))
    assert isinstance(kern, Kernel) and kern.infer_num_outputs(x1) == 1 and kern.num_outputs == 1


def test_polynomial_gram_and_diagonal(points):
    x1, x2 = points
    kern = Polynomial(degree=3, offset=0.5, scale=0.2)
    expected = (0.2 * x1 @ x2.T + 0.5) ** 3
    assert torch.allclose(kern.gram(x1, x2), expected, rtol=1e-12)
    assert torch.allclose(kern.diagonal_blocks(x1), kern.gram(x1).diagonal().reshape(-1, 1, 1), rtol=1e-12)
    assert torch.linalg.eigvalsh(kern.gram(x1)).min() > -1e-10


def test_inputs_of_any_shape_are_flattened(points):
    x1, _ = points
    kern = RBF()
    assert torch.allclose(kern.gram(x1.reshape(7, 3, 1)), kern.gram(x1))


@pytest.mark.parametrize(
    "make",
    [
        lambda: RBF(lengthscale=0),
        lambda: RBF(variance=-1),
        lambda: Polynomial(degree=0),
        lambda: Polynomial(offset=-1.0),
        lambda: Polynomial(scale=0),
    ],
)
def test_bad_hyperparameters(make):
    with pytest.raises(ValueError, match="`(lengthscale|variance|degree|offset|scale)`"):
        make()
