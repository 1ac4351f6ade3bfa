import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ella.predictive import (
    LINKS,
    covariance_factor,
    gaussian_nll,
    hessian_factor,
    link_probs,
    margin_probs,
    mc_probs,
    predictive_nll,
    probit_probs,
    standard_normals,
    with_isotropic,
)


def moments_probs(mean, cov, link, n_samples=512, seed=0):
    return link_probs(mean, covariance_factor(cov), link, n_samples, seed)


def random_gaussian(B=6, C=4, r=3, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(B, C, generator=g, dtype=torch.float64) * 2
    factor = torch.randn(B, C, r, generator=g, dtype=torch.float64) * scale
    return mean, factor


def test_margin_link_is_the_binary_probit_for_two_classes():
    mean, factor = random_gaussian(C=2)
    d = mean[:, 1] - mean[:, 0]
    var_d = (factor[:, 1] - factor[:, 0]).pow(2).sum(-1)
    p1 = torch.sigmoid(d / torch.sqrt(1 + math.pi / 8 * var_d))
    assert torch.allclose(margin_probs(mean, factor)[:, 1], p1, atol=1e-12)


def test_margin_link_is_shift_invariant_and_keeps_the_predicted_class():
    mean, factor = random_gaussian(scale=3.0)
    shifted = mean + torch.randn(len(mean), 1, dtype=torch.float64) * 10
    common = factor + torch.randn(len(mean), 1, factor.shape[-1], dtype=torch.float64)  # f + a 1
    probs = margin_probs(mean, factor)
    assert torch.allclose(margin_probs(shifted, common), probs, atol=1e-12)
    assert torch.equal(probs.argmax(-1), mean.argmax(-1))
    assert torch.allclose(probs.sum(-1), torch.ones(len(mean), dtype=torch.float64))


def test_probit_formula_and_small_variance_limit():
    mean, factor = random_gaussian()
    var = factor.pow(2).sum(-1)
    assert torch.allclose(probit_probs(mean, var), torch.softmax(mean / torch.sqrt(1 + math.pi / 8 * var), -1))
    for link in ("margin", "probit", "mc"):
        probs = link_probs(mean, factor * 1e-6, link, n_samples=16, seed=0)
        assert torch.allclose(probs, mean.softmax(-1), atol=1e-5)


def test_mc_link_is_seeded_and_matches_quadrature_for_two_classes():
    mean, factor = random_gaussian(B=3, C=2, r=2)
    a = link_probs(mean, factor, "mc", 20000, seed=1)
    assert torch.equal(a, link_probs(mean, factor, "mc", 20000, seed=1))
    # E[sigmoid(d)], d ~ N(m, s^2), by Gauss-Hermite quadrature
    t, w = np.polynomial.hermite.hermgauss(80)
    d = (mean[:, 1] - mean[:, 0]).numpy()[:, None]
    s = (factor[:, 1] - factor[:, 0]).pow(2).sum(-1).sqrt().numpy()[:, None]
    exact = (w * (1 / (1 + np.exp(-(d + math.sqrt(2) * s * t))))).sum(1) / math.sqrt(math.pi)
    assert np.allclose(a[:, 1].numpy(), exact, atol=0.01)


def test_hessian_factor_is_the_cross_entropy_hessian():
    logits = torch.randn(4, 3, dtype=torch.float64)
    lam = hessian_factor(logits, "classification")
    for b in range(4):
        H = torch.autograd.functional.hessian(lambda f: -torch.log_softmax(f, -1)[1], logits[b])
        assert torch.allclose(lam[b], H, atol=1e-12)
    assert torch.allclose(hessian_factor(logits, "regression", 0.5), torch.eye(3, dtype=torch.float64) * 4)


def test_covariance_factor_reconstructs_psd_matrices_including_singular_ones():
    A = torch.randn(5, 4, 2, dtype=torch.float64)
    cov = A @ A.transpose(1, 2)  # rank 2
    F = covariance_factor(cov)
    assert torch.allclose(F @ F.transpose(1, 2), cov, atol=1e-8)


def test_unknown_link():
    mean, factor = random_gaussian()
    with pytest.raises(ValueError, match="link"):
        link_probs(mean, factor, "logit")


def test_mc_link_follows_a_correlated_covariance():
    """Against MultivariateNormal samples: with strong correlations a wrong factor (L^T, or the diagonal
    only) changes the answer well beyond Monte-Carlo noise."""
    mean = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]], dtype=torch.float64)
    A = torch.tensor([[2.0, 0.0, 0.0], [1.9, 0.6, 0.0], [-1.0, 2.0, 0.3]], dtype=torch.float64)
    cov = torch.stack([A @ A.T, A.T @ A])
    ours = moments_probs(mean, cov, "mc", 20_000)
    f = torch.distributions.MultivariateNormal(mean, cov).sample((100_000,))
    ref = torch.softmax(f, -1).mean(0)
    assert torch.allclose(ours, ref, atol=0.01)
    diag = moments_probs(mean, torch.diag_embed(cov.diagonal(dim1=1, dim2=2)), "mc", 20_000)
    assert not torch.allclose(diag, ref, atol=0.03)


