"""SpIN (Pfau et al., 2019): Spectral Inference Networks, here for the top-k eigenfunctions of a kernel.

A network ``u(x) in R^{C x k}`` (no normalisation) gives, over the rows ``(x, c)`` of the measure,

    Sigma = E[u u^T]                     (k x k second moment),
    Pi    = E[u(x) kappa(x, x') u(x')^T] (k x k kernel-weighted second moment),
    L = chol(Sigma),   Lambda = L^-1 Pi L^-T,

and SpIN *maximises* ``Tr(Lambda)`` (the hydrogen example of the paper minimises the energy of a
Laplacian; a kernel operator's top eigenfunctions maximise). The eigenfunctions are the whitened outputs
``psi(x) = L^-1 u(x)`` and the eigenvalues ``diag(Lambda)``.

Ordering comes from the *masked* gradient: output ``j`` is trained on ``Lambda_jj`` alone with the outputs
before it held fixed, so ``psi_1`` is the top eigenfunction, ``psi_2`` the next, ... With ``D = diag(L^-1)``,

    d/dPi    = L^-T D,
    d/dSigma = -L^-T triu(Lambda D),

applied one-sidedly: the parameter gradient is ``2 <L^-T D, dPi_sg> - 2 <L^-T triu(Lambda D), dSigma_sg>``,
with ``Pi_sg = sg(u)^T K u`` and ``Sigma_sg = sg(u)^T u`` (the ``sg`` factor held fixed).

Bilevel correction: ``L`` is a nonlinear function of an expectation, so minibatch estimates bias it. SpIN
keeps moving averages of ``Sigma``, ``Pi`` and of the Jacobian ``dSigma_sg/dtheta`` (``k x k x P``: the
memory cost that limits SpIN to small networks; only its upper triangle is needed and stored) and uses
them in place of the batch values in the ``Sigma`` term.
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn
from torch.func import jacrev

from .. import batches
from ..checks import check_float
from ..kernels.base import FeatureKernel, Kernel
from ..utils import num_parameters, progress, seeded_generator, trainable_parameters, unflatten_like
from .nets import NetworkSolver
from .rayleigh import batch_moments, diagonal_blocks, gram_blocks, index_batches, operator_moments, rayleigh_quotients

_MAX_JACOBIAN = 2e8  # entries of the moving-average Jacobian (k (k+1) / 2 x P) before we refuse


def cholesky(sigma: torch.Tensor, jitters=(1e-7, 1e-6, 1e-5, 1e-4, 1e-3)) -> torch.Tensor:
    """``L = chol(Sigma)`` in float64; if ``Sigma`` is numerically singular (the moving average of a
    minibatch covariance can lose definiteness), the first ``jitter * mean(diag Sigma) I`` that makes it
    positive definite is added."""
    sigma64 = sigma.double()
    L, info = torch.linalg.cholesky_ex(sigma64)
    eye = torch.eye(len(sigma), dtype=torch.float64, device=sigma.device)
    for jitter in jitters:
        if not info:
            break
        L, info = torch.linalg.cholesky_ex(sigma64 + jitter * sigma64.diagonal().mean() * eye)
    if info:
        raise RuntimeError(
            "SpIN: the moving-average covariance Sigma is not positive definite even with "
            f"jitter {jitters[-1]:g} * mean(diag); try a smaller learning rate or a larger batch"
        )
    return L.to(sigma.dtype)


def masked_factors(sigma: torch.Tensor, pi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(Lambda, A_Pi, A_Sigma)``: ``Lambda = L^-1 Pi L^-T``, ``A_Pi = L^-T D``, ``A_Sigma = L^-T triu(Lambda D)``."""
    L = cholesky(sigma)
    eye = torch.eye(len(sigma), dtype=sigma.dtype, device=sigma.device)
    L_inv = torch.linalg.solve_triangular(L, eye, upper=False)  # L^-1
    lam = L_inv @ pi @ L_inv.T  # Lambda = L^-1 Pi L^-T
    D = torch.diag(L_inv.diagonal())  # D = diag(L^-1)
    return lam, L_inv.T @ D, L_inv.T @ torch.triu(lam @ D)


