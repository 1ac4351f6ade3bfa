"""ella.methods.search: the one search of the prior precision and the noise scale."""

import math

import pytest
import torch

from ella.methods.search import search


def quadratic(best_prior, best_noise=None, candidates=1):
    """A score whose minimum over log10 values is at (best_prior, best_noise), lowest for the last candidate."""

    def score(priors, noises):
        p = torch.zeros(1) if priors is None else (priors.log10() - math.log10(best_prior)) ** 2
        n = torch.zeros(1) if noises is None else (noises.log10() - math.log10(best_noise)) ** 2
        table = p[:, None] + n[None, :]
        return torch.stack([table + (candidates - 1 - t) for t in range(candidates)])

    return score


def test_finds_the_interior_minimum_of_every_axis_and_candidate():
    grid = torch.logspace(-2, 2, 17, dtype=torch.float64)
    choice = search(quadratic(1.0, 0.1, candidates=3), grid, grid)
    assert choice.index == 2
    assert choice.prior_precision == pytest.approx(1.0) and choice.noise_scale == pytest.approx(0.1)
    assert choice.scores.shape == (3, 17, 17) and choice.criterion == "validation NLL"


def test_an_edge_minimum_widens_the_grid_then_warns():
    grid = torch.logspace(-1, 1, 9, dtype=torch.float64)
    choice = search(quadratic(1e3), grid)  # two decades beyond the upper edge
    assert choice.prior_precision == pytest.approx(1e3) and choice.prior_grid[-1] > 1e3
    # beyond the 4 decades the search widens by; the score falls from (4 - 9)^2 to (5 - 9)^2 over the last decade
    with pytest.warns(UserWarning, match=r"upper edge of the searched grid \[0.1, 1e\+05\].*improved by 9 over"):
        far = search(quadratic(1e9), grid)
    assert far.prior_precision == pytest.approx(1e5)


def test_nan_scores_lose_and_all_non_finite_is_an_error():
    grid = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)

    def score(priors, noises):
        out = priors.clone().reshape(1, -1, 1)
        out[0, 0, 0] = float("nan")
        return out

    assert search(score, grid).prior_precision == 1.0
    with pytest.raises(ValueError, match="not finite for any candidate"):
        search(lambda p, n: torch.full((1, len(p), 1), float("nan")), grid)


def test_fixed_axes_are_not_searched():
    choice = search(quadratic(1.0, candidates=4), None, None)
    assert choice.prior_precision is None and choice.noise_scale is None and choice.index == 3
