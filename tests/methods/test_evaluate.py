"""ella.methods.evaluate: the metrics of a method's predictions over a loader equal the direct calls."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ella import metrics as M
from ella.methods import MAP, evaluate


def linear(outputs, seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.Linear(4, outputs).double().eval()


def test_evaluate_classification_matches_direct_calls():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(53, 4, dtype=torch.float64, generator=g), torch.randint(0, 3, (53,), generator=g)
    x_ood = 5 * torch.randn(31, 4, dtype=torch.float64, generator=g)
    method = MAP(linear(3))
    out = evaluate(
        method, DataLoader(TensorDataset(x, y), batch_size=8), ood_loader=DataLoader(TensorDataset(x_ood), batch_size=8)
    )
    p, p_ood = method.predict(x), method.predict(x_ood)
    for key, value in M.classification_metrics(p, y).items():
        assert out[key] == pytest.approx(value, abs=1e-12), key
    assert out["ece_bins"] == 15 and out["n"] == 53
    assert out["ood_auroc"] == pytest.approx(M.ood_auroc(p, p_ood), abs=1e-12)
    assert out["mean_max_prob"] == pytest.approx(M.mean_max_prob(p))
    assert out["ood_mean_max_prob"] == pytest.approx(M.mean_max_prob(p_ood))


def test_evaluate_regression_matches_direct_calls():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(29, 4, dtype=torch.float64, generator=g), torch.randn(29, 2, dtype=torch.float64, generator=g)
    loader = DataLoader(TensorDataset(x, y), batch_size=6)
    method = MAP(linear(2), "regression", sigma_noise=[0.5, 2.0]).fit(loader)
    out = evaluate(method, loader)
    mean, var = method.predict(x)
    assert torch.allclose(var, torch.tensor([0.25, 4.0], dtype=torch.float64).expand(29, 2))
    assert out["nll"] == pytest.approx(M.gaussian_nll(mean, var, y), abs=1e-12)
    assert out["rmse"] == pytest.approx(M.rmse(mean, y), abs=1e-12)


def test_evaluate_refuses_what_is_not_a_method():
    with pytest.raises(TypeError, match="method"):
        evaluate(object(), DataLoader(TensorDataset(torch.zeros(2, 1), torch.zeros(2))))
    with pytest.raises(ValueError, match="ood_loader"):
        method = MAP(linear(1), "regression", sigma_noise=1.0)
        evaluate(method, [], ood_loader=[])
