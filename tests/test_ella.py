import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ella import ELLA
from ella.eigen import Nystrom
from ella.functional import jacobians
from ella.predictive import hessian_factor

from .conftest import tiny_mlp


def make_data(model, n, seed, regression=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, model[0].in_features, generator=g, dtype=torch.float64)
    with torch.no_grad():
        out = model(x)
    if regression:
        return x, out + 0.1 * torch.randn(out.shape, generator=g, dtype=torch.float64)
    return x, torch.distributions.Categorical(logits=out).sample()


def loader(x, y, batch_size=16):
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def exact_lla_covariance(model, x_train, x_test, likelihood, delta, sigma=1.0):
    """Weight-space LLA: J(x) (sum_i J_i^T Lambda_i J_i + delta I)^{-1} J(x)^T with dense Jacobians."""
    J = jacobians(model, x_train)
    with torch.no_grad():
        lam = hessian_factor(model(x_train), likelihood, sigma)
    ggn = torch.einsum("ncp,ncd,ndq->pq", J, lam, J)
    sigma_w = torch.linalg.inv(ggn + delta * torch.eye(ggn.shape[0], dtype=ggn.dtype))
    Jt = jacobians(model, x_test)
    return Jt @ sigma_w @ Jt.transpose(1, 2)


@pytest.fixture(scope="module")
def classifier():
    model = tiny_mlp(in_features=3, hidden=4, out_features=3, seed=0)  # P = 31
    x, y = make_data(model, 40, seed=1)
    return model, x, y


def test_full_rank_ella_is_the_exact_linearised_laplace(classifier):
    model, x, y = classifier
    x_test = torch.randn(7, 3, dtype=torch.float64)
    post = ELLA(model, k=31, features="nystrom", prior_precision=0.5, progress=False,
                feature_kwargs={"num_points": 40}).fit(loader(x, y))
    mean, cov = post.predictive_moments(x_test)
    assert torch.allclose(cov, exact_lla_covariance(model, x, x_test, "classification", 0.5), rtol=1e-6, atol=1e-9)
    assert torch.allclose(mean, model(x_test).detach())


def test_full_rank_ella_is_the_exact_linearised_laplace_for_regression():
    model = tiny_mlp(in_features=2, hidden=5, out_features=1, seed=3)  # P = 21
    x, y = make_data(model, 30, seed=2, regression=True)
    post = ELLA(model, "regression", k=21, features="nystrom", prior_precision=2.0, sigma_noise=0.3,
                progress=False, feature_kwargs={"num_points": 30}).fit(loader(x, y))
    x_test = torch.randn(5, 2, dtype=torch.float64)
    exact = exact_lla_covariance(model, x, x_test, "regression", 2.0, 0.3)
    mean, var = post.predict(x_test)
    assert torch.allclose(var, exact[:, :, 0] + 0.09, rtol=1e-6)


def test_neuralef_ella_approaches_the_exact_top_k_posterior(classifier):
    model, x, y = classifier
    k = 6
    post = ELLA(model, k=k, prior_precision=1.0, progress=False,
                kernel_kwargs={"estimator": "exact"},
                feature_kwargs={"steps": 1500, "batch_size": 40, "lr": 3e-3}).fit(loader(x, y))
    # reference: Psi from the exact top-k eigendecomposition of the N*C x N*C NTK Gram matrix
    J = jacobians(model, x).flatten(0, 1)
    evals, evecs = torch.linalg.eigh(J @ J.T)
    V = J.T @ evecs.flip(1)[:, :k] / evals.flip(0)[:k].sqrt()  # directions with J V = top-k features
    x_test = torch.randn(200, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))  # error ~0.07
    psi_exact, psi_train = jacobians(model, x_test) @ V, (J @ V).reshape(len(x), 3, k)
    with torch.no_grad():
        lam = hessian_factor(model(x), "classification")
    G = torch.einsum("nck,ncd,ndl->kl", psi_train, lam, psi_train) + torch.eye(k, dtype=torch.float64)
    exact_var = (psi_exact @ torch.linalg.inv(G) @ psi_exact.transpose(1, 2)).diagonal(dim1=1, dim2=2)
    var = post.predictive_moments(x_test)[1].diagonal(dim1=1, dim2=2)
    assert ((var - exact_var).norm() / exact_var.norm()) < 0.1
    assert torch.allclose(post.eigenvalues, evals.flip(0)[:k] / J.shape[0], rtol=0.1)


