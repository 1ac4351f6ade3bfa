"""KFACLLA: ella's fast GLM predictive against laplace-torch's own, the evidence, the seeded MC link, and the
layers laplace-torch's KFAC does not model."""

import copy

import pytest
import torch
from torch import nn

from ella.methods import KFACLLA

from tests.conftest import needs_laplace
from tests.methods.conftest import at_fitted, dense_jacobian, loader, mlp, train

pytestmark = needs_laplace


@pytest.fixture(scope="module")
def kfac(cnn, data):
    x, y, *_ = data
    return KFACLLA(cnn, "classification", prior="marglik", link="probit", progress=False).fit(loader(x, y))


def test_kfac_glm_predictive_equals_laplace_torch(kfac, data):
    """The reference CNN in float32 (laplace-torch's Jacobians use a different batching, so agreement is to
    float32 round-off); the float64 dense checks are above and in the MLP test below."""
    xt = data[4]
    assert kfac.name == "kfac_lla" and kfac.link == "probit"
    prior = kfac.prior_precision_
    assert isinstance(prior, float) and prior > 0 and prior != 1.0  # marglik moved it from its start
    mean, cov = kfac.predictive_moments(xt)
    la = at_fitted(kfac)
    # laplace-torch's own GLM predictive moments (its batch jacrev costs batch^2: use small batches)
    f_mu, f_var = zip(*(la._glm_predictive_distribution(xt[i : i + 10]) for i in range(0, len(xt), 10)))
    f_mu, f_var = torch.cat(f_mu), torch.cat(f_var)
    assert cov.shape == (200, 10, 10)
    assert torch.allclose(mean, f_mu, rtol=0, atol=1e-6)
    assert torch.allclose(cov, f_var, rtol=1e-5, atol=1e-6 * f_var.abs().max().item())
    assert (cov.diagonal(dim1=1, dim2=2) > 0).all()
    # laplace-torch's own end-to-end probit predictive, la(x, pred_type="glm", link_approx="probit")
    probs = kfac.predict(xt)
    probs_la = kfac.laplace_predict(xt[:50], link_approx="probit", batch_size=10)
    assert torch.allclose(probs[:50], probs_la, rtol=0, atol=1e-6)
    assert torch.allclose(probs.sum(1), torch.ones(200), atol=1e-5)
    # the posterior really is in there: the predictive differs from the MAP softmax
    assert (probs - torch.softmax(mean, 1)).abs().max() > 1e-3


