"""ella_lab.plots: the figures are PNG files; bad input is refused."""

import numpy as np
import pytest
import torch

from ella_lab.plots import reliability_diagrams

from tests.conftest import is_png


def rows(confs, C=3):
    return np.array([[c] + [(1 - c) / (C - 1)] * (C - 1) for c in confs], dtype=np.float64)


def test_reliability_diagrams_write_png(tmp_path):
    g = np.random.default_rng(3)
    p = g.dirichlet(np.ones(4), size=200)
    y = g.integers(0, 4, size=200)
    one = reliability_diagrams({"MAP": (p, y)}, tmp_path / "one.png")
    many = reliability_diagrams(
        {"MAP": (p, y), "ELLA": (torch.from_numpy(rows([0.6] * 10, 4)), np.zeros(10, int))},
        tmp_path / "sub" / "many.png",
        title="compare",
    )
    assert is_png(one) and is_png(many)


def test_reliability_diagrams_refuse_bad_input(tmp_path):
    with pytest.raises(ValueError, match="results"):
        reliability_diagrams({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="sum to 1"):
        reliability_diagrams({"bad": (np.array([[0.5, 0.7]]), np.array([0]))}, tmp_path / "y.png")
