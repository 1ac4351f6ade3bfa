"""Exact LLA against a dense float64 reference built without ella's Jacobian code."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.func import functional_call
from torch.nn.utils import parameters_to_vector
from torch.utils.data import DataLoader, TensorDataset

from ella.methods import Predictive, Tuning
from ella.methods.exact_lla import ExactLLA
from ella.predictive import covariance_factor, link_probs
from ella.utils import trainable_parameters, unflatten_like

from tests.conftest import sine_regression, tiny_mlp


def dense_jacobian(model, x):
    """(B, C, P) by torch.autograd.functional.jacobian of the flat parameter vector."""
    params = trainable_parameters(model)
    flat = parameters_to_vector(params.values()).detach()
    return torch.autograd.functional.jacobian(lambda t: functional_call(model, unflatten_like(t, params), (x,)), flat)


def loader(x, y, batch_size=7):
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


@pytest.fixture(scope="module")
def problem():
    g = torch.Generator().manual_seed(0)
    model = tiny_mlp()  # float64, 3 -> 8 -> 3, P = 59
    x, xv, xt = (torch.randn(n, 3, generator=g, dtype=torch.float64) for n in (30, 25, 10))
    y, yv = torch.randint(0, 3, (30,), generator=g), torch.randint(0, 3, (25,), generator=g)
    return model, x, y, xv, yv, xt


def reference_covariance(model, x, xt, delta, likelihood="classification", sigma=1.0):
    """J_* (sum_i J_i^T Lambda_i J_i + delta I)^{-1} J_*^T, all dense float64."""
    J = dense_jacobian(model, x)
    out = model(x).detach()
    if likelihood == "classification":
        p = out.softmax(-1)
        lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    else:
        lam = torch.eye(out.shape[1], dtype=out.dtype).expand(len(x), -1, -1) / sigma**2
    ggn = torch.einsum("bcp,bcd,bdq->pq", J, lam, J)
    sigma_post = torch.linalg.inv(ggn + delta * torch.eye(len(ggn), dtype=ggn.dtype))
    Jt = dense_jacobian(model, xt)
    return ggn, torch.einsum("bcp,pq,bdq->bcd", Jt, sigma_post, Jt)


def moments_probs(mean, cov, link):
    return link_probs(mean, covariance_factor(cov), link)


def test_ggn_and_predictive_equal_dense_reference(problem):
    model, x, y, _, _, xt = problem
    delta = 0.7
    ggn_ref, cov_ref = reference_covariance(model, x, xt, delta)
    post = ExactLLA(model, progress=False, tuning=Tuning(prior_precision=delta)).fit(loader(x, y))
    eye = torch.eye(len(ggn_ref), dtype=torch.float64)
    assert torch.allclose(post.posterior_precision, ggn_ref + delta * eye, rtol=1e-10, atol=1e-12)
    mean, cov = post.predictive_moments(xt)
    assert torch.allclose(mean, model(xt), atol=1e-12)
    assert torch.allclose(cov, cov_ref, rtol=1e-8, atol=1e-12)
    W = torch.linalg.inv(ggn_ref + delta * torch.eye(len(ggn_ref), dtype=torch.float64))
    assert torch.allclose(post.posterior_covariance, W, rtol=1e-8, atol=1e-12)
    probs = post.predict(xt)  # the margin link on the exact covariance
    assert torch.allclose(probs, moments_probs(model(xt).detach(), cov_ref, "margin"), atol=1e-10)


def test_regression_variance_includes_noise(problem):
    model, x, _, _, _, xt = problem
    g = torch.Generator().manual_seed(1)
    y = torch.randn(len(x), 3, generator=g, dtype=torch.float64)
    post = ExactLLA(model, "regression", progress=False, tuning=Tuning(prior_precision=2.0, sigma_noise=0.3)).fit(
        loader(x, y)
    )
    _, cov_ref = reference_covariance(model, x, xt, 2.0, "regression", sigma=0.3)
    mean, var = post.predict(xt)
    assert torch.allclose(var, cov_ref.diagonal(dim1=1, dim2=2) + 0.09, rtol=1e-8)
    # sigma_noise=None and validation data: the noise scale s (sigma_c = s rho_c) on validation NLL
    yv = torch.randn(25, 3, generator=g, dtype=torch.float64)
    xv = torch.randn(25, 3, generator=g, dtype=torch.float64)
    est = ExactLLA(model, "regression", progress=False, tuning=Tuning(prior_precision=2.0)).fit(
        loader(x, y), loader(xv, yv)
    )
    rho = (model(xv).detach() - yv).pow(2).mean(0).sqrt()
    assert torch.allclose(est.noise_, est.noise_scale_ * rho, rtol=1e-12)
    scores = est.search_.scores[0, 0]  # (noise grid,), the validation NLL of each s
    assert scores.min() == scores[est.search_.noise_grid.tolist().index(est.noise_scale_)]


def test_prior_tuned_on_validation_nll_over_the_grid(problem):
    model, x, y, xv, yv, _ = problem
    grid = [1e-2, 1e-1, 1.0, 10.0, 100.0]
    post = ExactLLA(model, progress=False, tuning=Tuning(prior_grid=grid)).fit(loader(x, y), loader(xv, yv))
    nlls = []
    for delta in grid:  # the reference: dense covariance -> margin link -> mean NLL
        _, cov = reference_covariance(model, x, xv, delta)
        p = moments_probs(model(xv).detach(), cov, "margin")
        nlls.append(-p[torch.arange(len(yv)), yv].log().mean().item())
    grid_used = post.search_.prior_grid.tolist()  # widened beyond an edge if the minimum sat on one
    scores = post.search_.scores[0, [grid_used.index(d) for d in grid], 0]
    assert torch.allclose(scores, torch.tensor(nlls, dtype=torch.float64), rtol=1e-8)
    assert post.prior_precision_ == grid_used[int(post.search_.scores[0, :, 0].argmin())]


def test_refuses_large_networks_before_any_work(problem):
    model = problem[0]
    with pytest.raises(ValueError, match=r"P = 59 .*max_params.* = 50"):
        ExactLLA(model, max_params=50)
    with pytest.raises(ValueError, match="link"):
        ExactLLA(model, predictive=Predictive(link="sigmoid"))
    with pytest.raises(RuntimeError, match="not fitted"):
        ExactLLA(model).predict(problem[5])


def test_a_float32_network_gets_the_float64_posterior():
    """The curvature and the factor in float64 whatever the model's dtype: on a 1-D regression the variances on an
    out-of-distribution grid agree with the same network's in float64 (they were 44% off in float32 arithmetic)."""
    model, x, y = sine_regression(200, noise=0.1, steps=1000)
    grid = torch.linspace(-12, 12, 200)[:, None]
    variances = []
    for net in (model, copy.deepcopy(model).double()):
        post = ExactLLA(net, "regression", progress=False, tuning=Tuning(prior_precision=1e-4, sigma_noise=0.1))
        post.fit(
            DataLoader(
                TensorDataset(x.to(next(net.parameters()).dtype), y.to(next(net.parameters()).dtype)), batch_size=50
            )
        )
        variances.append(post.predict(grid.to(next(net.parameters()).dtype))[1].double())
    single, double = variances
    assert ((single - double).abs() / double).max() < 1e-3


