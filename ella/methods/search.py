"""The one search for a method's prior precision ``delta`` and observation-noise scale ``s``.

Every method that tunes them (ELLA, exact LLA, the laplace-torch baselines' ``prior="gridsearch"``, MAP's and
SWA's regression noise) hands :func:`search` a ``score(priors, noises)`` to minimise over log grids: the
validation NLL of its own predictive, or the negative evidence. ``score`` returns a ``(T, n_prior, n_noise)``
table; ``T`` indexes further candidates, such as the number of training points folded into ELLA's curvature.

A grid that is not searched (a fixed value) is ``None``. When the best value sits on an edge of a searched grid,
the grid is widened a decade at a time in that direction, up to ``widen`` decades; if the best value is still
on the edge, a warning names it and the edge. Non-finite scores count as the worst; if every score is
non-finite the search fails with a clear error.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

#: prior precisions ``delta`` searched by default (``1/delta`` is the prior variance of the weights).
DEFAULT_PRIOR_GRID = torch.logspace(-4, 4, 33, dtype=torch.float64)
#: noise scales ``s`` searched by default: ``sigma_c = s rho_c`` with ``rho_c`` the MAP's RMSE of output ``c``.
DEFAULT_NOISE_GRID = torch.logspace(-3, 1, 17, dtype=torch.float64)

Score = Callable[[torch.Tensor | None, torch.Tensor | None], torch.Tensor]


@dataclass(frozen=True)
class Choice:
    """What :func:`search` chose, and the table it chose from."""

    index: int  # the best candidate t
    prior_precision: float | None  # the best delta (None: not searched)
    noise_scale: float | None  # the best s (None: not searched)
    scores: torch.Tensor  # (T, n_prior, n_noise), over the (possibly widened) grids
    prior_grid: torch.Tensor | None
    noise_grid: torch.Tensor | None
    criterion: str


def _argmin(table: torch.Tensor) -> tuple[int, int, int]:
    flat = int(torch.argmin(table))
    _, n, m = table.shape
    return flat // (n * m), (flat // m) % n, flat % m


def _extension(grid: torch.Tensor, low: bool) -> torch.Tensor:
    """One more decade beyond the low or high edge, at the grid's spacing at that edge (log scale)."""
    step = math.log10(float(grid[1] / grid[0])) if low else math.log10(float(grid[-1] / grid[-2]))
    count = max(1, round(1 / step))
    powers = torch.arange(1, count + 1, dtype=torch.float64) * step
    return (grid[0] * 10**-powers).flip(0) if low else grid[-1] * 10**powers


def search(
    score: Score,
    prior_grid: torch.Tensor | None,
    noise_grid: torch.Tensor | None = None,
    criterion: str = "validation NLL",
    widen: float = 4.0,
) -> Choice:
    """Minimise ``score`` over the grids (see the module docstring); returns the :class:`Choice`."""
    grids = [prior_grid, noise_grid]
    table = score(*grids).double()
    table = torch.where(torch.isnan(table), torch.inf, table)
    original = [None if g is None else (float(g[0]), float(g[-1])) for g in grids]
    while True:
        t, i, j = _argmin(table)
        grown = False
        for axis, (grid, best) in enumerate(zip(grids, (i, j))):
            if grid is None or len(grid) < 2 or 0 < best < len(grid) - 1:
                continue
            low = best == 0
            reach = (
                math.log10(original[axis][0] / float(grid[0]))
                if low
                else math.log10(float(grid[-1]) / original[axis][1])
            )
            if reach >= widen - 1e-9:
                continue
            new = _extension(grid, low)
            args = [new, grids[1]] if axis == 0 else [grids[0], new]
            part = score(*args).double()
            part = torch.where(torch.isnan(part), torch.inf, part)
            grids[axis] = torch.cat([new, grid] if low else [grid, new])
            table = torch.cat([part, table] if low else [table, part], dim=axis + 1)
            grown = True
            break
        if not grown:
            break
    if not torch.isfinite(table).any():
        raise ValueError(
            f"the {criterion} is not finite for any candidate value: check the data and the model's "
            "outputs (nan or inf), or pass the hyperparameters as fixed values"
        )
    t, i, j = _argmin(table)
    names = ("prior precision", "noise scale")
    for axis, (name, grid, best) in enumerate(zip(names, grids, (i, j))):
        if grid is not None and len(grid) > 1 and best in (0, len(grid) - 1):
            edge = "lower" if best == 0 else "upper"
            # the score one decade inside the edge tells a slope from a plateau
            inside = int(torch.argmin((grid.log10() - grid[best].log10()).abs().sub(1.0).abs()))
            change = float((table[t, inside, j] if axis == 0 else table[t, i, inside]) - table[t, i, j])
            warnings.warn(
                f"the {criterion} search put the {name} at {float(grid[best]):.3g}, the {edge} edge of the "
                f"searched grid [{float(grid[0]):.3g}, {float(grid[-1]):.3g}] (widened by up to {widen:g} "
                f"decades): the optimum may lie beyond it (the {criterion} improved by {change:.2g} over "
                "the last decade)",
                UserWarning,
                stacklevel=3,
            )
    return Choice(
        index=t,
        prior_precision=None if grids[0] is None else float(grids[0][i]),
        noise_scale=None if grids[1] is None else float(grids[1][j]),
        scores=table,
        prior_grid=grids[0],
        noise_grid=grids[1],
        criterion=criterion,
    )
