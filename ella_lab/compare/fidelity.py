"""How close an approximate posterior comes to a reference one (exact LLA) on the same test points.

For method ``m`` and reference ``*``, with test NLLs ``L_m``, ``L_*`` and latent predictive variances
``v_m(x) = diag Cov_m[f(x)]`` in ``R^C`` (observation noise excluded):

    nll_gap          = L_m - L_*
    nll_gap_rel      = |L_m - L_*| / L_*
    var_rel_err      = (1/n) sum_x ||v_m(x) - v_*(x)||_2 / ||v_*(x)||_2
    var_ratio        = (1/n) sum_x sum_c v_m(x)_c / sum_c v_*(x)_c     (< 1: the method is overconfident)

``var_rel_err`` is 1 for a method without latent variance (MAP), whatever the reference.
"""

from __future__ import annotations

import torch

__all__ = ["latent_variances", "variance_relative_error", "variance_ratio", "fidelity"]


@torch.no_grad()
def latent_variances(method, x: torch.Tensor) -> torch.Tensor:
    """``diag Cov[f(x)]`` of shape ``(n, C)`` (float64) from ``method.predictive_moments`` (MAP and temperature
    scaling report zeros; SWAG its sample covariance)."""
    return method.predictive_moments(x)[1].diagonal(dim1=-2, dim2=-1).double().cpu()


def variance_relative_error(var: torch.Tensor, reference: torch.Tensor, floor: float = 1e-30) -> float:
    """``(1/n) sum_x ||v(x) - v_*(x)|| / ||v_*(x)||`` over the rows of ``(n, C)`` variances."""
    if var.shape != reference.shape:
        raise ValueError(f"`var` {tuple(var.shape)} and `reference` {tuple(reference.shape)} must have one shape")
    err = (var.double() - reference.double()).norm(dim=-1)
    return (err / reference.double().norm(dim=-1).clamp_min(floor)).mean().item()


def variance_ratio(var: torch.Tensor, reference: torch.Tensor, floor: float = 1e-30) -> float:
    """``(1/n) sum_x sum_c v(x)_c / sum_c v_*(x)_c``."""
    return (var.double().sum(-1) / reference.double().sum(-1).clamp_min(floor)).mean().item()


def fidelity(rows: dict[str, dict], variances: dict[str, torch.Tensor | None], reference: str = "exact_lla") -> dict:
    """Per method: ``nll_gap``, ``nll_gap_rel``, and where variances exist ``var_rel_err`` and ``var_ratio``,
    all against ``reference``. Empty if the reference did not run."""
    if reference not in rows or variances.get(reference) is None:
        return {}
    ref_nll, ref_var = rows[reference]["nll"], variances[reference]
    out = {}
    for name, row in rows.items():
        if name == reference or "nll" not in row:
            continue
        entry = {"nll_gap": row["nll"] - ref_nll, "nll_gap_rel": abs(row["nll"] - ref_nll) / abs(ref_nll)}
        var = variances.get(name)
        if var is not None and var.shape == ref_var.shape:
            entry.update(var_rel_err=variance_relative_error(var, ref_var), var_ratio=variance_ratio(var, ref_var))
        out[name] = entry
    return out
