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


def curvature(phi: torch.Tensor, d: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_i phi_i^T Lambda_i phi_i`` with ``Lambda_i = diag(d_i) - u_i u_i^T``, shape ``(D, D)``, float64;
    ``phi`` ``(N, C, D)``, ``d`` and ``u`` ``(N, C)`` (:func:`ella.predictive.hessian_parts`; ``u`` ``None``: no
    low-rank part). Computed in float64 from ``phi`` without forming any ``C x C`` matrix:
    ``(d * phi)^T phi`` over the ``N C`` rows, minus ``v^T v`` with ``v_i = u_i^T phi_i`` ``(N, D)``."""
    phi = phi.double()
    rows = phi.flatten(0, 1)  # (N C, D)
    curv = (d.double().flatten()[:, None] * rows).T @ rows  # sum_i phi_i^T diag(d_i) phi_i
    if u is not None:
        v = torch.einsum("ncd,nc->nd", phi, u.double())  # u_i^T phi_i
        curv = curv - v.T @ v
    return curv


def eigen_curvature(curv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lambda, U)`` with ``curv = U diag(lambda) U^T`` (float64, ``lambda`` clamped at 0 against round-off)."""
    evals, evecs = torch.linalg.eigh(curv.double())
    return evals.clamp_min(0), evecs


def scales(evals: torch.Tensor, prior_precision: float, noise_scale: float = 1.0) -> torch.Tensor:
    """``(lambda / s^2 + delta)^{-1/2}`` ``(D,)``: the column scales of ``W``."""
    return (evals / noise_scale**2 + prior_precision).rsqrt()


def factor_basis(
    evals: torch.Tensor, evecs: torch.Tensor, prior_precision: float, noise_scale: float = 1.0
) -> torch.Tensor:
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

    With more regressors than points (``2 C k + 1 > M``: many classes) the same weights come from the dual,
    ``w = A^T (A A^T + ridge M I_M)^{-1} t``, whose ``M x M`` Gram is summed over blocks of columns without forming
    the design: memory linear in C.
    """
    M, scale = len(psi), trace.double().mean().clamp_min(1e-30)
    t = trace.double() / scale
    if 2 * psi[0].numel() + 1 <= M:  # the primal: a (2 C k + 1)-square system
        A = trace_design(psi)
        gram = A.T @ A + ridge * M * torch.eye(A.shape[1], dtype=A.dtype, device=A.device)
        return torch.linalg.solve(gram, A.T @ t) * scale
    flat = psi.double().flatten(1)  # (M, C k)
    blocks = flat.split(4096, dim=1)
    gram = flat @ flat.T + sum(b.square() @ b.square().T for b in blocks) + 1.0  # A A^T: linear, squares, intercept
    gram.diagonal().add_(ridge * M)
    alpha = torch.linalg.solve(gram, t)
    squares = torch.cat([b.square().T @ alpha for b in blocks])
    return torch.cat([flat.T @ alpha, squares, alpha.sum()[None]]) * scale


def laplace_evidence(
    evals: torch.Tensor,
    sum_squares: float,
    num_values: int,
    weight_norm: float,
    prior_precision: float,
    noise_scale: float,
    rest: tuple[float, int] | None = None,
) -> float:
    """The Laplace log marginal likelihood of the linearised model with its weight prior ``N(0, I / delta)``, as
    laplace-torch's ``log_marginal_likelihood`` (regression).

    The whitened training residuals ``r_i = diag(1 / rho) (y_i - g(x_i))``, ``n`` values in all with
    ``c = ||r||^2`` (``sum_squares``), under the noise ``s`` (``sigma_c = s rho_c``); the curvature
    ``A = U diag(lambda) U^T`` of the features at unit noise; the MAP weights' squared norm ``|theta|^2``
    (``weight_norm``), which the prior charges and without which the evidence of the residuals would rise for ever
    with ``delta``:

        log Z = -(n log 2 pi + n log s^2 + c / s^2 + delta |theta|^2 + sum_j log(1 + lambda_j / (delta s^2))) / 2,

    the log-determinant ``log det(A / s^2 + delta I) - D log delta`` of laplace-torch in the eigenvalues (the
    constant ``n log rho`` of the whitening left out).

    Where the features span only part of the curvature (ELLA's k of P directions), ``rest = (T, R)`` is the trace
    ``T`` and the number of directions ``R`` of the part left out; its log-determinant is counted as the largest
    one a spectrum of that trace can have, ``R log(1 + T / (R delta s^2))`` (Jensen), so an unseen spectrum never
    makes a small noise look cheap.
    """
    s2 = noise_scale**2
    log_det = torch.log1p(evals / (prior_precision * s2)).sum()
    if rest is not None and rest[1] > 0:
        log_det = log_det + rest[1] * math.log1p(rest[0] / (rest[1] * prior_precision * s2))
    fit = num_values * math.log(2 * math.pi * s2) + sum_squares / s2 + prior_precision * weight_norm
    return float(-0.5 * (fit + log_det))
