"""Tests for ella.metrics: hand-computed values, agreement with netcal, bad input."""

import math

import numpy as np
import pytest
import torch

from ella import metrics as M

netcal = pytest.importorskip("netcal.metrics")


def _rows(confs, C=3):
    """Rows whose top probability (class 0) is exactly ``c``; the rest is spread evenly."""
    return np.array([[c] + [(1 - c) / (C - 1)] * (C - 1) for c in confs], dtype=np.float64)


# 6 points, 3 bins [0, 1/3), [1/3, 2/3), [2/3, 1]; the prediction is always class 0.
CONF6 = [0.4, 0.5, 0.7, 0.8, 0.9, 1.0]
LAB6 = np.array([0, 1, 0, 0, 2, 0])  # correct, wrong, correct, correct, wrong, correct


def test_ece_mce_by_hand():
    p = _rows(CONF6)
    # bin 2: acc 1/2, conf 0.45; bin 3: acc 3/4, conf 0.85
    expected_ece = 2 / 6 * abs(0.5 - 0.45) + 4 / 6 * abs(0.75 - 0.85)
    assert M.ece(p, LAB6, bins=3) == pytest.approx(expected_ece, abs=1e-12)
    assert M.mce(p, LAB6, bins=3) == pytest.approx(0.1, abs=1e-12)


def test_ece_bins_closed_on_the_left():
    e = np.linspace(0, 1, 4)[2]  # exactly on the edge 2/3: belongs to the upper bin [2/3, 1]
    p = _rows([e, 0.9, 0.5])
    y = np.array([1, 0, 2])  # wrong, right, wrong
    upper = abs(0.5 - (e + 0.9) / 2)
    assert M.ece(p, y, bins=3) == pytest.approx(2 / 3 * upper + 1 / 3 * 0.5, abs=1e-12)
    assert M.mce(p, y, bins=3) == pytest.approx(0.5, abs=1e-12)
    # a right-closed convention (lo < c <= hi) would put e with 0.5: different value
    assert M.ece(p, y, bins=3) != pytest.approx(2 / 3 * abs(0 - (e + 0.5) / 2) + 1 / 3 * 0.1, abs=1e-6)


def _random_case(seed, n=400, C=5, dtype=np.float64):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(C, 0.3), size=n)
    edges = np.linspace(0, 1, 16)
    on_edge = edges[edges > 1 / C + 1e-9]  # top confidence exactly on a bin edge, incl. 1.0 (one-hot)
    k = len(on_edge)
    p[:k] = 0
    p[:k, 0] = on_edge
    p[:k, 1:] = ((1 - on_edge) / (C - 1))[:, None]
    p[k : k + 5] = np.eye(C)[rng.integers(0, C, 5)]  # more confidences exactly 1.0
    y = np.where(rng.random(n) < 0.7, p.argmax(1), rng.integers(0, C, n))
    assert len(np.unique(y)) > 2  # netcal switches to binary mode otherwise
    return p.astype(dtype), y


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ece_mce_agree_with_netcal(seed, dtype):
    p, y = _random_case(seed, dtype=dtype)
    assert M.ece(p, y) == pytest.approx(netcal.ECE(bins=15).measure(p, y), abs=1e-6)
    assert M.mce(p, y) == pytest.approx(netcal.MCE(bins=15).measure(p, y), abs=1e-6)
    assert M.ece(p, y, bins=10) == pytest.approx(netcal.ECE(bins=10).measure(p, y), abs=1e-6)


def test_torch_and_numpy_inputs_agree():
    p, y = _random_case(7)
    a = M.classification_metrics(p, y)
    b = M.classification_metrics(torch.from_numpy(p), torch.from_numpy(y))
    assert a == b
    assert all(type(v) is float for v in a.values())
    assert set(a) == {"acc", "nll", "ece", "mce", "brier"}


def test_accuracy_nll_brier_by_hand():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.25, 0.5, 0.25], [0.1, 0.1, 0.8]])
    y = np.array([0, 1, 1, 2])
    assert M.accuracy(p, y) == pytest.approx(3 / 4)
    assert M.nll(p, y) == pytest.approx(-(math.log(0.7) + math.log(0.3) + math.log(0.5) + math.log(0.8)) / 4)
    b = (
        (0.3**2 + 0.2**2 + 0.1**2)
        + (0.1**2 + 0.7**2 + 0.6**2)
        + (0.25**2 + 0.5**2 + 0.25**2)
        + (0.1**2 + 0.1**2 + 0.2**2)
    ) / 4
    assert M.brier(p, y) == pytest.approx(b)
    assert M.mean_max_prob(p) == pytest.approx((0.7 + 0.6 + 0.5 + 0.8) / 4)