def test_links_handle_singular_and_zero_covariances():
    mean = torch.tensor([[1.0, 0.0, -1.0]], dtype=torch.float64)
    v = torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64)
    for cov in (torch.outer(v, v)[None], torch.zeros(1, 3, 3, dtype=torch.float64)):
        for link in ("margin", "probit", "mc"):
            p = moments_probs(mean, cov, link, 500)
            assert torch.isfinite(p).all() and torch.allclose(p.sum(1), torch.ones(1, dtype=torch.float64))
    assert torch.allclose(
        moments_probs(mean, torch.zeros(1, 3, 3, dtype=torch.float64), "mc", 10), mean.softmax(-1), atol=1e-7
    )


def test_mc_link_gives_each_input_the_same_answer_whatever_its_batch_mates():
    mean, factor = random_gaussian(B=7, C=4, r=3)
    whole = link_probs(mean, factor, "mc", 256, seed=3)
    alone = torch.cat([link_probs(mean[i : i + 1], factor[i : i + 1], "mc", 256, seed=3) for i in range(7)])
    assert torch.allclose(whole, alone, rtol=0, atol=1e-14)  # the same draws; only the summation order differs
    z = standard_normals(256, 3, 3, mean)
    assert torch.equal(mc_probs(mean, factor, z), whole)


def test_hessian_factor_takes_one_noise_per_output():
    outputs = torch.zeros(2, 3, dtype=torch.float64)
    lam = hessian_factor(outputs, "regression", torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64))
    assert torch.allclose(lam[1], torch.diag(torch.tensor([1.0, 0.25, 4.0], dtype=torch.float64)))


def test_predictive_nll_is_the_gaussian_and_categorical_log_density():
    mean, factor = random_gaussian(B=5, C=2, r=3)
    y = torch.randn(5, 2, dtype=torch.float64)
    noise = torch.tensor([0.3, 0.7], dtype=torch.float64)
    var = factor.pow(2).sum(-1) + noise**2
    exact = -torch.distributions.Normal(mean, var.sqrt()).log_prob(y).mean(-1)
    assert torch.allclose(predictive_nll(mean, factor, y, "regression", noise=noise), exact, atol=1e-12)
    assert torch.allclose(gaussian_nll(mean, var, y), exact, atol=1e-12)
    labels = torch.tensor([0, 1, 1, 0, 1])
    probs = margin_probs(mean, factor)
    assert torch.allclose(
        predictive_nll(mean, factor, labels, "classification"),
        -probs.gather(1, labels[:, None])[:, 0].log(),
        atol=1e-12,
    )


@settings(max_examples=60, deadline=None)
@given(
    B=st.integers(1, 6),
    C=st.integers(1, 6),
    r=st.integers(0, 5),
    mean_scale=st.sampled_from([0.0, 1.0, 1e3, 1e8]),
    factor_scale=st.sampled_from([0.0, 1e-8, 1.0, 1e4]),
    link=st.sampled_from(LINKS),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_every_link_gives_probabilities_for_any_shape_and_scale(B, C, r, mean_scale, factor_scale, link, dtype):
    g = torch.Generator().manual_seed(B * 100 + C * 10 + r)
    mean = (torch.randn(B, C, generator=g, dtype=torch.float64) * mean_scale).to(dtype)
    factor = (torch.randn(B, C, r, generator=g, dtype=torch.float64) * factor_scale).to(dtype)
    probs = link_probs(mean, factor, link, n_samples=32, seed=0)
    assert probs.shape == (B, C) and torch.isfinite(probs).all() and (probs >= 0).all()
    assert torch.allclose(probs.sum(-1).double(), torch.ones(B, dtype=torch.float64), atol=1e-5)
    nll = predictive_nll(mean, factor, torch.zeros(B, dtype=torch.long), "classification", link, n_samples=32)
    assert torch.isfinite(nll).all() and (nll >= 0).all()


def test_with_isotropic_adds_variance_to_every_output():
    F = torch.randn(4, 3, 5, dtype=torch.float64)
    v = torch.rand(4, dtype=torch.float64)
    Fv = with_isotropic(F, v)
    assert Fv.shape == (4, 3, 8) and with_isotropic(F, None) is F
    expected = F @ F.transpose(1, 2) + v[:, None, None] * torch.eye(3, dtype=torch.float64)
    assert torch.allclose(Fv @ Fv.transpose(1, 2), expected, atol=1e-12)


@pytest.mark.parametrize("link", LINKS)
def test_an_isotropic_variance_apart_equals_the_widened_factor(link):
    g = torch.Generator().manual_seed(6)
    mean = 3 * torch.randn(50, 4, generator=g, dtype=torch.float64)
    F = torch.randn(50, 4, 3, generator=g, dtype=torch.float64)
    v = 2 * torch.rand(50, generator=g, dtype=torch.float64)
    assert not torch.allclose(link_probs(mean, F, link, 64, 0, v), link_probs(mean, F, link, 64, 0), atol=1e-3)
    assert torch.allclose(
        link_probs(mean, F, link, 64, 0, v), link_probs(mean, with_isotropic(F, v), link, 64, 0), rtol=1e-12, atol=1e-14
    )
    y = torch.randn(50, 4, generator=g, dtype=torch.float64)
    assert torch.allclose(
        predictive_nll(mean, F, y, "regression", noise=0.5, isotropic=v),
        predictive_nll(mean, with_isotropic(F, v), y, "regression", noise=0.5),
        rtol=1e-12,
    )
