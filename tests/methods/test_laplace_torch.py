"""The laplace-torch baselines: ella's fast KFAC GLM predictive against laplace-torch's own, the one grid search,
the evidence, last-layer LLA, layers the curvature does not model, MAP, and input validation."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils import parameters_to_vector
from torch.utils.data import DataLoader, TensorDataset

from ella._utils import trainable_parameters, unflatten_like
from ella.methods import KFACLLA, MAP, LastLayerLLA

# --------------------------------------------------------------------------- reference models
class SmallCNN(nn.Module):
    """MNIST-1D-like CNN: (B, 40) -> (B, 1, 1, 40), three Conv2d with (1, 5) kernels (laplace-torch's KFAC
    rejects Conv1d), then a linear head. About 6.2k parameters with ``channels=20``."""

    def __init__(self, channels: int = 20, num_classes: int = 10, length: int = 40):
        super().__init__()
        c = channels
        self.length = length
        self.features = nn.Sequential(
            nn.Conv2d(1, c, (1, 5), padding=(0, 2)),
            nn.ReLU(),
            nn.Conv2d(c, c, (1, 5), stride=(1, 2), padding=(0, 2)),
            nn.ReLU(),
            nn.Conv2d(c, c, (1, 5), stride=(1, 2), padding=(0, 2)),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.head = nn.Linear(c * (length // 4), num_classes)

    def forward(self, x):
        return self.head(self.features(x.reshape(-1, 1, 1, self.length)))


def mlp(sizes=(40, 100, 100, 10)) -> nn.Sequential:
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def train(model, x, y, steps=30, lr=1e-2, loss="ce", seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    lossfn = nn.functional.cross_entropy if loss == "ce" else nn.functional.mse_loss
    for _ in range(steps):
        opt.zero_grad()
        lossfn(model(x), y).backward()
        opt.step()
    return model.eval()


def loader(x, y, batch_size=100):
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 40, generator=g)
    y = torch.randint(0, 10, (300,), generator=g)
    xv = torch.randn(100, 40, generator=g)
    yv = torch.randint(0, 10, (100,), generator=g)
    xt = torch.randn(200, 40, generator=g)
    return x, y, xv, yv, xt


@pytest.fixture(scope="module")
def cnn(data):
    x, y, *_ = data
    torch.manual_seed(0)
    return train(SmallCNN(), x, y, steps=30)


def dense_jacobian(model, x):
    """(B, C, P) by torch.autograd.functional.jacobian of the flat vector of trainable parameters."""
    params = trainable_parameters(model)
    flat = parameters_to_vector(params.values()).detach()
    return torch.autograd.functional.jacobian(lambda t: functional_call(model, unflatten_like(t, params), (x,)), flat)


def at_fitted(method):
    """laplace-torch's own object at the hyperparameters the method chose (ella never changes it)."""
    la = copy.copy(method.la_)
    la.prior_precision = torch.tensor(method.prior_precision_, dtype=la._dtype)
    if method.noise_ is not None:
        la.sigma_noise = torch.tensor(float(method.noise_[0]), dtype=la._dtype)
    return la


@pytest.fixture(scope="module")
def kfac(cnn, data):
    x, y, *_ = data
    return KFACLLA(cnn, "classification", prior="marglik", link="probit", progress=False).fit(loader(x, y))


# ------------------------------------------------------------------ ella's KFAC GLM predictive vs laplace-torch
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