@pytest.mark.parametrize("likelihood", ["classification", "regression"])
def test_save_and_load_give_the_same_predictions_and_configuration(problem, likelihood, tmp_path):
    model, x, y, xv, yv, xt = problem
    if likelihood == "regression":
        y, yv = torch.randn(30, 3, dtype=torch.float64), torch.randn(25, 3, dtype=torch.float64)
    post = ExactLLA(
        model,
        likelihood,
        seed=3,
        max_params=100,
        progress=False,
        tuning=Tuning(prior_grid=[0.1, 1.0, 10.0], noise_grid=[0.5, 1.0, 2.0], fold_in="tune"),
        predictive=Predictive(link="probit", n_samples=64, batch_size=4),
    )
    post.fit(loader(x, y), loader(xv, yv))
    post.save(tmp_path / "exact.pt")
    back = ExactLLA.load(tmp_path / "exact.pt", model)
    assert back._config() == post._config() and back.tuning.prior_grid == (0.1, 1.0, 10.0)
    assert back.predictive == post.predictive and back.seed == 3 and back.max_params == 100
    for name in ("prior_precision_", "noise_scale_", "num_folded_", "num_train_", "isotropic_", "fit_seconds_"):
        assert getattr(back, name) == getattr(post, name), name
    assert back.search_.index == post.search_.index and torch.equal(back.search_.scores, post.search_.scores)
    assert torch.equal(
        back.predict(xt) if likelihood == "classification" else back.predict(xt)[1],
        post.predict(xt) if likelihood == "classification" else post.predict(xt)[1],
    )
    from ella import ELLA

    with pytest.raises(ValueError, match="holds a posterior of 'ExactLLA', not of ELLA"):
        ELLA.load(tmp_path / "exact.pt", model)
