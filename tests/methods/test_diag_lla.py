"""DiagLLA: the diagonal GLM predictive from laplace-torch's diagonal GGN."""

import torch

from ella.functional import jacobians
from ella.methods.diag_lla import DiagLLA

from tests.conftest import needs_laplace
from tests.methods.test_laplace_ella import loader

pytestmark = needs_laplace


def test_diag_lla_predictive_is_the_diagonal_glm_formula(small_classifier):
    model, x, y, xv, yv, xt = small_classifier
    m = DiagLLA(model, prior="gridsearch", prior_grid=[0.1, 1.0, 10.0], progress=False).fit(
        loader(x, y), loader(xv, yv)
    )
    assert m.name == "diag_lla" and m.prior_precision_ in m.search_.prior_grid.tolist()
    mean, cov = m.predictive_moments(xt)
    J = jacobians(model, xt)
    # J diag(1 / (diag(GGN) + delta)) J^T, with laplace-torch's diagonal GGN
    var = 1 / (m.la_.H + m.prior_precision_)
    assert torch.allclose(cov, torch.einsum("bcp,p,bdp->bcd", J, var, J), rtol=1e-4, atol=1e-7)
    la = m.la_
    la.prior_precision = m.prior_precision_
    assert torch.allclose(cov, la.functional_variance(J), rtol=1e-4, atol=1e-7)
    assert torch.allclose(mean, model(xt), atol=1e-6)
    marglik = DiagLLA(model, prior="marglik", marglik_steps=20, progress=False).fit(loader(x, y))
    assert marglik.prior_precision_ > 0 and marglik.prior_precision_ != 1.0