@pytest.mark.parametrize("cls", [KFACLLA, LastLayerLLA])
def test_gridsearch_picks_best_validation_nll(cls, data):
    x, y, xv, yv, _ = data
    model = train(mlp((40, 20, 10)), x, y, steps=30).double()
    grid = [1e-2, 1.0, 1e2, 1e4]
    m = cls(model, prior="gridsearch", prior_grid=grid, progress=False, batch_size=32)
    m.fit(loader(x.double(), y), val_loader=loader(xv.double(), yv))
    searched = m.search_.prior_grid.tolist()  # widened at an edge if the minimum sat there
    nlls = []
    for prec in searched:  # the reference: the same method with each prior fixed
        p = cls(model, prior=prec, progress=False).fit(loader(x.double(), y)).predict(xv.double())
        nlls.append(-p[torch.arange(len(yv)), yv].log().mean().item())
    assert len(set(nlls)) == len(searched)  # the prior matters
    assert torch.allclose(m.search_.scores[0, :, 0], torch.tensor(nlls, dtype=torch.float64), rtol=1e-4)
    assert m.prior_precision_ == pytest.approx(searched[int(torch.tensor(nlls).argmin())])


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


# --------------------------------------------------------------------------- MAP and last-layer LLA
def test_map_is_softmax(cnn, data):
    xt = data[4]
    m = MAP(cnn, "classification")
    assert m.fit() is m and m.name == "map"
    probs = m.predict(xt.double())  # float64 input is cast to the model's dtype
    assert probs.dtype == torch.float32
    assert torch.allclose(probs, torch.softmax(cnn(xt), -1), atol=1e-7, rtol=0)
    mean, cov = m.predictive_moments(xt)
    assert cov.shape == (200, 10, 10) and (cov == 0).all()
    reg = MAP(mlp((40, 5, 2)).eval(), "regression", sigma_noise=0.3)
    with pytest.raises(RuntimeError, match="fit"):
        reg.predict(xt)
    mu, var = reg.fit().predict(xt)
    assert mu.shape == var.shape == (200, 2) and torch.allclose(var, torch.full_like(var, 0.09))


def test_last_layer_lla_predicts_valid_probabilities(cnn, data):
    x, y, _, _, xt = data
    m = LastLayerLLA(cnn, link="probit", progress=False).fit(loader(x, y))
    assert m.name == "last_layer_lla" and m.prior_precision_ > 0 and m.prior_precision_ != 1.0
    probs = m.predict(xt)
    assert probs.shape == (200, 10)
    assert (probs >= 0).all() and (probs <= 1).all()
    assert torch.allclose(probs.sum(1), torch.ones(200), atol=1e-5)
    # laplace-torch inverts its float32 posterior precision; ella works from its float64 eigendecomposition
    assert torch.allclose(probs, m.laplace_predict(xt, batch_size=200), atol=1e-5, rtol=0)
    mean, cov = m.predictive_moments(xt)
    with torch.no_grad():
        assert torch.allclose(mean, cnn(xt), atol=1e-5)
    assert cov.shape == (200, 10, 10) and (torch.linalg.eigvalsh(cov.double()) > -1e-5).all()
    assert (probs.max(1).values < torch.softmax(mean, 1).max(1).values + 1e-6).all()
    assert (probs - torch.softmax(mean, 1)).abs().max() > 1e-3


def test_last_layer_backend_gives_laplace_torch_default_hessian(data):
    """The dense last-layer GGN from closed-form Jacobians equals curvlinops' (slow) operator @ eye."""
    from laplace import Laplace

    x, y, *_ = data
    model = train(mlp((40, 12, 10)), x, y, steps=10).double()
    m = LastLayerLLA(model, prior=1.0, link="probit", progress=False).fit(loader(x.double(), y))
    ref = Laplace(model, "classification", subset_of_weights="last_layer", hessian_structure="full")
    ref.fit(loader(x.double(), y))
    assert m.la_.H.shape == (10 * 12 + 10, 10 * 12 + 10)
    assert torch.allclose(m.la_.H, ref.H, rtol=1e-6, atol=1e-6)  # curvlinops multiplies a float32 eye
    assert m.la_.loss == pytest.approx(float(ref.loss), rel=1e-12)
    # the closed-form evidence used for marglik tuning equals laplace-torch's log_marginal_likelihood
    for prec in (1e-2, 0.7, 30.0):
        p = torch.tensor([prec], dtype=torch.float64)
        assert float(m._log_marglik(p, None)) == pytest.approx(float(m.la_.log_marginal_likelihood(p)), rel=1e-12)
        assert float(m._log_marglik(p, None)) == pytest.approx(float(ref.log_marginal_likelihood(p)), rel=1e-7)
    # ... and the tuned prior precision equals laplace-torch's optimize_prior_precision(method="marglik")
    tuned = LastLayerLLA(model, progress=False).fit(loader(x.double(), y))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*link_approx.*")
        ref.optimize_prior_precision(method="marglik", pred_type="glm")
    assert tuned.prior_precision_ == pytest.approx(float(ref.prior_precision), rel=1e-5)
    assert abs(math.log(tuned.prior_precision_)) > 0.1  # it moved from its start


