"""The linearised Laplace posterior in a feature space: pure functions.

With features ``phi(x)`` in ``R^{C x D}`` (ELLA: ``Psi(x)``, ``D = k``, with ``kappa ~= Psi Psi^T``; exact LLA:
the Jacobian ``J(x)``, ``D = P``) and the likelihood curvature ``Lambda(x)`` at the MAP outputs, the posterior over
the ``D`` linear weights has precision

    G = sum_i phi(x_i)^T Lambda(x_i) phi(x_i) + delta I_D,

and the latent predictive is ``f(x) ~ N(g(x, theta_MAP), phi(x) G^{-1} phi(x)^T)``.

For regression with observation noise ``sigma_c = s rho_c`` (a scale ``s`` times fixed per-output scales
``rho``) the curvature is ``A / s^2`` with ``A = sum_i phi_i^T diag(1 / rho^2) phi_i`` (classification: ``s = 1``).
``A`` is summed over batches in float64 and eigendecomposed once, ``A = U diag(lambda) U^T``; then for every
``(delta, s)``

    G^{-1} = W W^T,   W = U diag((lambda / s^2 + delta)^{-1/2}),

so a predictive factor is ``F(x) = phi(x) W`` (``F F^T = phi G^{-1} phi^T``) and a search over the prior and the
noise only rescales the columns of ``phi(x) U``; ``G`` is never inverted.

The ``k`` eigenfunctions carry only part of the kernel: ``kappa(x, x) - Psi(x) Psi(x)^T`` is prior variance that
the ``k x k`` posterior never sees, and it is largest away from the training data. Optionally its trace is kept
as prior variance, an isotropic term (the deterministic-training-conditional correction of sparse Gaussian
processes; it over-counts the directions past the top ``k`` that the data do constrain):

    r(x) = (tr kappa(x, x) - ||Psi(x)||_F^2) / C,    Sigma(x) = Psi G^{-1} Psi^T + (r(x) / delta) I_C,

with ``tr kappa(x, x)`` estimated at ``x`` (:func:`kernel_trace`) or predicted from ``Psi(x)`` by a trace model
fitted at the kernel points (:func:`fit_trace_model`), which costs nothing more at prediction.
"""

from __future__ import annotations

import math

import torch


