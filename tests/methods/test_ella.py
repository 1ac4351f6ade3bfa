"""ELLA against exact references: full-rank ELLA is the exact linearised Laplace; NeuralEF approaches the exact
top-k posterior; the residual variance is the left-out trace; refits, files and bad input behave."""

import copy
import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ella import ELLA
from ella.eigen import NeuralEF, Nystrom, SpIN
from ella.functional import jacobians
from ella.kernels import RBF, EmpiricalNTK, SGDTrajectoryKernel
from ella.methods import ExactLLA, Predictive, Tuning, swa_model
from ella.posterior import fit_trace_model, trace_design
from ella.predictive import hessian_factor

from tests.conftest import sine_regression, tiny_mlp
from tests.kernels.test_sgd_trajectory import direct_covariance, record


def make_data(model, n, seed, regression=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, model[0].in_features, generator=g, dtype=torch.float64)
    with torch.no_grad():
        out = model(x)
    if regression:
        return x, out + 0.1 * torch.randn(out.shape, generator=g, dtype=torch.float64)
    return x, torch.multinomial(out.softmax(-1), 1, generator=g)[:, 0]


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
    post = ELLA(model, solver=Nystrom(31, 40), progress=False, tuning=Tuning(prior_precision=0.5)).fit(loader(x, y))
    mean, cov = post.predictive_moments(x_test)
    assert torch.allclose(cov, exact_lla_covariance(model, x, x_test, "classification", 0.5), rtol=1e-6, atol=1e-9)
    assert torch.allclose(mean, model(x_test).detach())


def test_full_rank_ella_is_the_exact_linearised_laplace_for_regression():
    model = tiny_mlp(in_features=2, hidden=5, out_features=1, seed=3)  # P = 21
    x, y = make_data(model, 30, seed=2, regression=True)
    post = ELLA(
        model, "regression", solver=Nystrom(21, 30), progress=False, tuning=Tuning(prior_precision=2.0, sigma_noise=0.3)
    ).fit(loader(x, y))
    x_test = torch.randn(5, 2, dtype=torch.float64)
    exact = exact_lla_covariance(model, x, x_test, "regression", 2.0, 0.3)
    mean, var = post.predict(x_test)
    assert torch.allclose(var, exact[:, :, 0] + 0.09, rtol=1e-6)


def test_neuralef_ella_approaches_the_exact_top_k_posterior(classifier):
    model, x, y = classifier
    k = 6
    solver = NeuralEF(k, steps=1500, batch_size=40, lr=3e-3, progress=False)
    post = ELLA(
        model, kernel=EmpiricalNTK(model, "exact"), solver=solver, progress=False, tuning=Tuning(prior_precision=1.0)
    ).fit(loader(x, y))
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

    def fit(residual):
        return ELLA(
            model,
            kernel=EmpiricalNTK(model, "exact"),
            solver=Nystrom(10, 40),
            progress=False,
            tuning=Tuning(prior_precision=0.5, residual=residual),
        ).fit(loader(x, y))

    plain, post = fit("none"), fit(1)
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
    # "learned": tr kappa(x, x) predicted from Psi(x) by the trace model fitted at the kernel points (all 40 here;
    # the exact estimator gives their traces exactly); "mean": its intercept alone, the mean trace
    J_train = jacobians(model, x)
    traces = (J_train @ J_train.transpose(1, 2)).diagonal(dim1=1, dim2=2).sum(-1)
    learned, mean = fit("learned"), fit("mean")
    w = fit_trace_model(learned.feature_map(x), traces)
    assert learned.residual_ == "learned" and torch.allclose(learned.trace_models_["learned"], w, rtol=1e-8, atol=1e-10)
    predicted = trace_design(psi) @ w
    expected = (predicted - psi.pow(2).sum((1, 2))).clamp_min(0) / 3 / 0.5
    assert torch.allclose(learned.residual_variance(x_test), expected, rtol=1e-8)
    assert mean.residual_ == "mean" and mean.trace_models_["mean"][:-1].abs().max() == 0
    assert mean.trace_models_["mean"][-1] == pytest.approx(float(traces.mean()), rel=1e-10)
    assert torch.allclose(
        mean.residual_variance(x_test), (traces.mean() - psi.pow(2).sum((1, 2))).clamp_min(0) / 3 / 0.5, rtol=1e-8
    )
    assert (
        ELLA(model, tuning=Tuning(residual="none")).residual == "none"
        and ELLA(model, tuning=Tuning(residual=4)).residual == 4
    )


