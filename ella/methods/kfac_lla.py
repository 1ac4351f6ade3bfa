"""All-weights linearised Laplace with a Kronecker-factored GGN posterior (laplace-torch
``subset_of_weights="all"``, ``hessian_structure="kron"``), with ella's GLM predictive (see
:mod:`ella.methods.laplace_torch`): ``J P^{-1} J^T`` with ``P = H / sigma^2 + delta I`` from laplace-torch's
Kronecker-decomposed GGN.

Every block of the GGN is ``Q1 diag(l1) Q1^T (x) Q2 diag(l2) Q2^T``, so the Jacobians are rotated into its
eigenbasis once, ``R = Q1^T J Q2`` per block (what ``KronDecomposed.inv_square_form`` does for each prior), and
the covariance at any ``(delta, sigma)`` is ``R diag(1 / (l1 l2^T / sigma^2 + delta)) R^T``: a grid search over
the prior costs one rotation, not one per grid value.

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

    def _project(self, Js: torch.Tensor) -> torch.Tensor:
        """``R`` ``(B, C, P)``: every block of the Jacobians in its Kronecker eigenbasis (``J Q`` for a dense block,
        ``Q1^T J Q2`` for a Kronecker pair), in laplace-torch's order of the parameters."""
        B, C, P = Js.shape
        rows, out, start = Js.reshape(B * C, P), [], 0
        for values, vectors in zip(self.la_.H.eigenvalues, self.la_.H.eigenvectors):
            if len(values) == 1:
                p = len(values[0])
                out.append(rows[:, start : start + p] @ vectors[0])
            else:
                (Q1, Q2), p = vectors, len(values[0]) * len(values[1])
                block = rows[:, start : start + p].reshape(B * C, len(values[0]), len(values[1]))
                out.append((Q1.T @ block @ Q2).reshape(B * C, p))
            start += p
        return torch.cat(out, dim=1).reshape(B, C, P)

    def _covariance(self, projected: torch.Tensor, prior_precision: float, sigma: float) -> torch.Tensor:
        # R diag(1 / (lambda / sigma^2 + delta)) R^T, lambda = l1 l2^T of every block, flattened
        lam = torch.cat([(v[0] if len(v) == 1 else torch.outer(v[0], v[1])).flatten() for v in self.la_.H.eigenvalues])
        weights = (lam * self._h_factor(sigma) + prior_precision).reciprocal().to(projected)
        return torch.einsum("bcp,p,bdp->bcd", projected, weights, projected)


class LastLayerKFAC(KFACLLA):
    """Last-layer linearised Laplace with a KFAC GGN: laplace-torch's default ``Laplace(model, likelihood)``
    (``subset_of_weights="last_layer"``, ``hessian_structure="kron"``), the one its README shows with the
    marginal-likelihood prior and the probit link, with ella's predictive (``prior="marglik", link="probit"``).

    Same arguments as :class:`~ella.methods.laplace_torch.LaplaceBaseline`; the last layer is the model's last
    ``nn.Linear`` (laplace-torch's feature extractor), its Jacobians laplace-torch's closed-form ones.
    """

    name = "last_layer_kfac"
    _subset_of_weights = "last_layer"
    _label = "last-layer KFAC-LLA"