def test_last_layer_evidence_regression_closed_form():
    torch.manual_seed(7)
    x = torch.randn(60, 3, dtype=torch.float64)
    y = x[:, :1] ** 2 + 0.1 * torch.randn(60, 1, dtype=torch.float64)
    model = train(mlp((3, 8, 1)).double(), x, y, steps=100, loss="mse")
    m = LastLayerLLA(model, "regression", progress=False).fit(loader(x, y))
    assert float(m.noise_[0]) != 1.0
    for prec, sig in ((0.1, 0.3), (5.0, 1.7)):
        p, s_ = torch.tensor([prec], dtype=torch.float64), torch.tensor([sig], dtype=torch.float64)
        ours = m._log_marglik(p, s_.requires_grad_())
        ours.backward()
        ref = m.la_.log_marginal_likelihood(p, s_)
        assert ours.item() == pytest.approx(ref.item(), rel=1e-10)
        s2 = s_.detach().requires_grad_()
        m.la_.log_marginal_likelihood(p, s2).backward()  # laplace-torch's dense logdet: its gradient is right
        assert float(s_.grad) == pytest.approx(float(s2.grad), rel=1e-8)


# --------------------------------------------------------------------------- validation
class DropoutNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(40, 8), nn.Dropout(0.5), nn.Linear(8, 3))

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("cls", [MAP, KFACLLA, LastLayerLLA])
def test_bad_likelihood_and_training_mode_raise(cls):
    net = DropoutNet()
    with pytest.raises(ValueError, match="likelihood"):
        cls(net.eval(), likelihood="poisson")
    with pytest.raises(ValueError, match="eval"):
        cls(net.train(), likelihood="classification")
    with pytest.raises(TypeError, match="model"):
        cls("not a model", likelihood="classification")


def test_bad_arguments_raise(cnn, data):
    x, y, *_ = data
    with pytest.raises(ValueError, match="prior"):
        KFACLLA(cnn, prior="evidence")
    with pytest.raises(ValueError, match="prior"):
        KFACLLA(cnn, prior=-1.0)
    with pytest.raises(ValueError, match="link"):
        LastLayerLLA(cnn, link="bridge")
    with pytest.raises(ValueError, match="n_samples"):
        KFACLLA(cnn, link="mc", n_samples=0)
    with pytest.raises(ValueError, match="sigma_noise"):
        KFACLLA(cnn, sigma_noise=0.5)

    with pytest.raises(RuntimeError, match="fit"):
        KFACLLA(cnn, progress=False).predict(x[:3])
    with pytest.raises(ValueError, match="val_loader"):
        KFACLLA(cnn, prior="gridsearch", progress=False).fit(loader(x, y))
    with pytest.raises(ValueError, match=r"labels of `train_loader`"):
        KFACLLA(cnn, progress=False).fit(loader(x, y + 10))


def test_kfac_leaves_out_and_names_the_layers_its_curvature_does_not_model(data):
    """Batch norm and Conv1d: laplace-torch's KFAC has no factors for them. The method works on a copy with those
    parameters frozen, names them, and its predictive is the GLM one over the remaining weights."""
    x, y, xv, yv, xt = data
    torch.manual_seed(0)
    net = nn.Sequential(nn.Unflatten(1, (1, 40)), nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(152, 10))
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