def test_auto_residual_is_the_better_of_none_and_mean_on_validation(classifier):
    model, x, y = classifier
    x_val, y_val = make_data(model, 30, seed=5)

    def fit(residual):
        return ELLA(
            model,
            kernel=EmpiricalNTK(model, "exact"),
            solver=Nystrom(4, 40),
            progress=False,
            tuning=Tuning(residual=residual),
        ).fit(loader(x, y), val_loader=loader(x_val, y_val))

    auto, none, mean, learned = fit("auto"), fit("none"), fit("mean"), fit("learned")
    best = min((float(p.search_.scores.min()), i, p) for i, p in enumerate((none, mean, learned)))[2]
    assert auto.residual_ == best.residual_ and auto.prior_precision_ == best.prior_precision_
    assert float(auto.search_.scores.min()) == pytest.approx(float(best.search_.scores.min()), rel=1e-12)
    assert torch.allclose(auto.predict(x_val), best.predict(x_val), atol=1e-12)
    # the three candidates are rows of one table (row t * 3 + o: fold-in count t, option o), at the same grid
    assert auto.search_.scores.shape[0] == 3 * 10 and auto.isotropic_choices == ("none", "mean", "learned")
    for o, alone in enumerate((none, mean, learned)):
        assert torch.allclose(auto.search_.scores[o::3], alone.search_.scores)


def test_residual_estimate_is_unbiased(classifier):
    model, x, y = classifier
    x_test = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    def residual(estimator, samples):
        return (
            ELLA(
                model,
                kernel=EmpiricalNTK(model, estimator),
                solver=Nystrom(4, 40),
                progress=False,
                tuning=Tuning(prior_precision=1.0, residual=samples),
            )
            .fit(loader(x, y))
            .residual_variance(x_test)
        )

    # the same Nystrom Psi (Jacobian rows are exact for both estimators), so only the trace estimate differs
    assert torch.allclose(residual("jvp", 4096), residual("exact", 1), rtol=0.1)


def test_prior_and_fold_in_are_chosen_on_validation_nll_and_the_model_is_untouched(classifier):
    model, x, y = classifier
    before = {n: (p.detach().clone(), p._version) for n, p in model.named_parameters()}
    xv, yv = make_data(model, 30, seed=5)
    kernel = EmpiricalNTK(model, "fd", num_samples=64)  # the finite-difference path perturbs the weights
    post = ELLA(model, kernel=kernel, solver=Nystrom(5), progress=False, tuning=Tuning(fold_in="tune")).fit(
        loader(x, y), loader(xv, yv)
    )
    scores = post.search_.scores
    assert scores.shape[0] == 10 * 3 and scores.shape[2] == 1  # fold-in counts x (no residual, mean, learned)
    t = 3 * post._fold_in_counts(len(x), True).index(post.num_folded_) + post.isotropic_choices.index(post.residual_)
    j = post.search_.prior_grid.tolist().index(post.prior_precision_)
    assert scores[t, j, 0] == scores.min()
    probs = post.predict(x[:8])
    assert probs.shape == (8, 3) and torch.allclose(probs.sum(-1), torch.ones(8, dtype=probs.dtype))
    assert torch.equal(probs.argmax(-1), model(x[:8]).argmax(-1))  # the margin link keeps the MAP class
    G = post.posterior_precision
    assert torch.allclose(G, G.T) and torch.linalg.eigvalsh(G).min() > 0
    for name, p in model.named_parameters():  # bit for bit, and never written in place
        assert torch.equal(p, before[name][0]) and p._version == before[name][1]
    stages = post.stage_seconds_  # where the fit's time went: its stages, within the whole fit
    assert list(stages) == ["survey", "features", "curvature", "search"] and sum(stages.values()) <= post.fit_seconds_


