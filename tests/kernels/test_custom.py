import pytest
import torch

from ella.eigen import ExactEigen, NeuralEF, Nystrom, SpIN
from ella.kernels import RBF, FeatureKernel, Kernel, UserKernel


@pytest.fixture
def x():
    return torch.randn(30, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def test_gram_function_kernel(x):
    rbf = RBF(0.8)
    kern = UserKernel(gram_fn=rbf.gram)
    assert isinstance(kern, Kernel) and not isinstance(kern, FeatureKernel)
    assert torch.allclose(kern.gram(x), rbf.gram(x))
    assert torch.allclose(kern.gram(x[:3], x[3:9]), rbf.gram(x[:3], x[3:9]))
    assert torch.allclose(kern.diagonal_blocks(x[:4]), torch.ones(4, 1, 1, dtype=x.dtype))
    exact = ExactEigen(4).fit(kern, x)
    assert torch.allclose(exact.eigenvalues, ExactEigen(4).fit(rbf, x).eigenvalues)


def test_feature_function_kernel_is_a_feature_kernel(x):
    W = torch.randn(2, 2, 50, dtype=torch.float64)  # C = 2 outputs, S = 50 features
    kern = UserKernel(features_fn=lambda z: torch.einsum("bd,dcs->bcs", z, W), num_outputs=2)
    assert isinstance(kern, UserKernel) and isinstance(kern, FeatureKernel)
    phi = kern.features(x).flatten(0, 1)
    assert torch.allclose(kern.gram(x), phi @ phi.T / 50) and kern.num_features == 50
    assert ExactEigen(3).fit(kern, x)(x).shape == (30, 2, 3)


def non_symmetric(a, b):
    return RBF().gram(a, b) + 0.1 * torch.arange(len(a) * len(b), dtype=a.dtype).reshape(len(a), len(b)) / len(a)


def non_finite(a, b):
    K = RBF().gram(a, b)
    K[0, -1] = float("nan")
    return K


@pytest.mark.parametrize("fn, match", [(non_symmetric, "non-symmetric"), (non_finite, "non-finite")])
@pytest.mark.parametrize(
    "solver",
    [
        lambda: ExactEigen(3),
        lambda: Nystrom(3, num_points=20),
        lambda: NeuralEF(3, steps=10**6, progress=False),
        lambda: SpIN(3, steps=10**6, progress=False),
    ],
)
def test_bad_gram_fails_before_any_training(x, fn, match, solver):
    with pytest.raises(ValueError, match=match):
        solver().fit(UserKernel(gram_fn=fn), x)  # 10**6 steps: only an early check can make this fast


def test_bad_shapes_and_arguments(x):
    with pytest.raises(ValueError, match="shape"):
        UserKernel(gram_fn=lambda a, b: torch.ones(len(a), len(b) + 1)).gram(x)
    with pytest.raises(ValueError, match="shape"):
        UserKernel(features_fn=lambda a: torch.ones(len(a), 5), num_outputs=1).features(x)
    with pytest.raises(ValueError, match="non-finite"):
        UserKernel(features_fn=lambda a: torch.full((len(a), 1, 3), float("inf"))).features(x)
    with pytest.raises(ValueError, match="gram_fn"):
        UserKernel()
    with pytest.raises(TypeError, match="gram_fn"):
        UserKernel(gram_fn="rbf")