class SpIN(NetworkSolver):
    """Learn the top-``k`` eigenfunctions of a kernel with a Spectral Inference Network.

    Args:
        k: number of eigenfunctions.
        net: a network mapping ``x`` to ``(B, C * k)`` (or an :class:`~ella.eigen.nets.EigenfunctionNet`,
            whose unnormalised ``raw`` outputs are used); default: as :class:`~ella.eigen.NeuralEF`.
        model: the network whose architecture the default eigenfunction network copies.
        steps: optimisation steps (Adam, cosine learning-rate decay).
        batch_size: inputs per step.
        lr: Adam learning rate.
        momentum: EMA coefficient of the moving averages of ``Sigma``, ``Pi`` and ``dSigma/dtheta``.
        max_seconds: optional wall-clock budget; training stops when it is spent (the cosine schedule then
            runs on the elapsed fraction of the budget). ``steps_done`` records how far it got.
        seed: seed of the batches and of the default network's initialisation.
        progress: show a progress bar.
        population: unbiased quotients for the population operator (as :class:`~ella.eigen.NeuralEF`).

    Fitted attributes: ``net_`` (the trained network), ``whitening_`` (``L^-1``), ``eigenvalues_``,
    ``history_`` (``Tr Lambda`` per step), ``steps_done_``.
    """

    kind = "spin"

    def __init__(
        self,
        k: int,
        net: nn.Module | None = None,
        model: nn.Module | None = None,
        steps: int = 2000,
        batch_size: int = 256,
        lr: float = 1e-3,
        momentum: float = 0.9,
        max_seconds: float | None = None,
        seed: int = 0,
        progress: bool = True,
        population: bool = False,
    ):
        super().__init__(
            k,
            net=net,
            model=model,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            momentum=momentum,
            seed=seed,
            progress=progress,
            population=population,
        )
        self.max_seconds = None if max_seconds is None else check_float(max_seconds, "max_seconds")

    @staticmethod
    def _body(net: nn.Module) -> nn.Module:
        return net.body if hasattr(net, "raw") else net

    def _raw(self, x) -> torch.Tensor:
        """Unnormalised outputs ``u(x)`` of the fitted network, shape ``(B, C, k)``."""
        return batches.call(self._body(self.net_), x).reshape(-1, self.num_outputs_, self.k)

    def fit(self, kernel: Kernel, x) -> "SpIN":
        """Train on inputs ``x`` (the empirical measure over them, uniform over outputs)."""
        C = self._check_fit(kernel, x)
        N, k = batches.num_rows(x), self.k
        num_data = None if self.population else N
        self.net_, self.num_outputs_ = self._initial_net(x, C, kernel), C
        self.input_spec_ = batches.spec(x)
        body = self._body(self.net_)
        theta = trainable_parameters(body)  # detached views: the weights as jacrev's input
        params = [p for p in body.parameters() if p.requires_grad]
        P = num_parameters(body)
        if k * (k + 1) / 2 * P > _MAX_JACOBIAN:
            raise ValueError(
                f"SpIN's moving-average Jacobian needs k (k+1) / 2 x P = {k * (k + 1) // 2} x {P} "
                "entries: use a smaller `k` or a smaller `net`"
            )
        phi = kernel.features(x) if isinstance(kernel, FeatureKernel) else None
        blocks = diagonal_blocks(phi) if phi is not None else None
        B = min(self.batch_size, N)
        # full batches of a Gram-block kernel: the block is the same every step, so form it once
        full_gram = kernel.gram(x) if phi is None and B == N else None
        iu = torch.triu_indices(k, k, device=batches.device(x))

        def sigma_sg_upper(theta: dict, xb) -> torch.Tensor:
            # upper triangle of Sigma_sg = sg(u)^T u / rows, as a function of the weights only
            u = batches.functional(body, theta, xb).reshape(-1, k)
            return (u.detach().T @ u / len(u))[iu[0], iu[1]]

        opt = torch.optim.Adam(params, lr=self.lr)
        order = index_batches(N, B, seeded_generator(self.seed), batches.device(x), shuffle=full_gram is None)
        sigma_bar = pi_bar = jac_bar = None
        start = time.perf_counter()
        body.train()
        self.steps_done_, self.history_ = 0, []
        for step, idx in zip(progress(range(self.steps), self.progress, "SpIN"), order):
            elapsed = time.perf_counter() - start
            frac = max(step / self.steps, elapsed / self.max_seconds if self.max_seconds else 0.0)
            if frac >= 1:
                break
            for group in opt.param_groups:  # cosine decay over steps or over the time budget
                group["lr"] = self.lr * 0.5 * (1 + math.cos(math.pi * frac))
            xb = batches.take(x, idx)
            u = self._raw(xb)
            rows = u.shape[0] * C
            flat = u.reshape(rows, k)
            sigma = flat.T @ flat / rows  # Sigma_hat
            if phi is not None:
                full, full_sg, diag, diag_sg = batch_moments(u, phi[idx], None, blocks[idx])
            else:
                gram = (full_gram if full_gram is not None else kernel.gram(xb)).to(u.dtype)
                full, full_sg, diag, diag_sg = batch_moments(u, None, gram, gram_blocks(gram, C))
            pi = rayleigh_quotients(full, diag, B, C, num_data)  # Pi_hat (unbiased, as in NeuralEF)
            pi_sg = rayleigh_quotients(full_sg, diag_sg, B, C, num_data)  # sg(u)^T K u
            jac = jacrev(sigma_sg_upper)(theta, xb)  # d Sigma_sg[upper] / d theta
            jac = torch.cat([jac[n].reshape(len(iu[0]), -1) for n in theta], dim=1)
            m = self.momentum if sigma_bar is not None else 0.0
            sigma_bar = sigma.detach() if sigma_bar is None else m * sigma_bar + (1 - m) * sigma.detach()
            pi_bar = pi.detach() if pi_bar is None else m * pi_bar + (1 - m) * pi.detach()
            jac_bar = jac if jac_bar is None else m * jac_bar + (1 - m) * jac
            lam, a_pi, a_sigma = masked_factors(sigma_bar, pi_bar)
            # ascent direction: 2 <A_Pi, dPi_sg> (autograd) - 2 <A_Sigma, dSigma_sg> (moving-average Jacobian)
            opt.zero_grad(set_to_none=True)
            (-2 * (a_pi * pi_sg).sum()).backward()
            correction = unflatten_like(2 * a_sigma[iu[0], iu[1]] @ jac_bar, theta)  # (P,) -> per parameter
            for p, step_grad in zip(params, correction.values()):
                p.grad = step_grad.clone() if p.grad is None else p.grad.add_(step_grad)
            opt.step()
            self.steps_done_ += 1
            self.history_.append(lam.trace().item())
        body.eval()
        self._refine(kernel, x, phi, num_data)
        return self

    @torch.no_grad()
    def _refine(self, kernel: Kernel, x, phi: torch.Tensor | None, num_data: int | None, chunk: int = 1024) -> None:
        """Exact ``Sigma`` and ``Pi`` over all of ``x`` (float64): the whitening ``L^-1`` and ``diag(Lambda)``."""
        raw = torch.cat([self._raw(piece) for piece in batches.chunks(x, chunk)])
        u = raw.double()
        N, C, k = u.shape
        flat = u.reshape(N * C, k)
        sigma = flat.T @ flat / (N * C)
        full, diag = operator_moments(kernel, x, phi, u, chunk)
        lam, _, _ = masked_factors(sigma, rayleigh_quotients(full, diag, N, C, num_data))
        self.whitening_ = torch.linalg.inv(cholesky(sigma))  # L^-1
        self.eigenvalues_ = lam.diagonal().to(raw.dtype)

    def state_dict(self) -> dict:
        """The fitted solver: network weights, whitening ``L^-1`` and eigenvalues."""
        return {**self._net_state(), "whitening": self.whitening_}

    def load_state_dict(self, state: dict, kernel: Kernel | None = None) -> "SpIN":
        """Restore a fitted solver into a copy of ``net``, or the default network (as :class:`NeuralEF`)."""
        self._load_net(self._check_state(state), kernel)
        self.whitening_ = state["whitening"]
        return self

    def __call__(self, x) -> torch.Tensor:
        """Eigenfunctions ``psi(x) = L^-1 u(x)``, shape ``(B, C, k)``, orthonormal on the training rows."""
        self._check_fitted()
        with torch.no_grad():
            u = self._raw(x)
            return (u.double() @ self.whitening_.T).to(u.dtype)