def test_fit_twice_is_one_fit_and_configuration_is_never_overwritten(classifier):
    model, x, y = classifier
    xv, yv = make_data(model, 30, seed=5)
    post = ELLA(model, k=4, solver="nystrom", progress=False)
    wrong = model(xv).argmin(-1)  # the least likely class: tuning wants all the variance it can get
    bad = ELLA(model, k=4, solver="nystrom", progress=False).fit(loader(x, y), loader(xv, wrong))
    post.fit(loader(x, y), loader(xv, wrong))  # tuned on wrong labels first
    assert post.prior_precision is None and post.sigma_noise is None  # the constructor's values stay
    post.fit(loader(x, y), loader(xv, yv))
    fresh = ELLA(model, k=4, solver="nystrom", progress=False).fit(loader(x, y), loader(xv, yv))
    assert post.prior_precision_ == fresh.prior_precision_ != bad.prior_precision_
    assert torch.equal(post.predict(x), fresh.predict(x))


def test_auto_fits_nystrom_on_every_point_of_a_small_problem_and_neuralef_past_it(classifier, monkeypatch):
    model, x, y = classifier
    post = ELLA(model, k=4, progress=False).fit(loader(x, y))
    nystrom = ELLA(model, k=4, solver=Nystrom(4, len(x)), progress=False).fit(loader(x, y))
    assert post.solver == "auto" and post.name == "ella_nystrom" and post.solver_.num_points == len(x)
    assert torch.equal(post.predict(x), nystrom.predict(x))

    def choice(num_train, **options):  # what "auto" picks for a survey of num_train inputs
        post = ELLA(model, progress=False, **{"k": 4, **options})
        return post._auto_solver(SimpleNamespace(num_train=num_train, sample=x[: post.kernel_points])).kind

    assert choice(40) == "nystrom"
    assert choice(41, kernel_points=40) == "neuralef"  # the kernel points are a sample, not the training set
    assert choice(3, k=4, kernel_points=3) == "neuralef"  # k > M: Nystrom has too few rows
    assert choice(40, kernel=RBF()) == "neuralef"  # not the NTK: no Jacobian rows
    monkeypatch.setattr("ella.methods.ella.AUTO_JACOBIAN", 40 * 31 - 1)  # M P entries over the budget
    assert choice(40) == "neuralef"


