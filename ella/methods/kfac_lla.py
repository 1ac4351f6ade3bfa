"""All-weights linearised Laplace with a Kronecker-factored GGN posterior (laplace-torch
``subset_of_weights="all"``, ``hessian_structure="kron"``), with ella's GLM predictive (see
:mod:`ella.methods.laplace_torch`): ``J P^{-1} J^T`` with ``P = H / sigma^2 + delta I`` Kronecker-decomposed, from
laplace-torch's ``KronDecomposed.inv_square_form``.

Coming from laplace-torch::

    la = Laplace(model, "classification", subset_of_weights="all", hessian_structure="kron")
    la.fit(train_loader); la.optimize_prior_precision(method="gridsearch", val_loader=val_loader)
    probs = la(x, link_approx="probit")

is, in ella::

    la = ella.methods.KFACLLA(model, "classification", link="probit").fit(train_loader, val_loader)
    probs = la.predict(x)
"""

from __future__ import annotations

import torch
from torch import nn

from .laplace_torch import LaplaceBaseline, closed_form_evidence


class KFACLLA(LaplaceBaseline):
    """All-weights linearised Laplace with a KFAC GGN posterior (laplace-torch), with ella's fast GLM predictive.

    Same arguments as :class:`~ella.methods.laplace_torch.LaplaceBaseline`. laplace-torch's KFAC models
    ``nn.Linear`` and ``nn.Conv2d`` layers; parameters of any other layer (batch norm, layer norm, embeddings,
    ``nn.Conv1d``) are left out of the posterior and named in ``excluded_layers``.
    """

    name = "kfac_lla"
    _hessian_structure = "kron"
    _label = "KFAC-LLA"

    def _supported(self, module: nn.Module) -> bool:
        return isinstance(module, (nn.Linear, nn.Conv2d))

    def _log_marglik(self, prior_precision: torch.Tensor, sigma_noise: torch.Tensor | None) -> torch.Tensor:
        """laplace-torch's KronLaplace evidence in closed form from the Kronecker eigenvalues of the GGN. Same
        value as ``la.log_marginal_likelihood``, whose gradient in ``sigma_noise`` is wrong in laplace-torch
        0.3 (``KronDecomposed.__mul__`` turns the factor 1/sigma^2 into a Python float, so the log-determinant
        contributes no gradient)."""
        la = self.la_
        if la.damping:
            return la.log_marginal_likelihood(prior_precision=prior_precision, sigma_noise=sigma_noise)
        return closed_form_evidence(la, la.H.eigenvalues, prior_precision, sigma_noise, self.likelihood)

    def _covariance(self, Js: torch.Tensor, prior_precision: float, sigma: float) -> torch.Tensor:
        la = self.la_
        delta = torch.tensor(prior_precision, device=la._device, dtype=la._dtype)
        return (la.H * self._h_factor(sigma) + delta).inv_square_form(Js)  # J (H / sigma^2 + delta)^{-1} J^T