def test_kfac_forms_the_jacobians_of_a_few_inputs_at_a_time(kfac, data):
    """Memory bounded by the Jacobians of ``_jacobian_rows`` inputs (JACOBIAN_PIECE entries): in pieces of 3 the
    same predictive."""
    from ella.methods.laplace_torch import JACOBIAN_PIECE

    xt = data[4][:20]
    num_params = kfac.la_.n_params
    assert kfac._jacobian_rows == max(1, JACOBIAN_PIECE // (10 * num_params))
    mean, cov = kfac.predictive_moments(xt)
    small, seen = copy.copy(kfac), []
    small._jacobian_rows = 3
    small._jacobians = lambda x: (seen.append(len(x)), type(kfac)._jacobians(small, x))[1]
    mean3, cov3 = small.predictive_moments(xt)
    assert seen == [3] * 6 + [2]
    # (float32: the batched forward rounds differently in pieces of another size)
    assert torch.allclose(mean3, mean, rtol=1e-5, atol=1e-5) and torch.allclose(cov3, cov, rtol=1e-5, atol=1e-6)


def test_kfac_mc_link_is_seeded(cnn, kfac, data):
    x, y, _, _, xt = data
    xt = xt[:30]
    mc = KFACLLA(cnn, prior=kfac.prior_precision_, link="mc", n_samples=300, progress=False, seed=5)
    mc.fit(loader(x, y))
    p1, p2 = mc.predict(xt), mc.predict(xt)
    assert torch.equal(p1, p2)
    mc.seed = 6
    p3 = mc.predict(xt)
    assert not torch.equal(p1, p3)
    # a 300-sample MC estimate of E[softmax(f)] is close to a 5000-sample one with another seed: a probability
    # averaged over 300 draws has a standard error of at most 0.5 / sqrt(300) = 0.029
    mc.n_samples, mc.seed = 5000, 7
    error = (p1 - mc.predict(xt)).abs()
    assert error.mean() < 0.029 / 2 and error.max() < 4 * 0.029


def test_kfac_regression_matches_laplace_torch_and_estimates_noise():
    torch.manual_seed(4)
    x = torch.rand(200, 1, dtype=torch.float64) * 6 - 3
    y = torch.sin(x) + 0.2 * torch.randn_like(x)
    model = train(mlp((1, 30, 1)).double(), x, y, steps=600, lr=2e-2, loss="mse")
    m = KFACLLA(model, "regression", progress=False).fit(loader(x, y))  # no validation data: the evidence
    sigma = float(m.noise_[0])
    assert 0.12 < sigma < 0.35
    xt = torch.linspace(-5, 5, 40, dtype=torch.float64).unsqueeze(1)
    mean, var = m.predict(xt)
    f_mu, f_var = at_fitted(m)._glm_predictive_distribution(xt)
    assert torch.allclose(mean, f_mu, atol=1e-10, rtol=0)
    assert torch.allclose(var, f_var[:, :, 0] + sigma**2, atol=1e-10, rtol=1e-9)
    lmean, lvar = m.laplace_predict(xt)
    assert torch.allclose(var, lvar, atol=1e-10, rtol=1e-9)
    assert (var > sigma**2).all()
    # the evidence being optimised: laplace-torch's value, and a gradient in sigma_noise that matches finite
    # differences (laplace-torch 0.3's own KronLaplace evidence drops the log-det term from that gradient)
    p = torch.tensor([2.0], dtype=torch.float64)
    s = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    value = m._log_marglik(p, s)
    value.backward()
    ref = lambda sv: float(m.la_.log_marginal_likelihood(p, torch.tensor([sv], dtype=torch.float64)))  # noqa: E731
    assert value.item() == pytest.approx(ref(0.3), rel=1e-12)
    assert float(s.grad) == pytest.approx((ref(0.3 + 1e-6) - ref(0.3 - 1e-6)) / 2e-6, rel=1e-5)
    fixed = KFACLLA(model, "regression", sigma_noise=0.5, prior=2.0, progress=False).fit(loader(x, y))
    assert float(fixed.noise_[0]) == pytest.approx(0.5) and fixed.prior_precision_ == pytest.approx(2.0)
    # with validation data: prior and noise by the one search on validation NLL
    xv = torch.rand(100, 1, dtype=torch.float64) * 6 - 3
    yv = torch.sin(xv) + 0.2 * torch.randn_like(xv)
    tuned = KFACLLA(model, "regression", progress=False).fit(loader(x, y), loader(xv, yv))
    assert tuned.search_.criterion == "validation NLL" and 0.1 < float(tuned.noise_[0]) < 0.4


def test_kfac_on_reference_mlp_matches_laplace_torch(data):
    x, y, _, _, xt = data
    model = train(mlp(), x, y, steps=20).double()
    m = KFACLLA(model, prior=3.0, link="probit", progress=False).fit(loader(x.double(), y))
    _, cov = m.predictive_moments(xt[:40].double())
    _, f_var = at_fitted(m)._glm_predictive_distribution(xt[:40].double())
    assert torch.allclose(cov, f_var, rtol=1e-9, atol=1e-9 * f_var.abs().max().item())


def test_kfac_leaves_out_and_names_the_layers_its_curvature_does_not_model(data):
    """Batch norm and Conv1d: laplace-torch's KFAC has no factors for them. The method works on a copy with those
    parameters frozen, names them, and its predictive is the GLM one over the remaining weights."""
    x, y, xv, yv, xt = data
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Unflatten(1, (1, 40)), nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(), nn.Linear(152, 10)
    )
    net = train(net, x, y, steps=20).eval()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    with pytest.warns(UserWarning, match=r"1 \(Conv1d\), 2 \(BatchNorm1d\)"):
        m = KFACLLA(net, progress=False)
    assert m.excluded_layers == ["1 (Conv1d)", "2 (BatchNorm1d)"]
    m.fit(loader(x, y), loader(xv, yv))
    assert all(p.requires_grad and torch.equal(p, before[n]) for n, p in net.named_parameters())  # untouched
    mean, cov = m.predictive_moments(xt[:20])
    J = dense_jacobian(m.network, xt[:20])  # the head's weights only
    assert J.shape[-1] == 152 * 10 + 10
    _, f_var = at_fitted(m)._glm_predictive_distribution(xt[:20])
    assert torch.allclose(cov, f_var, rtol=1e-4, atol=1e-6 * f_var.abs().max().item())
    with pytest.raises(ValueError, match="models none"):
        KFACLLA(nn.Sequential(nn.Unflatten(1, (1, 40)), nn.Conv1d(1, 1, 40), nn.Flatten()).eval())


def test_last_layer_kfac_is_laplace_torchs_default_laplace(cnn, data):
    """``Laplace(model, "classification")`` (last layer, KFAC): ella's predictive moments equal laplace-torch's own,
    the marginal-likelihood prior its ``optimize_prior_precision(method="marglik")``'s evidence."""
    import warnings

    from laplace import Laplace

    from ella.methods import LastLayerKFAC

    x, y, _, _, xt = data
    m = LastLayerKFAC(cnn, prior="marglik", link="probit", progress=False).fit(loader(x, y))
    assert m.name == "last_layer_kfac" and m.la_.n_params == 10 * 200 + 10
    mean, cov = m.predictive_moments(xt[:50])
    la = at_fitted(m)
    f_mu, f_var = la._glm_predictive_distribution(xt[:50])
    assert torch.allclose(mean, f_mu, rtol=0, atol=1e-5)
    assert torch.allclose(cov, f_var, rtol=1e-4, atol=1e-6 * f_var.abs().max().item())
    ref = Laplace(cnn, "classification")  # laplace-torch's defaults: last layer, kron
    ref.fit(loader(x, y))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        ref.optimize_prior_precision(method="marglik", pred_type="glm", link_approx="probit")
    assert m.prior_precision_ == pytest.approx(float(ref.prior_precision), rel=1e-3)
    assert torch.allclose(m.predict(xt[:50]), ref(xt[:50], pred_type="glm", link_approx="probit"), atol=1e-4)