def test_overfit_regression_tunes_the_noise_on_validation_data():
    """A network that interpolates its training set: the training RMSE is a million times too small a noise; the
    noise and the prior tuned on validation NLL bring ELLA within 10% of exact LLA's NLL with the same tuning."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, generator=g, dtype=torch.float64)

    def sample(n):
        x = torch.randn(n, 4, generator=g, dtype=torch.float64)
        return x, torch.sin(x @ w)[:, None] + 0.3 * torch.randn(n, 1, generator=g, dtype=torch.float64)

    (x, y), (xv, yv), (xt, yt) = sample(40), sample(100), sample(500)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1)).double()
    opt = torch.optim.LBFGS(
        model.parameters(), max_iter=2000, tolerance_grad=1e-12, tolerance_change=1e-14, line_search_fn="strong_wolfe"
    )

    def closure():  # interpolate the 40 noisy points
        opt.zero_grad()
        loss = (model(x) - y).pow(2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    model.eval()
    train_rmse = (model(x) - y).pow(2).mean().sqrt().item()
    assert train_rmse < 0.03  # the noise is 0.3

    def nll(method):
        mean, var = method.predict(xt)
        return -torch.distributions.Normal(mean, var.sqrt()).log_prob(yt).mean().item()

    exact = ExactLLA(model, "regression", progress=False).fit(loader(x, y), loader(xv, yv))
    # every training point folded in, as exact LLA does
    post = ELLA(model, "regression", k=20, solver="nystrom", progress=False, tuning=Tuning(fold_in="all"))
    post.fit(loader(x, y), loader(xv, yv))
    stale = ELLA(
        model,
        "regression",
        k=20,
        solver="nystrom",
        progress=False,
        tuning=Tuning(sigma_noise=train_rmse, fold_in="all"),
    )
    stale.fit(loader(x, y), loader(xv, yv))
    assert float(post.noise_[0]) > 10 * train_rmse
    assert abs(nll(post) - nll(exact)) < 0.1 * abs(nll(exact))
    assert nll(stale) > 100 * nll(post)  # the noise of the training residuals


def test_regression_without_validation_uses_the_evidence_and_says_so():
    model = tiny_mlp(in_features=2, hidden=5, out_features=2, seed=3)
    x, y = make_data(model, 40, seed=2, regression=True)
    with pytest.warns(UserWarning, match="marginal likelihood") as caught:
        kernel = EmpiricalNTK(model, estimator="exact", progress=False)  # (the trace exact too)
        post = ELLA(model, "regression", k=3, kernel=kernel, solver="nystrom", progress=False).fit(loader(x, y))
    assert post.search_.criterion == "negative log evidence"
    # the warning says what share of the curvature's trace the 3 features hold (of the 27 weights' directions):
    # sum_c ||J_c(x_i)||^2 / rho_c^2 over the training points, its total from the kernel's diagonal
    share = re.search(r"the 3 features hold (\d+)% of the training curvature's trace", str(caught[-1].message))
    rho = post.noise_ / post.noise_scale_
    total = (jacobians(model, x).pow(2).sum(-1) / rho.pow(2)).sum()
    exact = float(post.evals_.sum() / total)
    assert 0.3 < exact < 0.97 and int(share.group(1)) == round(100 * exact)
    # the network is the truth, so its residuals are the noise: the evidence keeps their scale (s = 1 of a grid
    # a quarter decade apart), one sigma per output
    rmse = (y - model(x)).pow(2).mean(0).sqrt().detach()
    assert post.noise_scale_ == 1.0 and torch.allclose(post.noise_, rmse)


def test_save_load_round_trip(classifier, tmp_path):
    model, x, y = classifier
    for solver, residual in (
        (NeuralEF(4, net="copy", steps=20, progress=False), "none"),
        (NeuralEF(4, net="head", steps=20, progress=False), "learned"),
        ("nystrom", 3),
    ):
        post = ELLA(
            model,
            k=4,
            kernel=EmpiricalNTK(model, num_samples=32),
            solver=solver,
            progress=False,
            tuning=Tuning(residual=residual),
        )
        post.fit(loader(x, y))
        post.save(tmp_path / "post.pt")
        loaded = ELLA.load(tmp_path / "post.pt", model)
        assert loaded.residual == residual and loaded.residual_ == post.residual_ == residual
        assert loaded.prior_precision_ == post.prior_precision_
        assert (
            loaded.trace_models_.keys()
            == post.trace_models_.keys()
            == ({"mean", "learned"} if residual == "learned" else set())
        )
        assert all(torch.equal(loaded.trace_models_[key], post.trace_models_[key]) for key in post.trace_models_)
        assert loaded.stage_seconds_ == post.stage_seconds_ and loaded.num_kernel_points_ == len(x)
        assert torch.allclose(loaded.predict(x), post.predict(x), atol=1e-12)
    given = ELLA.load(tmp_path / "post.pt", model, kernel=EmpiricalNTK(model, num_samples=32))  # the NTK, given
    assert torch.allclose(given.predict(x), post.predict(x), atol=1e-12)
    with pytest.raises(ValueError, match="fitted with the NTK: `kernel` must be an EmpiricalNTK"):
        ELLA.load(tmp_path / "post.pt", model, kernel=RBF())


def test_loading_checks_the_model_and_the_file(classifier, tmp_path):
    model, x, y = classifier
    post = ELLA(model, k=4, solver="nystrom", progress=False, tuning=Tuning(prior_precision=1.0)).fit(loader(x, y))
    path = tmp_path / "post.pt"
    post.save(path)
    with pytest.raises(ValueError, match="different weights or buffers"):
        ELLA.load(path, tiny_mlp(in_features=3, hidden=4, out_features=3, seed=9))
    with pytest.raises(ValueError, match="parameters"):
        ELLA.load(path, tiny_mlp(in_features=3, hidden=5, out_features=3))
    other = copy.deepcopy(model)
    other[1] = nn.ReLU()  # the same weights, another activation
    with pytest.raises(ValueError, match="other modules"):
        ELLA.load(path, other)
    data = path.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.pt is not a readable ella file"):
        ELLA.load(tmp_path / "truncated.pt", model)
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an ella-posterior file"):
        ELLA.load(tmp_path / "other.pt", model)


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
        ELLA(model, k=41, solver="nystrom", progress=False).fit(loader(x, y))
    with pytest.raises(RuntimeError, match="fit"):
        ELLA(model).predict(x)
    with pytest.raises(ValueError, match="link"):
        ELLA(model, predictive=Predictive(link="softmax"))
    with pytest.raises(ValueError, match="must equal the k = 3 of the `solver`"):
        ELLA(model, k=4, solver=Nystrom(3))
    for residual in (-1, 0, "trace", 2.5):
        with pytest.raises(ValueError, match=r"`residual` must be one of \('auto', 'learned', 'mean', 'none'\)"):
            Tuning(residual=residual)
    with pytest.raises(ValueError, match="`tuning.residual` = 4 needs the NTK kernel"):
        ELLA(model, kernel=SGDTrajectoryKernel(record()[0]), tuning=Tuning(residual=4))
    assert ELLA(model, kernel=SGDTrajectoryKernel(record()[0])).isotropic_choices == ("none",)  # "auto": none
    with pytest.raises(ValueError, match="`residual_variance` needs a residual"):
        ELLA(model, k=2, solver="nystrom", progress=False, tuning=Tuning(residual="none")).fit(
            loader(x, y)
        ).residual_variance(x)
    with pytest.raises(TypeError, match="unexpected keyword"):
        ELLA(model, kernel_kwargs={"estimator": "fd"})  # settings travel in the kernel and solver objects
    other = tiny_mlp(in_features=3, hidden=4, out_features=3, seed=5)  # the same architecture, other weights
    with pytest.raises(ValueError, match="`kernel` is built on another network than `model`"):
        ELLA(model, kernel=EmpiricalNTK(other))
    with pytest.raises(ValueError, match="`solver` is built on another network than `model`"):
        ELLA(model, solver=NeuralEF(4, model=other))


def test_ella_runs_with_a_spin_feature_map():
    model = tiny_mlp(in_features=3, hidden=6, out_features=3, seed=0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(48, 3, dtype=torch.float64, generator=g)
    y = torch.randint(0, 3, (48,), generator=g)
    solver = SpIN(4, steps=40, batch_size=16, seed=0, progress=False)
    post = ELLA(model, solver=solver, progress=False, tuning=Tuning(prior_precision=1.0))
    post.fit(DataLoader(TensorDataset(x, y), batch_size=16))
    probs = post.predict(x[:5])
    assert probs.shape == (5, 3) and torch.allclose(probs.sum(1), torch.ones(5, dtype=probs.dtype))
    assert post.solver is solver and post.solver_ is not solver and post.eigenvalues.shape == (4,)
    assert solver.eigenvalues_ is None  # the given solver is configuration: fitting left it alone


def test_ella_without_update_is_the_trajectory_gp_scaled_by_one_over_delta():
    traj, x, y = record(out_features=1)
    M = traj.num_snapshots
    model = swa_model(traj)
    kernel = SGDTrajectoryKernel(traj, progress=False)
    post = ELLA(
        model,
        "regression",
        kernel=kernel,
        solver=Nystrom(M - 1, len(x)),
        progress=False,
        tuning=Tuning(prior_precision=2.0, sigma_noise=0.1),
    ).fit(loader(x, y, 10))
    assert post.fold_in == 0 and post.name == "ella_sgd_trajectory_nystrom"
    mean, cov = post.predictive_moments(x)
    K = direct_covariance(traj, x, x)  # C = 1: Nystrom on all N rows is the exact eigendecomposition
    assert torch.allclose(cov[:, 0, 0], K.diagonal() / 2.0, rtol=1e-8, atol=1e-14)
    assert torch.allclose(mean, model(x).detach())
    # with the update: Psi (Psi^T Lambda Psi + delta I)^{-1} Psi^T, Lambda = I / sigma^2
    upd = ELLA(
        model,
        "regression",
        kernel=kernel,
        solver=Nystrom(M - 1, len(x)),
        progress=False,
        tuning=Tuning(prior_precision=2.0, sigma_noise=0.1, fold_in="tune"),
    ).fit(loader(x, y, 10))
    psi = upd.feature_map(x)[:, 0, :]
    G = psi.T @ psi / 0.01 + 2.0 * torch.eye(M - 1, dtype=torch.float64)
    exact = (psi @ torch.linalg.solve(G, psi.T)).diagonal()
    assert torch.allclose(upd.predictive_moments(x)[1][:, 0, 0], exact, rtol=1e-8)


def test_ella_sgd_trajectory_tunes_the_scale_and_round_trips(tmp_path):
    traj, x, y = record()
    model = swa_model(traj)
    kernel = SGDTrajectoryKernel(traj, progress=False)
    solver = NeuralEF(4, steps=300, batch_size=30, lr=3e-3, progress=False)
    post = ELLA(model, kernel=kernel, solver=solver, progress=False).fit(loader(x, y, 10), loader(x, y, 10))
    assert post.name == "ella_sgd_trajectory" and post.num_folded_ == 0
    assert torch.allclose(post.posterior_precision, post.prior_precision_ * torch.eye(4, dtype=torch.float64))
    scores, grid = post.search_.scores[0, :, 0], post.search_.prior_grid
    assert scores.min() == scores[grid.tolist().index(post.prior_precision_)]
    # NeuralEF finds the top eigenvalues of the trajectory kernel
    exact = torch.linalg.eigvalsh(kernel.gram(x)).flip(0)[:4] / (len(x) * 3)
    assert torch.allclose(post.eigenvalues[:2], exact[:2], rtol=0.1)
    post.save(tmp_path / "post.pt")
    with pytest.raises(ValueError, match="SGDTrajectoryKernel kernel: pass it as `kernel`"):
        ELLA.load(tmp_path / "post.pt", model)
    back = ELLA.load(tmp_path / "post.pt", model, kernel=kernel)
    assert back.kernel is kernel and back.fold_in == 0 and back.tuning == post.tuning
    assert torch.allclose(back.predict(x), post.predict(x), atol=1e-12)
    with pytest.raises(ValueError, match="kernel"):
        ELLA(model, kernel="sgd-trajectory")
    with pytest.raises(TypeError, match=r"'posterior_update': fold in no training point instead: .*fold_in=0"):
        ELLA(model, posterior_update=False)


class TokenModel(nn.Module):
    """Keyword inputs (token ids and a mask) and an output object with ``logits``, as a HuggingFace classifier."""

    def __init__(self):
        super().__init__()
        self.embed, self.hidden, self.head = nn.Embedding(12, 6), nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, input_ids, attention_mask):
        h = (self.embed(input_ids) * attention_mask[..., None]).sum(1) / attention_mask.sum(1, keepdim=True)
        return SimpleNamespace(logits=self.head(torch.tanh(self.hidden(h))))


class Tokens(torch.utils.data.Dataset):
    """Dict samples ``{"input_ids", "attention_mask", "labels"}``, as a tokenizer's dataset."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.ids, self.mask = torch.randint(0, 12, (n, 5), generator=g), torch.ones(n, 5, dtype=torch.float64)
        self.mask[:, 4] = (torch.rand(n, generator=g) > 0.5).double()
        self.labels = self.ids[:, 0] % 3

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": self.labels[i]}


