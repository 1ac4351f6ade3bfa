import math

import pytest
import torch
from torch import nn

from ella.kernels import FeatureKernel, NNGPKernel


def gaussian_relu_net(seed, d=3, width=8, c=2, sw=1.5, sb=0.3):
    """g(x) = W2 relu(W1 x + b1) + b2 with Gaussian weights: var sw^2 / fan_in, biases var sb^2."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(d, width), nn.ReLU(), nn.Linear(width, c)).double()
        for layer in (net[0], net[2]):
            nn.init.normal_(layer.weight, std=sw / math.sqrt(layer.in_features))
            nn.init.normal_(layer.bias, std=sb)
    return net


def arccos_nngp(x, sw=1.5, sb=0.3):
    """The exact NNGP of gaussian_relu_net (any width): sb^2 + sw^2 E[relu(u) relu(u')] with the arc-cosine form."""
    d = x.shape[1]
    k0 = sw**2 * x @ x.T / d + sb**2  # covariance of the pre-activations
    norm = k0.diagonal().sqrt()
    cos = (k0 / norm[:, None] / norm[None, :]).clamp(-1, 1)
    theta = torch.arccos(cos)
    relu = norm[:, None] * norm[None, :] * (torch.sin(theta) + (math.pi - theta) * cos) / (2 * math.pi)
    return sb**2 + sw**2 * relu


def test_monte_carlo_nngp_is_unbiased_for_the_arccos_kernel():
    x = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    S = 2000
    kern = NNGPKernel(gaussian_relu_net, num_samples=S, seed=0, progress=False)
    assert isinstance(kern, FeatureKernel)
    phi = kern.features(x)  # (6, 2, S)
    assert phi.shape == (6, 2, S) and kern.num_outputs == 2
    K = kern.gram(x).reshape(6, 2, 6, 2)
    # every entry kappa(x_a, x_b)_cc' is a mean of S i.i.d. products g_c(x_a) g_c'(x_b): z-score it
    products = phi[:, :, None, None, :] * phi[None, None, :, :, :]
    stderr = products.std(-1) / S**0.5
    exact = arccos_nngp(x)[:, None, :, None] * torch.eye(2, dtype=x.dtype)[None, :, None, :]  # k(x, x') I_C
    z = (K - exact).abs() / stderr
    assert z.max() < 5, z.max()
    assert z.mean() < 1.2, z.mean()  # |N(0, 1)| has mean 0.8


def test_features_are_reproducible_and_independent_of_batching():
    x = torch.randn(10, 3, dtype=torch.float64)
    a = NNGPKernel(gaussian_relu_net, num_samples=20, seed=4, batch_size=3, progress=False)
    b = NNGPKernel(gaussian_relu_net, num_samples=20, seed=4, progress=False)
    assert torch.allclose(a.features(x), b.features(x), atol=1e-14)
    assert torch.equal(b.features(x[:4]), b.features(x)[:4])
    assert not torch.allclose(NNGPKernel(gaussian_relu_net, 20, seed=5, progress=False).features(x), b.features(x))


def test_module_template_is_reinitialised_per_sample():
    template = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)).double()
    kern = NNGPKernel(template, num_samples=4, progress=False)
    phi = kern.features(torch.randn(5, 3, dtype=torch.float64))
    assert phi.shape == (5, 1, 4) and len({round(v, 8) for v in phi[0, 0].tolist()}) == 4
    assert not torch.equal(kern.network(0)[0].weight, template[0].weight)


def test_bad_architecture():
    with pytest.raises(TypeError, match="architecture"):
        NNGPKernel("mlp")
    with pytest.raises(ValueError, match="num_samples"):
        NNGPKernel(gaussian_relu_net, num_samples=0)
