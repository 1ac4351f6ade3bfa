"""LastLayerLLA: laplace-torch's last-layer GGN from closed-form Jacobians, its evidence in closed form, and the
predictive."""

import math
import warnings

import pytest
import torch
from torch import nn

from ella.methods import LastLayerLLA

from tests.conftest import needs_laplace
from tests.methods.conftest import loader, mlp, train

pytestmark = needs_laplace


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


@pytest.mark.parametrize("bias", [True, False])
def test_last_layer_projection_is_the_dense_product(data, bias):
    """``J U`` from the last layer's features alone equals the dense product of laplace-torch's Jacobians."""
    x, y, _, _, xt = data
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(40, 12), nn.Tanh(), nn.Linear(12, 10, bias=bias)).double().eval()
    m = LastLayerLLA(model, prior=1.0, progress=False).fit(loader(x.double(), y))
    Js, _ = m._jacobians(xt[:30].double())
    assert Js.shape == (30, 10, 120 + 10 * bias)
    assert torch.allclose(m._project(Js), Js @ m._ggn_eigen()[1], rtol=0, atol=1e-12)


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