def test_dict_batches_and_logits_outputs_give_the_exact_linearised_laplace():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TokenModel().double().eval()
    data = Tokens(40, 0)
    train = DataLoader(data, batch_size=16)
    x = {"input_ids": data.ids, "attention_mask": data.mask}
    J = jacobians(model, x).flatten(0, 1)
    rank = int(torch.linalg.matrix_rank(J))  # ELLA with every direction the data see is the exact LLA on them
    post = ELLA(
        model,
        k=rank,
        kernel=EmpiricalNTK(model, "exact"),
        solver="exact",
        progress=False,
        tuning=Tuning(prior_precision=0.5),
    ).fit(train)
    exact = ExactLLA(model, progress=False, tuning=Tuning(prior_precision=0.5)).fit(train)
    assert torch.allclose(post.predictive_moments(x)[1], exact.predictive_moments(x)[1], rtol=1e-6, atol=1e-9)
    for solver in ("neuralef", "nystrom"):  # the default solvers run on these inputs too
        probs = ELLA(model, k=4, solver=solver, progress=False).fit(train, DataLoader(Tokens(20, 1), batch_size=8))
        probs = probs.predict(x)
        assert probs.shape == (40, 3) and torch.allclose(probs.sum(-1), torch.ones(40, dtype=torch.float64))


