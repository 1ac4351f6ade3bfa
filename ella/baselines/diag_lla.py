"""All-weights linearised Laplace with a diagonal GGN posterior (laplace-torch ``hessian_structure="diag"``).

The weight posterior is ``N(theta_MAP, Sigma)`` with the diagonal precision

    Sigma^{-1} = diag(GGN) + delta I_P,   diag(GGN)_p = sum_i [J(x_i)^T Lambda(x_i) J(x_i)]_pp,

fitted by laplace-torch. The latent predictive is the GLM one, ``f(x) ~ N(g(x), J(x) Sigma J(x)^T)``; as for
:class:`~ella.baselines.KFACLLA`, ella computes it with per-sample ``torch.func`` Jacobians in chunks
(:func:`~ella.baselines.glm_moments`) instead of laplace-torch's whole-batch ``jacrev``:

    J Sigma J^T = (J * sigma^2) J^T,   sigma^2 = 1 / (diag(GGN) + delta)   (elementwise over the P weights).

Hyperparameters as for every laplace-torch baseline here (``prior="marglik"``, ``"gridsearch"`` or a number).
"""

from __future__ import annotations

import torch

from .glm import glm_moments
from .kfac_lla import KFACLLA
from .laplace_torch import _LaplaceBaseline

__all__ = ["DiagLLA"]


class DiagLLA(KFACLLA):
    """Diagonal-GGN linearised Laplace over all weights, with ella's fast GLM predictive.

    Same arguments as :class:`~ella.baselines.KFACLLA` (``likelihood``, ``prior``, ``link``, ``n_samples``,
    ``sigma_noise``, ``progress``, ``seed``, ``chunk_size``, ``marglik_steps``, ``marglik_lr``, ``grid``);
    any layer type that laplace-torch's diagonal GGN backend supports is accepted.
    """

    name = "diag_lla"
    _subset_of_weights = "all"
    _hessian_structure = "diag"

    def _check_architecture(self) -> None:
        pass  # the diagonal GGN backend has no KFAC layer restriction

    def _log_marglik(self, prior_precision, sigma_noise):
        # laplace-torch's DiagLaplace evidence is differentiable in both hyperparameters as it is
        return _LaplaceBaseline._log_marglik(self, prior_precision, sigma_noise)

    def _covariance_fn(self):
        variance = self._la.posterior_variance  # sigma^2 = 1 / (diag(GGN) / sigma_noise^2 + delta): (P,)

        def apply(Js: torch.Tensor) -> torch.Tensor:
            return (Js * variance) @ Js.transpose(1, 2)  # J diag(sigma^2) J^T: (b, C, C)

        return apply

    def _moments(self, x):
        return glm_moments(self.model, x, self._covariance_fn(), chunk_size=self._chunk(x),
                           progress_bar=self.progress, desc="Diag-LLA GLM predictive")