def test_residual_adds_the_left_out_prior_variance(classifier):
    model, x, y = classifier
    x_test = torch.randn(9, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    opts = {"k": 10, "features": "nystrom", "prior_precision": 0.5, "progress": False,
            "kernel_kwargs": {"estimator": "exact"}, "feature_kwargs": {"num_points": 40}}
    plain = ELLA(model, **opts).fit(loader(x, y))
    post = ELLA(model, residual_samples=1, **opts).fit(loader(x, y))
    assert post.name == "ella_nystrom_residual"
    # r(x) = tr(J J^T - Psi Psi^T) / C from dense Jacobians, scaled by 1 / delta, on every output
    J, psi = jacobians(model, x_test), post.feature_map(x_test)
    r = ((J @ J.transpose(1, 2)).diagonal(dim1=1, dim2=2).sum(-1) - psi.pow(2).sum((1, 2))) / 3
    assert (r > 0).all()
    assert torch.allclose(post.residual_variance(x_test), r / 0.5, rtol=1e-8)
    added = post.predictive_moments(x_test)[1] - plain.predictive_moments(x_test)[1]
    assert torch.allclose(added, (r / 0.5)[:, None, None] * torch.eye(3, dtype=torch.float64), rtol=1e-8, atol=1e-10)
    # the total variance moves towards the exact LLA's (the residual over-counts the directions past the top k
    # that the data still constrain, so it is not exact: 0.35 vs 0.64 mean error here)
    exact = exact_lla_covariance(model, x, x_test, "classification", 0.5).diagonal(dim1=1, dim2=2).sum(-1)

    def error(p):
        return (p.predictive_moments(x_test)[1].diagonal(dim1=1, dim2=2).sum(-1) - exact).abs().mean()

    assert error(post) < 0.75 * error(plain)


def test_residual_estimate_is_unbiased(classifier):
    model, x, y = classifier
    opts = {"k": 4, "features": "nystrom", "prior_precision": 1.0, "progress": False,
            "feature_kwargs": {"num_points": 40}}
    exact = ELLA(model, residual_samples=1, kernel_kwargs={"estimator": "exact"}, **opts).fit(loader(x, y))
    jvp = ELLA(model, residual_samples=4096, kernel_kwargs={"estimator": "jvp"}, **opts).fit(loader(x, y))
    jvp.solver = exact.solver  # the same Psi, so only the trace estimate differs
    x_test = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(jvp.residual_variance(x_test), exact.residual_variance(x_test), rtol=0.1)


def test_predict_prior_tuning_and_model_untouched(classifier):
    model, x, y = classifier
    before = [p.detach().clone() for p in model.parameters()]
    xv, yv = make_data(model, 30, seed=5)
    post = ELLA(model, k=5, features="nystrom", fold_in="tune", progress=False,
                kernel_kwargs={"num_samples": 64}).fit(loader(x, y), loader(xv, yv))
    assert post.tuning_scores.shape == (10, len(post.prior_grid))
    t = post._fold_in_counts(len(x), True).index(post.num_folded)
    j = post.prior_grid.tolist().index(post.prior_precision)
    assert post.tuning_scores[t, j] == post.tuning_scores.min()
    probs = post.predict(x[:8])
    assert probs.shape == (8, 3) and torch.allclose(probs.sum(-1), torch.ones(8, dtype=probs.dtype))
    assert torch.equal(probs.argmax(-1), model(x[:8]).argmax(-1))  # the margin link keeps the MAP class
    G = post.posterior_precision
    assert torch.allclose(G, G.T) and torch.linalg.eigvalsh(G).min() > 0
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


@pytest.mark.parametrize("features, residual", [("neuralef", 0), ("nystrom", 3)])
def test_save_load_round_trip(classifier, tmp_path, features, residual):
    model, x, y = classifier
    post = ELLA(model, k=4, features=features, progress=False, kernel_kwargs={"num_samples": 32},
                feature_kwargs={"steps": 20} if features == "neuralef" else {},
                residual_samples=residual).fit(loader(x, y))
    post.save(tmp_path / "post.pt")
    loaded = ELLA.load(tmp_path / "post.pt", model)
    assert loaded.residual_samples == residual
    assert torch.allclose(loaded.predict(x), post.predict(x), atol=1e-12)
    assert loaded.prior_precision == post.prior_precision

    other = tiny_mlp(in_features=3, hidden=4, out_features=3, seed=9)
    with pytest.raises(ValueError, match="different weights"):
        ELLA.load(tmp_path / "post.pt", other)
    with pytest.raises(ValueError, match="parameters"):
        ELLA.load(tmp_path / "post.pt", tiny_mlp(in_features=3, hidden=5, out_features=3))
    torch.save({"format": "something else"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a saved ella posterior"):
        ELLA.load(tmp_path / "bad.pt", model)


def test_bad_input_is_rejected_before_work(classifier):
    model, x, y = classifier
    with pytest.raises(ValueError, match="likelihood"):
        ELLA(model, likelihood="poisson")
    dropout = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.2), nn.Linear(4, 3))
    with pytest.raises(ValueError, match="training mode"):
        ELLA(dropout)
    broken = tiny_mlp(in_features=3, hidden=4, out_features=3)
    with torch.no_grad():
        broken[2].bias[0] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        ELLA(broken)
    with pytest.raises(ValueError, match="empty"):
        ELLA(model, progress=False).fit(loader(x[:0], y[:0]))
    with pytest.raises(ValueError, match=r"labels of `train_loader` must lie in \[0, 3\)"):
        ELLA(model, progress=False).fit(loader(x, y + 3))
    with pytest.raises(ValueError, match="`k`"):
        ELLA(model, k=121, progress=False).fit(loader(x, y))
    with pytest.raises(ValueError, match="`k`"):
        ELLA(model, k=41, features="nystrom", progress=False).fit(loader(x, y))
    with pytest.raises(RuntimeError, match="fit"):
        ELLA(model).predict(x)
    with pytest.raises(ValueError, match="link"):
        ELLA(model, link="softmax")
    with pytest.raises(ValueError, match="must equal the k = 3 of the `features` solver"):
        ELLA(model, k=4, features=Nystrom(3))
    with pytest.raises(ValueError, match="`residual_samples` must be a non-negative integer"):
        ELLA(model, residual_samples=-1)
    with pytest.raises(ValueError, match="`residual_samples` > 0 needs the NTK kernel"):
        ELLA(model, kernel="sgd-trajectory", kernel_kwargs={"trajectory": None}, residual_samples=4)
    with pytest.raises(ValueError, match="`residual_variance` needs `residual_samples` > 0"):
        ELLA(model, k=2, features="nystrom", progress=False).fit(loader(x, y)).residual_variance(x)