def _edited(path, tmp_path, meta_change=None, tensor_change=None):
    """The file at ``path`` with its metadata or tensors edited and its checksum recomputed (what an attacker can
    do: the checksum catches accidents only)."""
    import json

    from ella import files

    state = torch.load(path, weights_only=True)
    meta, tensors = json.loads(state["meta"]), state["tensors"]
    if meta_change:
        meta_change(meta)
    if tensor_change:
        tensor_change(tensors)
    text = json.dumps(meta, sort_keys=True)
    out = tmp_path / "edited.pt"
    torch.save({**state, "meta": text, "tensors": tensors, "checksum": files.checksum(text, tensors)}, out)
    return out


@pytest.mark.parametrize(
    "meta_change, tensor_change, message",
    [
        (
            lambda m: m["fitted"].update(prior_precision=float("nan")),
            None,
            "'prior_precision' must be a finite positive",
        ),
        (lambda m: m["fitted"].update(prior_precision=-1.0), None, "'prior_precision' must be a finite positive"),
        (
            lambda m: m["fitted"].update(input_spec={"shape": [100000, 100000], "dtype": "float64"}),
            None,
            "rows of 10,000,000,000 entries",
        ),
        (lambda m: m["config"]["predictive"].update(link="logit"), None, "its settings: `link` must be one of"),
        (lambda m: m["features"]["kernel"]["config"].update(num_samples=-3), None, "its kernel settings"),
        (
            None,
            lambda t: t.update(evecs=torch.ones(3, 3, dtype=torch.float64)),
            "'evecs' has shape (3, 3), expected (4, 4)",
        ),
        (None, lambda t: t.update(evals=-torch.ones(4, dtype=torch.float64)), "'evals' must be finite and at least 0"),
        (
            None,
            lambda t: t["features"]["solver"].update(eigenvalues=torch.full((4,), float("nan"), dtype=torch.float64)),
            "'eigenvalues' must be finite",
        ),
    ],
)
def test_an_edited_file_with_a_recomputed_checksum_is_refused(
    classifier, tmp_path, meta_change, tensor_change, message
):
    model, x, y = classifier
    post = ELLA(model, k=4, solver="nystrom", progress=False, tuning=Tuning(prior_precision=1.0)).fit(loader(x, y))
    post.save(tmp_path / "post.pt")
    edited = _edited(tmp_path / "post.pt", tmp_path, meta_change, tensor_change)
    with pytest.raises(ValueError, match=re.escape(message)) as raised:
        ELLA.load(edited, model)
    assert "edited.pt" in str(raised.value)


