"""All-weights linearised Laplace with a Kronecker-factored GGN posterior (laplace-torch
``subset_of_weights="all"``, ``hessian_structure="kron"``).

laplace-torch's own GLM predictive computes the Jacobians of a whole batch with one ``jacrev`` (cost quadratic
in the batch size), far too slow for a 10k-point test set; ``predict``/``predictive_moments`` here use
ella's GLM predictive instead: per-sample Jacobians by ``torch.func`` in chunks (:mod:`ella.baselines.glm`)
pushed through the fitted posterior's ``posterior_precision.inv_square_form`` (what
``la.functional_variance`` calls). The result is the same GLM predictive; :meth:`KFACLLA.laplace_predict`
calls laplace-torch's own for comparison and timing.
"""

from __future__ import annotations

import torch
from torch import nn

from .laplace_torch import _AllWeightsLLA, _closed_form_evidence

__all__ = ["KFACLLA"]


class KFACLLA(_AllWeightsLLA):
    """All-weights linearised Laplace with a KFAC GGN posterior (laplace-torch), with ella's fast GLM predictive.

    Parameters
    ----------
    model : trained ``nn.Module`` in eval mode; its parameterised layers must be ``nn.Linear`` or
        ``nn.Conv2d`` (laplace-torch's KFAC backend supports only these).
    likelihood : ``"classification"`` or ``"regression"``.
    prior : ``"marglik"`` (Laplace evidence, scalar prior precision), ``"gridsearch"`` (validation NLL over
        ``grid``, needs ``val_loader``) or a positive number.
    link : ``"margin"``, ``"probit"`` or ``"mc"`` (``n_samples`` samples, seeded by ``seed``); see
        :mod:`ella.predictive`.
    sigma_noise : regression only: ``"marglik"`` (default) or a positive number.
    progress : show progress bars.
    chunk_size : inputs per chunk of Jacobians (None: automatic, about 16 MiB of float32 per chunk).
    marglik_steps, marglik_lr : Adam steps and learning rate on the log hyperparameters.
    grid : prior precisions for ``prior="gridsearch"`` (default ``logspace(-4, 4, 33)``).
    """

    name = "kfac_lla"
    _hessian_structure = "kron"
    _label = "KFAC-LLA"

    def _check_architecture(self) -> None:
        bad = sorted(
            {
                f"{name or '<root>'} ({type(m).__name__})"
                for name, m in self.model.named_modules()
                if not isinstance(m, (nn.Linear, nn.Conv2d))
                and any(p.requires_grad for p in m.parameters(recurse=False))
            }
        )
        if bad:
            raise ValueError(
                "`model` has trainable parameters in layers that laplace-torch's KFAC cannot handle (only "
                f"nn.Linear and nn.Conv2d): {', '.join(bad)}; use nn.Conv2d with (1, w) kernels instead of "
                "Conv1d, or freeze those parameters"
            )

    def _log_marglik(self, prior_precision: torch.Tensor, sigma_noise: torch.Tensor | None) -> torch.Tensor:
        """laplace-torch's KronLaplace evidence in closed form from the Kronecker eigenvalues of the GGN. Same
        value as ``la.log_marginal_likelihood``, whose gradient in ``sigma_noise`` is wrong in laplace-torch
        0.3 (``KronDecomposed.__mul__`` turns the factor 1/sigma^2 into a Python float, so the log-determinant
        contributes no gradient)."""
        la = self._la
        if la.damping:
            return la.log_marginal_likelihood(prior_precision=prior_precision, sigma_noise=sigma_noise)
        return _closed_form_evidence(la, la.H.eigenvalues, prior_precision, sigma_noise, self.likelihood)

    def _covariance_fn(self):
        # la.functional_variance(Js) == la.posterior_precision.inv_square_form(Js); build the decomposed
        # posterior precision once, not once per chunk.
        return self._la.posterior_precision.inv_square_form