def curvature(phi: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """``sum_i phi_i^T Lambda_i phi_i``, shape ``(D, D)``, returned in float64 for accumulation over batches;
    ``phi`` ``(N, C, D)``, ``lam`` ``(N, C, C)``. Two matrix products in ``phi``'s dtype (float32 at least, never
    half precision): ``Lambda phi`` per input, then ``(Lambda phi)^T phi`` over the ``N C`` rows."""
    phi = phi.to(torch.promote_types(phi.dtype, torch.float32))
    lam_phi = (lam.to(phi.dtype) @ phi).flatten(0, 1)  # rows of Lambda_i phi_i: (N C, D)
    return (lam_phi.T @ phi.flatten(0, 1)).double()


def eigen_curvature(curv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lambda, U)`` with ``curv = U diag(lambda) U^T`` (float64, ``lambda`` clamped at 0 against round-off)."""
    evals, evecs = torch.linalg.eigh(curv.double())
    return evals.clamp_min(0), evecs


def scales(evals: torch.Tensor, prior_precision: float, noise_scale: float = 1.0) -> torch.Tensor:
    """``(lambda / s^2 + delta)^{-1/2}`` ``(D,)``: the column scales of ``W``."""
    return (evals / noise_scale**2 + prior_precision).rsqrt()


def factor_basis(evals: torch.Tensor, evecs: torch.Tensor, prior_precision: float,
                 noise_scale: float = 1.0) -> torch.Tensor:
    """``W = U diag((lambda / s^2 + delta)^{-1/2})`` ``(D, D)`` in float64, so that ``W W^T = G^{-1}``."""
    return evecs * scales(evals, prior_precision, noise_scale)


def kernel_trace(phi: torch.Tensor) -> torch.Tensor:
    """``tr kappa(x, x) ~= ||Phi(x)||_F^2 / S`` per input, shape ``(B,)``, from kernel features ``(B, C, S)`` with
    ``kappa ~= Phi Phi^T / S`` (Hutchinson's estimator for random-direction features; float64)."""
    return phi.double().pow(2).sum((1, 2)) / phi.shape[-1]


def residual_variance(trace: torch.Tensor | float, psi: torch.Tensor) -> torch.Tensor:
    """``r(x) = max(0, tr kappa(x, x) - ||Psi(x)||_F^2) / C`` per input, shape ``(B,)`` (float64).

    Args:
        trace: ``tr kappa(x, x)``, ``(B,)`` (:func:`kernel_trace`), or one number for every input (the kernel's
            mean diagonal).
        psi: the feature map ``Psi(x)``, ``(B, C, k)``.
    """
    return ((trace - psi.double().pow(2).sum((1, 2))) / psi.shape[1]).clamp_min(0)


def trace_design(psi: torch.Tensor) -> torch.Tensor:
    """The regressors of the trace model: ``[Psi(x), Psi(x)^2, 1]``, shape ``(B, 2 C k + 1)`` (float64)."""
    flat = psi.double().flatten(1)
    return torch.cat([flat, flat.pow(2), torch.ones_like(flat[:, :1])], dim=1)


def modelled_residual(psi: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """:func:`residual_variance` with the trace of a trace model, ``trace_design(Psi(x)) w``, per input ``(B,)``.

    Computed in ``psi``'s dtype without forming the design: ``r(x) C = Psi w_lin + Psi^2 (w_sq - 1) + w_0``, the
    squares' weights less the one of ``||Psi(x)||_F^2`` (two matrix-vector products per piece of inputs).

    Args:
        psi: the feature map ``Psi(x)``, ``(B, C, k)``.
        weights: the trace model's ``w`` ``(2 C k + 1,)`` (:func:`fit_trace_model`).
    """
    flat, w = psi.flatten(1), weights.to(psi)
    D = flat.shape[1]
    return ((flat @ w[:D] + flat.square() @ (w[D : 2 * D] - 1) + w[-1]) / psi.shape[1]).clamp_min(0)


def fit_trace_model(psi: torch.Tensor, trace: torch.Tensor, ridge: float = 0.1) -> torch.Tensor:
    """Weights ``w`` ``(2 C k + 1,)`` of ``tr kappa(x, x) ~= trace_design(Psi(x)) w``, by ridge regression.

    The diagonal of the kernel varies with the input, and the top-``k`` feature map ``Psi(x)`` that predicts the
    rest of the kernel predicts it too: its squares carry ``sum_j mu_j psi_j(x)^2`` and the input's scale. Fitted on
    noisy estimates ``trace`` ``(M,)`` (Hutchinson's, at the kernel points), relative to their mean, with the
    penalty ``ridge * M ||w||^2`` on every weight (the intercept's too). The default 0.1 held on the held-out
    traces of both Fashion-MNIST networks (4-8% median error).
    """
    A = trace_design(psi)
    scale = trace.double().mean().clamp_min(1e-30)
    gram = A.T @ A + ridge * len(A) * torch.eye(A.shape[1], dtype=A.dtype, device=A.device)
    return torch.linalg.solve(gram, A.T @ (trace.double() / scale)) * scale


def linear_evidence(evals: torch.Tensor, projected: torch.Tensor, sum_squares: float, num_values: int,
                    prior_precision: float, noise_scale: float) -> float:
    """Log marginal likelihood of the training residuals under the linear model in feature space.

    The whitened residuals ``r_i = diag(1 / rho) (y_i - g(x_i))`` of ``n`` values in all are modelled as
    ``r ~ N(0, s^2 I_n + Phi Phi^T / delta)`` with ``Phi`` the stacked whitened features, whose ``D x D`` Gram
    matrix is ``A = U diag(lambda) U^T``. With ``b = U^T Phi^T r`` (``projected``) and ``c = ||r||^2``
    (``sum_squares``), by the matrix determinant lemma and Woodbury's identity

        log det(s^2 I + Phi Phi^T / delta) = n log s^2 + sum_j log(1 + lambda_j / (delta s^2)),
        r^T (s^2 I + Phi Phi^T / delta)^{-1} r = (c - sum_j b_j^2 / (delta s^2 + lambda_j)) / s^2,

    and the evidence is ``-(n log 2 pi + log det + quadratic) / 2``.
    """
    s2 = noise_scale**2
    log_det = num_values * math.log(s2) + torch.log1p(evals / (prior_precision * s2)).sum()
    quadratic = (sum_squares - (projected.pow(2) / (prior_precision * s2 + evals)).sum()) / s2
    return float(-0.5 * (num_values * math.log(2 * math.pi) + log_det + quadratic))