def test_the_default_k_adapts_to_the_kernels_numerical_rank(tmp_path):
    """laplace-torch's README toy (a 1-50-1 tanh MLP, 151 weights, 150 points): its NTK Gram matrix has fewer than
    20 eigenpairs above round-off. The default k takes as many as there are, and says so; a k given is kept."""
    model, x, y = sine_regression()
    with pytest.warns(UserWarning, match=r"exceeds the numerical rank \((\d+)\).*ELLA uses k = \1"):
        post = ELLA(model, "regression", progress=False).fit(loader(x, y), loader(x[:50] + 0.01, y[:50]))
    assert post.k == 20 and 1 <= post.k_ < 20 and post.evals_.shape == (post.k_,)
    mean, var = post.predict(torch.linspace(-6, 6, 30)[:, None])
    assert torch.isfinite(var).all() and (var > 0).all()
    post.save(tmp_path / "post.pt")
    loaded = ELLA.load(tmp_path / "post.pt", model)
    assert loaded.k == 20 and loaded.k_ == post.k_
    assert torch.allclose(loaded.predict(x[:10])[1], post.predict(x[:10])[1], rtol=1e-6)
    with pytest.raises(ValueError, match="exceeds the numerical rank"):
        ELLA(model, "regression", k=20, progress=False).fit(loader(x, y), loader(x[:50] + 0.01, y[:50]))


