"""All-weights linearised Laplace with a diagonal GGN posterior (laplace-torch ``hessian_structure="diag"``).

The weight posterior is ``N(theta_MAP, Sigma)`` with the diagonal precision

    Sigma^{-1} = diag(GGN) / sigma^2 + delta I_P,   diag(GGN)_p = sum_i [J(x_i)^T Lambda(x_i) J(x_i)]_pp,

fitted by laplace-torch. The latent predictive is the GLM one, computed by ella (see
:mod:`ella.methods.laplace_torch`): ``J Sigma J^T = (J * v) J^T`` with ``v = 1 / (diag(GGN) / sigma^2 + delta)``.
"""

from __future__ import annotations

import torch

from .laplace_torch import LaplaceBaseline


class DiagLLA(LaplaceBaseline):
    """Diagonal-GGN linearised Laplace over all weights, with ella's fast GLM predictive.

    Same arguments as :class:`~ella.methods.laplace_torch.LaplaceBaseline`; any layer that laplace-torch's
    diagonal GGN backend supports is accepted.
    """

    name = "diag_lla"
    _hessian_structure = "diag"
    _label = "Diag-LLA"

    def _covariance(self, Js: torch.Tensor, prior_precision: float, sigma: float) -> torch.Tensor:
        variance = 1.0 / (self.la_.H * self._h_factor(sigma) + prior_precision)  # diag(Sigma): (P,)
        return torch.einsum("bcp,p,bdp->bcd", Js, variance.to(Js), Js)