def test_nll_of_zero_probability_is_large_and_finite():
    p = np.array([[1.0, 0.0], [0.5, 0.5]])
    v = M.nll(p, np.array([1, 0]))
    assert math.isfinite(v)
    assert v == pytest.approx((-math.log(1e-12) - math.log(0.5)) / 2)


def test_predictive_entropy():
    p = np.array([[0.25] * 4, [1.0, 0, 0, 0], [0.5, 0.5, 0, 0]])
    np.testing.assert_allclose(M.predictive_entropy(p), [math.log(4), 0.0, math.log(2)], atol=1e-12)


def test_ood_auroc():
    rng = np.random.default_rng(0)
    confident = _rows(rng.uniform(0.9, 1.0, 50), C=4)
    uncertain = _rows(rng.uniform(0.26, 0.5, 30), C=4)
    assert M.ood_auroc(confident, uncertain) == 1.0
    assert M.ood_auroc(uncertain, confident) == 0.0
    same = rng.dirichlet(np.ones(4), size=40)
    assert M.ood_auroc(same, same) == pytest.approx(0.5)


def test_ood_auroc_equals_sklearns_with_ties():
    roc_auc_score = pytest.importorskip("sklearn.metrics").roc_auc_score
    rng = np.random.default_rng(1)
    # overlapping entropies with many exact ties (rows drawn from a few distinct probability vectors)
    table = rng.dirichlet(np.ones(5), size=6)
    p_in, p_out = table[rng.integers(0, 6, 70)], table[rng.integers(2, 6, 45)]
    scores = np.concatenate([M.predictive_entropy(p_in), M.predictive_entropy(p_out)])
    expected = roc_auc_score(np.r_[np.zeros(70), np.ones(45)], scores)
    assert 0.05 < abs(expected - 0.5) < 0.45  # (neither separable nor chance: the ranks matter)
    assert M.ood_auroc(p_in, p_out) == pytest.approx(expected, abs=1e-12)


def test_regression_metrics():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(20, 3, generator=g, dtype=torch.float64)
    var = torch.rand(20, 3, generator=g, dtype=torch.float64) + 0.1
    y = torch.randn(20, 3, generator=g, dtype=torch.float64)
    ref = -torch.distributions.Normal(mean, var.sqrt()).log_prob(y).mean().item()
    assert M.gaussian_nll(mean, var, y) == pytest.approx(ref, rel=1e-12)
    assert M.gaussian_nll(mean, torch.diag_embed(var), y) == pytest.approx(ref, rel=1e-12)
    assert M.rmse(np.array([[1.0], [2.0]]), np.array([[1.0], [4.0]])) == pytest.approx(math.sqrt(2))
    assert M.rmse(np.array([1.0, 2.0]), np.array([1.0, 4.0])) == pytest.approx(math.sqrt(2))
    assert M.regression_metrics(mean, var, y) == {"nll": M.gaussian_nll(mean, var, y), "rmse": M.rmse(mean, y)}


@pytest.mark.parametrize(
    "probs, labels, match",
    [
        (np.array([0.5, 0.5]), np.array([0]), "probs"),
        (_rows([0.5, 0.6]), np.array([0]), "labels"),
        (np.array([[0.5, 0.6, 0.1]]), np.array([0]), "sum to 1"),
        (_rows([0.5]), np.array([3]), "labels"),
        (_rows([0.5]), np.array([-1]), "labels"),
        (_rows([0.5]), np.array([0.0]), "labels"),
        (np.array([[np.nan, 1.0]]), np.array([0]), "probs"),
    ],
)
@pytest.mark.parametrize("fn", [M.accuracy, M.nll, M.ece, M.mce, M.brier, M.classification_metrics])
def test_bad_classification_input(fn, probs, labels, match):
    with pytest.raises(ValueError, match=match):
        fn(probs, labels)


def test_bad_other_input(tmp_path):
    with pytest.raises(ValueError, match="probs_out"):
        M.ood_auroc(_rows([0.5]), np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="var"):
        M.gaussian_nll(np.zeros(3), np.array([1.0, 0.0, 1.0]), np.zeros(3))
    with pytest.raises(ValueError, match="var"):
        M.gaussian_nll(np.zeros((3, 2)), np.ones((3, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="targets"):
        M.rmse(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="bins"):
        M.ece(_rows([0.5]), np.array([0]), bins=0)