def test_the_configuration_round_trips_and_version_5_and_6_files_are_still_read(tmp_path):
    """Every constructor argument comes back; a file in version 6's layout (every setting flat) and one in version
    5's (the kernel and solver beside the configuration, without the grids and the noise) load to the same
    predictions."""
    import json

    from ella import files

    model = tiny_mlp(in_features=2, hidden=5, out_features=2, seed=3)
    x, y = make_data(model, 40, seed=2, regression=True)
    tuning = Tuning(prior_grid=[5.0, 0.5], sigma_noise=[0.2, 0.3], fold_in=20, residual="none")
    predictive = Predictive(batch_size=7)
    post = ELLA(
        model,
        "regression",
        k=6,
        solver="nystrom",
        kernel=EmpiricalNTK(model, num_samples=16),
        kernel_points=30,
        tuning=tuning,
        predictive=predictive,
        progress=False,
    )
    post.fit(loader(x, y), loader(x[:20], y[:20]))
    post.save(tmp_path / "post.pt")
    back = ELLA.load(tmp_path / "post.pt", model)
    assert back._config() == post._config() and back.tuning == tuning and back.predictive == predictive
    assert back.tuning.prior_grid == (0.5, 5.0) and back.sigma_noise == (0.2, 0.3) and back.fold_in == 20
    assert back.kernel_points == 30 and back.batch_size == 7
    assert torch.equal(back.predict(x)[1], post.predict(x)[1])
    # the same posterior in version 6's layout: every setting flat
    state = torch.load(tmp_path / "post.pt", weights_only=True)
    meta, tensors = json.loads(state["meta"]), state["tensors"]
    nested = meta["config"]
    flat = {key: value for key, value in nested.items() if key not in ("tuning", "predictive")}
    flat.update(**nested["tuning"], **nested["predictive"], posterior_update=True)
    files.write(tmp_path / "v6.pt", "ella-posterior", 6, {**meta, "config": flat}, tensors)
    six = ELLA.load(tmp_path / "v6.pt", model)
    assert six.tuning == tuning and six.predictive == predictive
    assert torch.equal(six.predict(x)[1], post.predict(x)[1])
    # and in version 5's
    features, feature_tensors = meta.pop("features"), tensors.pop("features")
    keys = ("likelihood", "k", "link", "n_samples", "seed", "fold_in", "residual", "posterior_update", "kernel_points")
    meta = {
        "config": {key: flat[key] for key in (*keys, "batch_size")},
        "kernel": features["kernel"],
        "solver": features["solver"],
        "model": meta["model"],
        "fitted": {key: value for key, value in meta["fitted"].items() if key != "search"},
    }
    tensors = {**{k: v for k, v in tensors.items() if k != "search"}, **feature_tensors}
    files.write(tmp_path / "v5.pt", "ella-posterior", 5, meta, tensors)
    old = ELLA.load(tmp_path / "v5.pt", model, kernel=EmpiricalNTK(model, num_samples=16))
    assert old.prior_grid.tolist() != [0.5, 5.0]  # (version 5 did not keep it: the default)
    assert torch.equal(old.predict(x)[1], post.predict(x)[1])
