"""laplace-torch's own ELLA and VaLLA as ella methods: laplace-torch's fit, prior and predictive, unchanged."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ella.methods import NativeLaplaceELLA, NativeVaLLA, evaluate

from tests.conftest import needs_laplace

pytestmark = needs_laplace


def loader(x, y, batch_size=32):
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def test_native_ella_is_laplace_torchs_own_posterior_and_grid(small_classifier):
    import laplace

    model, x, y, xv, yv, xt = small_classifier
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    m = NativeLaplaceELLA(model, k=5, subsample_size=50, grid_size=7, progress=False).fit(loader(x, y), loader(xv, yv))
    # the same object built and tuned by hand, as laplace-torch's users do
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        la = laplace.ELLA(model, "classification", subsample_size=50, n_eigenvalues=5, seed=0)
        la.fit(loader(x, y))
        la.optimize_prior_precision(method="gridsearch", val_loader=loader(xv, yv), grid_size=7)
    assert m.prior_precision_ == pytest.approx(float(la.prior_precision))
    assert min(abs(math.log10(m.prior_precision_) - g) for g in torch.linspace(-4, 4, 7).tolist()) < 1e-5  # its grid
    probs = m.predict(xt)
    assert torch.allclose(probs, la(xt, pred_type="gp", link_approx="probit"), atol=1e-6)
    assert probs.shape == (25, 3) and torch.allclose(probs.sum(1), torch.ones(25), atol=1e-5)
    assert m.name == "laplace_torch_native_ella" and evaluate(m, loader(xv, yv))["n"] == len(xv)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n])


def test_native_valla_learns_its_prior_and_predicts_with_its_own_link(small_classifier):
    model, x, y, xv, yv, xt = small_classifier
    m = NativeVaLLA(model, num_inducing=10, iterations=30, progress=False).fit(loader(x, y), loader(xv, yv))
    assert m.prior_precision_ != 1.0  # learned from its initial value by the variational fit
    probs = m.predict(xt)
    assert torch.allclose(probs, m.la_(xt, pred_type="gp", link_approx="probit"), atol=1e-6)
    assert torch.allclose(probs.sum(1), torch.ones(25), atol=1e-5)
    again = NativeVaLLA(model, num_inducing=10, iterations=30, progress=False).fit(loader(x, y), loader(xv, yv))
    assert torch.allclose(again.predict(xt), probs)  # seeded


def test_native_methods_check_their_arguments(small_classifier):
    model = small_classifier[0]
    with pytest.raises(ValueError, match="classification only"):
        NativeLaplaceELLA(model, "regression")
    with pytest.raises(ValueError, match="`link_approx` must be one of"):
        NativeVaLLA(model, link_approx="margin")
    with pytest.raises(ValueError, match="`inducing` must be one of"):
        NativeVaLLA(model, inducing="grid")
    with pytest.raises(ValueError, match="`k` must be a positive integer"):
        NativeLaplaceELLA(model, k=0)
