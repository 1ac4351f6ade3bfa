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

from .laplace_torch import _AllWeightsLLA

__all__ = ["DiagLLA"]


class DiagLLA(_AllWeightsLLA):
    """Diagonal-GGN linearised Laplace over all weights, with ella's fast GLM predictive.

    Same arguments as :class:`~ella.baselines.KFACLLA` (``likelihood``, ``prior``, ``link``, ``n_samples``,
    ``sigma_noise``, ``progress``, ``seed``, ``chunk_size``, ``marglik_steps``, ``marglik_lr``, ``grid``);
    any layer type that laplace-torch's diagonal GGN backend supports is accepted. The covariance
    ``J diag(sigma^2) J^T`` and the evidence (differentiable in both hyperparameters) are laplace-torch's own.
    """

    name = "diag_lla"
    _hessian_structure = "diag"
    _label = "Diag-LLA"
